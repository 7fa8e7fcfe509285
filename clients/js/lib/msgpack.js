// The MessagePack codec (docs/protocol.md, section 6.2), written for the protocol's
// values alone: nil, booleans, integers, float64, str (always UTF-8 text), bin (bytes,
// as Uint8Array), arrays and maps with str keys. Extension types are refused both ways,
// and so are map keys that are not str: a payload holding one is an invalid message.
//
// Integers are written in their shortest form and other numbers as float64, as herder's
// Python writes them. Integers beyond 2**53 arrive as the nearest double (as in JSON).

const MAX_DEPTH = 512;
const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8", { fatal: true });

/** A payload that is not MessagePack as the protocol uses it. */
export class MsgpackError extends Error {}

class Writer {
  constructor() {
    this.bytes = new Uint8Array(256);
    this.view = new DataView(this.bytes.buffer);
    this.length = 0;
  }

  /** @param {number} more */
  reserve(more) {
    if (this.length + more <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + more) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }

  /** @param {number} byte */
  u8(byte) {
    this.reserve(1);
    this.bytes[this.length++] = byte;
  }

  /** @param {number} tag @param {number} value */
  u16(tag, value) {
    this.reserve(3);
    this.bytes[this.length] = tag;
    this.view.setUint16(this.length + 1, value);
    this.length += 3;
  }

  /** @param {number} tag @param {number} value */
  u32(tag, value) {
    this.reserve(5);
    this.bytes[this.length] = tag;
    this.view.setUint32(this.length + 1, value);
    this.length += 5;
  }

  /** @param {number} tag @param {bigint} value */
  u64(tag, value) {
    this.reserve(9);
    this.bytes[this.length] = tag;
    this.view.setBigUint64(this.length + 1, BigInt.asUintN(64, value));
    this.length += 9;
  }

  /** @param {Uint8Array} data */
  raw(data) {
    this.reserve(data.length);
    this.bytes.set(data, this.length);
    this.length += data.length;
  }

  /**
   * A length header: the fix form when it fits `fixMax`, else 8 (if `tag8`), 16 or 32 bits.
   * @param {number} n
   * @param {number} fix the fix form's first byte
   * @param {number} fixMax
   * @param {number | null} tag8
   * @param {number} tag16 (tag32 follows it)
   */
  header(n, fix, fixMax, tag8, tag16) {
    if (n <= fixMax) this.u8(fix | n);
    else if (tag8 !== null && n <= 0xff) {
      this.u8(tag8);
      this.u8(n);
    } else if (n <= 0xffff) this.u16(tag16, n);
    else this.u32(tag16 + 1, n);
  }
}

/**
 * @param {Writer} out
 * @param {number} n
 */
function writeNumber(out, n) {
  if (!Number.isSafeInteger(n)) {
    out.reserve(9);
    out.bytes[out.length] = 0xcb;
    out.view.setFloat64(out.length + 1, n);
    out.length += 9;
  } else if (n >= 0) {
    if (n < 0x80) out.u8(n);
    else if (n <= 0xff) {
      out.u8(0xcc);
      out.u8(n);
    } else if (n <= 0xffff) out.u16(0xcd, n);
    else if (n <= 0xffffffff) out.u32(0xce, n);
    else out.u64(0xcf, BigInt(n));
  } else if (n >= -32) out.u8(n & 0xff);
  else if (n >= -0x80) {
    out.u8(0xd0);
    out.u8(n & 0xff);
  } else if (n >= -0x8000) out.u16(0xd1, n & 0xffff);
  else if (n >= -0x80000000) out.u32(0xd2, n >>> 0);
  else out.u64(0xd3, BigInt(n));
}

/**
 * @param {Writer} out
 * @param {unknown} value
 * @param {number} depth
 */
function write(out, value, depth) {
  if (depth > MAX_DEPTH) throw new TypeError("nested too deeply for MessagePack");
  if (value === null || value === undefined) out.u8(0xc0);
  else if (value === false) out.u8(0xc2);
  else if (value === true) out.u8(0xc3);
  else if (typeof value === "number") writeNumber(out, value);
  else if (typeof value === "string") {
    const data = utf8.encode(value);
    out.header(data.length, 0xa0, 31, 0xd9, 0xda);
    out.raw(data);
  } else if (value instanceof Uint8Array) {
    out.header(value.length, 0xc4, -1, 0xc4, 0xc5);
    out.raw(value);
  } else if (Array.isArray(value)) {
    out.header(value.length, 0x90, 15, null, 0xdc);
    for (const item of value) write(out, item, depth + 1);
  } else if (typeof value === "object") {
    const object = /** @type {Record<string, unknown>} */ (value);
    const keys = Object.keys(object);
    out.header(keys.length, 0x80, 15, null, 0xde);
    for (const key of keys) {
      write(out, key, depth + 1);
      write(out, object[key], depth + 1);
    }
  } else {
    throw new TypeError(`a ${typeof value} cannot be sent`);
  }
}

