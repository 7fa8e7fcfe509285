// The values of the protocol (docs/protocol.md, sections 5.5, 6 and 9) as JavaScript has
// them: what may be sent, the JSON codec, and the callback reference `{"$cb": id}`.
//
// JSON.stringify would turn NaN into null and drop what it cannot write; herder refuses
// instead (as its Python encoder does), so these walks check every value on the way.

export const CALLBACK_KEY = "$cb";
/** Ids (calls and callbacks) stay below this: exact in every JSON implementation. */
export const MAX_ID = 2 ** 53;

/** Marks a function that calls back the other side (it cannot be passed back to it). */
export const REMOTE = Symbol("herder.remoteCallback");

/**
 * True for a map of the reserved callback shape: one key, "$cb", holding an integer.
 * @param {unknown} value
 * @returns {value is {$cb: number}}
 */
export function isCallbackRef(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  const id = /** @type {Record<string, unknown>} */ (value)[CALLBACK_KEY];
  return keys.length === 1 && keys[0] === CALLBACK_KEY && Number.isInteger(id);
}

/**
 * A value as the connection's codec carries it, each function replaced by
 * `onFunction(fn)`. With `binary` (MessagePack) byte arrays travel as bin, and NaN and
 * the infinities as floats; over JSON both are refused.
 *
 * @param {unknown} value
 * @param {(fn: Function) => unknown} onFunction
 * @param {boolean} [binary]
 * @returns {unknown}
 * @throws {TypeError} a value the protocol cannot carry (NaN or bytes over JSON, a Map,
 *   a map of the reserved `{"$cb": ...}` shape, a callback received from the other side)
 */
export function encodeValue(value, onFunction, binary = false) {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!binary && !Number.isFinite(value)) throw new TypeError(`${value} is not a JSON value (no NaN or Infinity)`);
      return value;
    case "bigint":
      if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < -BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new TypeError(`${value} does not fit a JSON number exactly`);
      }
      return Number(value);
    case "function":
      if (REMOTE in value) throw new TypeError("a callback received from the other side cannot be passed back");
      return onFunction(value);
    case "symbol":
      throw new TypeError("a symbol cannot be sent");
  }
  if (Array.isArray(value)) return value.map((v) => encodeValue(v, onFunction, binary));
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) {
    if (!binary) throw new TypeError("byte strings cannot be sent over JSON: send them as base64 text, or use msgpack");
    if (value instanceof ArrayBuffer) return new Uint8Array(value);
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (value instanceof Map || value instanceof Set) {
    throw new TypeError("a Map or a Set cannot be sent: use a plain object (string keys) or an array");
  }
  const object = /** @type {Record<string, unknown>} */ (value);
  if (typeof object.toJSON === "function") return encodeValue(object.toJSON(), onFunction, binary); // a Date
  const keys = Object.keys(object);
  if (keys.length === 1 && keys[0] === CALLBACK_KEY) {
    throw new TypeError(`a map whose only key is ${JSON.stringify(CALLBACK_KEY)} is reserved for callbacks`);
  }
  // fromEntries defines properties: a key "__proto__" stays a key, never a prototype.
  return Object.fromEntries(keys.map((k) => [k, encodeValue(object[k], onFunction, binary)]));
}

/**
 * A received value with every callback reference turned into `onCallback(id)`.
 *
 * @param {unknown} value
 * @param {(id: number) => unknown} onCallback
 * @returns {any}
 */
export function decodeValue(value, onCallback) {
  if (value === null || typeof value !== "object" || value instanceof Uint8Array) return value;
  if (Array.isArray(value)) return value.map((v) => decodeValue(v, onCallback));
  if (isCallbackRef(value)) return onCallback(value[CALLBACK_KEY]);
  const object = /** @type {Record<string, unknown>} */ (value);
  return Object.fromEntries(Object.keys(object).map((k) => [k, decodeValue(object[k], onCallback)]));
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The JSON codec: compact UTF-8 text (text messages), no NaN or Infinity either way. */
export const json = {
  name: "json",
  binary: false,
  /**
   * @param {unknown} document already checked by encodeValue
   * @returns {string}
   */
  encode(document) {
    return JSON.stringify(document);
  },
  /**
   * @param {string | Uint8Array} payload a text message, or a binary one holding UTF-8
   * @returns {unknown}
   * @throws {SyntaxError | TypeError} not JSON (or not UTF-8), or a number too large for a double
   */
  decode(payload) {
    const text = typeof payload === "string" ? payload : utf8.decode(payload);
    return JSON.parse(text, (_key, value) => {
      if (typeof value === "number" && !Number.isFinite(value)) {
        throw new SyntaxError("a number out of range for a 64-bit float");
      }
      return value;
    });
  },
};
