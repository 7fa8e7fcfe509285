// The message envelope (docs/protocol.md, section 5): what a received map must hold to
// be a message. Anything else is a protocol violation (5.6), answered `invalid_message`.

import { MAX_ID } from "./values.js";

export const MAX_NAME_LENGTH = 256;
const KINDS = new Set(["call", "notify", "result", "error", "cancel"]);

/**
 * @typedef {{kind: "call", id: number, target: string | null, method: string, args: unknown[], kwargs: Record<string, unknown>}} CallMessage
 * @typedef {{kind: "notify", target: string | null, method: string, args: unknown[], kwargs: Record<string, unknown>}} NotifyMessage
 * @typedef {{kind: "result", id: number, result: unknown}} ResultMessage
 * @typedef {{code: string, message: string, type: string, data: unknown}} ErrorBody
 * @typedef {{kind: "error", id: number | null, error: ErrorBody}} ErrorMessage
 * @typedef {{kind: "cancel", id: number}} CancelMessage
 * @typedef {CallMessage | NotifyMessage | ResultMessage | ErrorMessage | CancelMessage} Message
 */

/** A received payload that is not a valid message. */
export class InvalidMessage extends Error {}

/**
 * @param {unknown} value
 * @returns {value is Record<string, unknown>}
 */
export function isMap(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * @param {unknown} value
 * @returns {value is number}
 */
export function isId(value) {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value < MAX_ID;
}

/**
 * @param {string} key
 * @param {unknown} value
 * @returns {string}
 */
function name(key, value) {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_NAME_LENGTH) {
    throw new InvalidMessage(`'${key}' must be a string of 1 to ${MAX_NAME_LENGTH} characters`);
  }
  return value;
}

/**
 * @param {unknown} value
 * @returns {number}
 */
function id(value) {
  if (!isId(value)) throw new InvalidMessage(`'id' must be an integer from 0 to 2**53-1, not ${JSON.stringify(value)}`);
  return value;
}

/**
 * A decoded payload as a message, its defaults filled in; unknown keys are ignored.
 *
 * @param {unknown} doc
 * @returns {Message}
 * @throws {InvalidMessage}
 */
export function parseMessage(doc) {
  if (!isMap(doc)) throw new InvalidMessage("a message must be a map");
  const kind = doc.kind;
  if (typeof kind !== "string" || !KINDS.has(kind)) {
    throw new InvalidMessage(`'kind' must be one of ${[...KINDS].join(", ")}`);
  }
  if (kind === "call" || kind === "notify") {
    const target = doc.target === undefined || doc.target === null ? null : name("target", doc.target);
    const method = name("method", doc.method);
    const args = doc.args === undefined ? [] : doc.args;
    if (!Array.isArray(args)) throw new InvalidMessage("'args' must be an array");
    const kwargs = doc.kwargs === undefined ? {} : doc.kwargs;
    if (!isMap(kwargs)) throw new InvalidMessage("'kwargs' must be a map");
    if (kind === "notify") return { kind, target, method, args, kwargs };
    return { kind, id: id(doc.id), target, method, args, kwargs };
  }
  if (kind === "result") return { kind, id: id(doc.id), result: doc.result === undefined ? null : doc.result };
  if (kind === "cancel") return { kind, id: id(doc.id) };
  const body = doc.error;
  if (!isMap(body) || typeof body.code !== "string" || typeof body.message !== "string") {
    throw new InvalidMessage("'error' must be a map with string 'code' and 'message'");
  }
  const type = typeof body.type === "string" ? body.type : "";
  const data = body.data === undefined ? null : body.data;
  return {
    kind: "error",
    id: doc.id === undefined || doc.id === null ? null : id(doc.id),
    error: { code: body.code, type, message: body.message, data },
  };
}

/**
 * An `error` message answering call `callId` (null: about the connection).
 *
 * @param {number | null} callId
 * @param {string} code
 * @param {string} message
 * @param {string} [type]
 * @param {unknown} [data]
 * @returns {ErrorMessage}
 */
export function errorFor(callId, code, message, type = "", data = null) {
  return { kind: "error", id: callId, error: { code, type, message, data } };
}