class Reader {
  /** @param {Uint8Array} bytes */
  constructor(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
  }

  /** @param {number} n the bytes about to be read */
  need(n) {
    if (this.at + n > this.bytes.length) throw new MsgpackError("the payload ends inside a value");
    const at = this.at;
    this.at += n;
    return at;
  }

  /** @param {number} n */
  take(n) {
    const at = this.need(n);
    return this.bytes.subarray(at, at + n);
  }

  /** @param {number} n @param {boolean} asText */
  string(n, asText) {
    const data = this.take(n);
    if (!asText) return data.slice(); // a copy: the payload's buffer is not kept alive
    try {
      return text.decode(data);
    } catch {
      throw new MsgpackError("a str that is not UTF-8");
    }
  }
}

/**
 * @param {Reader} r
 * @param {number} depth
 * @returns {unknown}
 */
function read(r, depth) {
  if (depth > MAX_DEPTH) throw new MsgpackError("nested too deeply");
  const tag = r.bytes[r.need(1)];
  if (tag < 0x80) return tag;
  if (tag >= 0xe0) return tag - 0x100;
  if (tag <= 0x8f) return readMap(r, tag & 0x0f, depth);
  if (tag <= 0x9f) return readArray(r, tag & 0x0f, depth);
  if (tag <= 0xbf) return r.string(tag & 0x1f, true);
  const v = r.view;
  switch (tag) {
    case 0xc0:
      return null;
    case 0xc2:
      return false;
    case 0xc3:
      return true;
    case 0xc4:
      return r.string(v.getUint8(r.need(1)), false);
    case 0xc5:
      return r.string(v.getUint16(r.need(2)), false);
    case 0xc6:
      return r.string(v.getUint32(r.need(4)), false);
    case 0xca:
      return v.getFloat32(r.need(4));
    case 0xcb:
      return v.getFloat64(r.need(8));
    case 0xcc:
      return v.getUint8(r.need(1));
    case 0xcd:
      return v.getUint16(r.need(2));
    case 0xce:
      return v.getUint32(r.need(4));
    case 0xcf:
      return Number(v.getBigUint64(r.need(8)));
    case 0xd0:
      return v.getInt8(r.need(1));
    case 0xd1:
      return v.getInt16(r.need(2));
    case 0xd2:
      return v.getInt32(r.need(4));
    case 0xd3:
      return Number(v.getBigInt64(r.need(8)));
    case 0xd9:
      return r.string(v.getUint8(r.need(1)), true);
    case 0xda:
      return r.string(v.getUint16(r.need(2)), true);
    case 0xdb:
      return r.string(v.getUint32(r.need(4)), true);
    case 0xdc:
      return readArray(r, v.getUint16(r.need(2)), depth);
    case 0xdd:
      return readArray(r, v.getUint32(r.need(4)), depth);
    case 0xde:
      return readMap(r, v.getUint16(r.need(2)), depth);
    case 0xdf:
      return readMap(r, v.getUint32(r.need(4)), depth);
    default:
      throw new MsgpackError(`type 0x${tag.toString(16)} is not used by the protocol (extensions, or never used)`);
  }
}

/**
 * @param {Reader} r
 * @param {number} n
 * @param {number} depth
 */
function readArray(r, n, depth) {
  if (n > r.bytes.length - r.at) throw new MsgpackError("an array longer than the payload");
  const items = new Array(n);
  for (let i = 0; i < n; i++) items[i] = read(r, depth + 1);
  return items;
}

/**
 * @param {Reader} r
 * @param {number} n
 * @param {number} depth
 */
function readMap(r, n, depth) {
  if (n * 2 > r.bytes.length - r.at) throw new MsgpackError("a map longer than the payload");
  /** @type {[string, unknown][]} */
  const entries = [];
  for (let i = 0; i < n; i++) {
    const key = read(r, depth + 1);
    if (typeof key !== "string") throw new MsgpackError("map keys must be str");
    entries.push([key, read(r, depth + 1)]);
  }
  return Object.fromEntries(entries); // a key "__proto__" stays a key
}

/** The MessagePack codec: binary messages, bytes as Uint8Array, NaN allowed. */
export const msgpack = {
  name: "msgpack",
  /** Carries byte strings and the non-finite floats (JSON does neither). */
  binary: true,
  /**
   * @param {unknown} document
   * @returns {Uint8Array}
   */
  encode(document) {
    const out = new Writer();
    write(out, document, 0);
    return out.bytes.subarray(0, out.length);
  },
  /**
   * @param {Uint8Array} payload
   * @returns {unknown}
   * @throws {MsgpackError}
   */
  decode(payload) {
    const r = new Reader(payload);
    const value = read(r, 0);
    if (r.at !== payload.length) throw new MsgpackError("trailing bytes after the message");
    return value;
  },
};
