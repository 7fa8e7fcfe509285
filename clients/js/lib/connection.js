// One connection of the herder wire protocol over a WebSocket: the handshake, then calls
// both ways (docs/protocol.md). Both ends are peers: this side calls the service and
// serves what the service (or a manager relaying for it) calls here, callbacks included.
//
// A connection never comes back once closed (section 10.3): the Peer of peer.js makes a
// new one to reconnect, and keeps what outlives connections (the methods it offers).

import { CallCancelled, CallTimeout, ConnectionLost, HandshakeRefused, RemoteError, RpcError } from "./errors.js";
import { InvalidMessage, errorFor, isMap, parseMessage } from "./messages.js";
import { CONNECT_TIMEOUT_S, errorText } from "./socket.js";
import { msgpack } from "./msgpack.js";
import { REMOTE, decodeValue, encodeValue, json } from "./values.js";

export const PROTOCOL_VERSION = 1;
/** The largest payload either side may send: 16 MiB (section 3). */
export const DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024;
/** Incoming calls running at once before more are answered `overloaded` (section 13). */
export const DEFAULT_MAX_IN_FLIGHT = 128;
const MAX_TOKEN_LENGTH = 16384;
// An application's own error code, sent as `type` instead of the class name: snake_case,
// so that it is never mistaken for a class name (as herder's Python does).
const APPLICATION_CODE = /^[a-z][a-z0-9_]{0,63}$/;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
/** The codecs herder.js speaks, by name (section 6). */
export const CODECS = { json, msgpack };
/** What herder.js offers by default: JSON, readable in a browser's developer tools. */
export const DEFAULT_CODECS = /** @type {const} */ (["json"]);

/**
 * @typedef {"json" | "msgpack"} CodecName
 * @typedef {typeof json | typeof msgpack} Codec
 */

/**
 * A method this side offers, as `peer.handle` registered it.
 * @typedef {object} Handler
 * @property {(this: CallContext, ...args: any[]) => unknown} fn
 * @property {boolean} kwargs pass the call's keyword arguments as a last argument (an object)
 * @property {string} params the signature shown by meta.methods, for humans
 * @property {string} doc the summary shown by meta.methods
 */

/**
 * What a handler finds in `this` (a `function`, not an arrow function, sees it).
 * @typedef {object} CallContext
 * @property {any} peer the Peer the call came in on
 * @property {AbortSignal} signal aborted when the caller cancels the call or the connection ends
 * @property {string | null} target the call's target
 * @property {string} method the method's name
 * @property {Record<string, any>} kwargs the call's keyword arguments
 */

/**
 * Per-call options of `peer.callWith`.
 * @typedef {object} CallOptions
 * @property {Record<string, unknown>} [kwargs] keyword arguments
 * @property {string | null} [target] "meta", "callback", a named target; default the peer's own
 * @property {number} [timeout] seconds; when they pass: CallTimeout, and a `cancel` goes out
 * @property {AbortSignal} [signal] abandons the call (CallCancelled, or the signal's reason)
 */

/**
 * A function the other side passed: calling it calls back there.
 * @typedef {((...args: any[]) => Promise<any>) & {id: number, released: boolean, release: () => Promise<void>, [REMOTE]: true}} RemoteCallback
 */

/**
 * @typedef {object} Welcome
 * @property {string} codec
 * @property {{name?: string, version?: string}} service who answers
 */

/** An incoming call failed with a protocol code, not an application error. */
class Fault extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {unknown} [data]
   */
  constructor(code, message, data = null) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

/**
 * @typedef {object} ConnectionOptions
 * @property {Map<string, Handler>} handlers the methods this side offers (shared, live)
 * @property {any} peer passed to handlers as `this.peer`
 * @property {Record<string, unknown>} [info] who this side is, for meta.info (read live:
 *   `register` names a relayed page after its key)
 * @property {number} [maxFrameSize]
 * @property {number} [maxInFlight]
 * @property {Pick<Console, "warn">} [logger]
 */

export class Connection {
  /**
   * @param {WebSocket} ws an open WebSocket
   * @param {ConnectionOptions} options
   */
  constructor(ws, options) {
    this.ws = ws;
    /** @type {Codec} JSON until the welcome names the connection's codec */
    this.codec = json;
    this.handlers = options.handlers;
    this.peer = options.peer;
    this.info = options.info ?? {};
    this.maxFrameSize = options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE;
    this.maxInFlight = options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    this.logger = options.logger ?? console;
    /** @type {Welcome | null} */
    this.welcome = null;
    this.closeReason = "";
    this.closed = false;
    this._nextId = 1;
    this._nextCallback = 1;
    /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void, settle: () => void}>} */
    this._pending = new Map();
    /** @type {Map<number, Function>} */
    this._callbacks = new Map();
    /** @type {Map<number, AbortController>} incoming calls running, by id, for `cancel` */
    this._serving = new Map();
    /** @type {Set<AbortController>} every incoming call or notify running */
    this._running = new Set();
    /** @type {((payload: string) => void) | null} the handshake, waiting for the welcome */
    this._onHello = null;
    /** @type {(reason: string) => void} */
    this._closedResolve = () => {};
    /** Resolves with the reason once the connection has ended. */
    this.ended = new Promise((resolve) => {
      this._closedResolve = resolve;
    });
    ws.addEventListener("message", (event) => this._onMessage(event.data));
    ws.addEventListener("error", (event) => {
      this.closeReason ||= errorText(event);
    });
    ws.addEventListener("close", (event) => {
      const why = event.reason ? `${event.code} ${event.reason}` : `code ${event.code}`;
      this._finish(this.closeReason || `the WebSocket closed (${why})`);
    });
  }

  // -- the handshake (section 4) --------------------------------------------------------

  /**
   * Say hello; resolve with the welcome.
   *
   * @param {string | null} token
   * @param {readonly CodecName[]} [codecs] in order of preference
   * @returns {Promise<Welcome>}
   * @throws {HandshakeRefused | ConnectionLost}
   */
  handshake(token, codecs = DEFAULT_CODECS) {
    if (token != null && token.length > MAX_TOKEN_LENGTH) {
      return Promise.reject(new TypeError(`a token is at most ${MAX_TOKEN_LENGTH} characters`));
    }
    const unknown = codecs.filter((name) => !(name in CODECS));
    if (codecs.length === 0 || unknown.length) {
      return Promise.reject(new TypeError(`codecs are "msgpack" and "json" (at least one), not ${JSON.stringify(codecs)}`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.close(`no welcome within ${CONNECT_TIMEOUT_S} s`);
      }, CONNECT_TIMEOUT_S * 1000);
      this.ended.then((reason) => {
        clearTimeout(timer);
        reject(new ConnectionLost(`connection lost during the handshake: ${reason}`));
      });
      this._onHello = (payload) => {
        clearTimeout(timer);
        this._onHello = null;
        let answer;
        try {
          answer = JSON.parse(payload);
        } catch {
          answer = null;
        }
        if (!isMap(answer) || answer.protocol !== "herder") {
          reject(new HandshakeRefused("protocol_error", "the service's answer is not a herder welcome"));
          this.close("not a herder welcome");
        } else if (isMap(answer.error)) {
          const { code, message } = answer.error;
          const refusal = new HandshakeRefused(
            typeof code === "string" ? code : "protocol_error",
            typeof message === "string" ? message : "refused",
          );
          reject(refusal);
          this.close(`refused: ${refusal.message}`);
        } else if (typeof answer.codec !== "string" || !codecs.includes(/** @type {CodecName} */ (answer.codec))) {
          reject(new HandshakeRefused("unsupported_codec", `the service chose ${String(answer.codec)}, not offered here`));
          this.close("a codec this side did not offer");
        } else {
          this.codec = CODECS[/** @type {CodecName} */ (answer.codec)];
          this.welcome = {
            codec: answer.codec,
            service: isMap(answer.service) ? /** @type {Welcome["service"]} */ (answer.service) : {},
          };
          resolve(this.welcome);
        }
      };
      this._send(hello(token, codecs));
    });
  }

  // -- calling ----------------------------------------------------------------------------

  /**
   * Call `method` on the other side; resolve with its result.
   *
   * @param {string} method
   * @param {unknown[]} args
   * @param {CallOptions} [options]
   * @returns {Promise<any>}
   * @throws {RemoteError | CallTimeout | CallCancelled | ConnectionLost | RpcError | TypeError}
   */
  call(method, args, options = {}) {
    if (this.closed) return Promise.reject(this._lost());
    const { timeout, signal } = options;
    if (signal?.aborted) return Promise.reject(abortReason(signal, method));
    const callId = this._nextId++;
    let payload;
    try {
      payload = this._payload(method, this._encodeCall("call", callId, method, args, options));
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setTimeout> | undefined} */
      let timer;
      const onAbort = () => {
        if (signal) this._giveUp(callId, abortReason(signal, method));
      };
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
      };
      this._pending.set(callId, { resolve, reject, settle });
      if (timeout != null) {
        timer = setTimeout(() => {
          this._giveUp(callId, new CallTimeout(`'${method}' did not answer within ${timeout} s`));
        }, timeout * 1000);
      }
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        this._send(payload);
      } catch (error) {
        this._pending.delete(callId);
        settle();
        reject(error);
      }
    });
  }

  /**
   * Send a call that expects no answer.
   *
   * @param {string} method
   * @param {unknown[]} args
   * @param {{kwargs?: Record<string, unknown>, target?: string | null}} [options]
   */
  notify(method, args, options = {}) {
    if (this.closed) throw this._lost();
    this._send(this._payload(method, this._encodeCall("notify", null, method, args, options)));
  }

  /**
   * @param {"call" | "notify"} kind
   * @param {number | null} callId
   * @param {string} method
   * @param {unknown[]} args
   * @param {{kwargs?: Record<string, unknown>, target?: string | null}} options
   */
  _encodeCall(kind, callId, method, args, options) {
    const head = kind === "call" ? { kind, id: callId } : { kind };
    return {
      ...head,
      target: options.target ?? null,
      method,
      args: /** @type {unknown[]} */ (this._encode(args)),
      kwargs: this._encode(options.kwargs ?? {}),
    };
  }

  /**
   * Stop waiting for call `callId`: fail it with `error`, and ask the other side to cancel.
   * @param {number} callId
   * @param {Error} error
   */
  _giveUp(callId, error) {
    const pending = this._pending.get(callId);
    if (!pending) return;
    this._pending.delete(callId);
    pending.settle();
    pending.reject(error);
    this._sendQuietly({ kind: "cancel", id: callId });
  }

  _lost() {
    return new ConnectionLost(`connection lost: ${this.closeReason || "closed"}`);
  }

  // -- values and callbacks (section 9) ------------------------------------------------------

  /** @param {unknown} value */
  _encode(value) {
    return encodeValue(
      value,
      (fn) => {
        const id = this._nextCallback++;
        this._callbacks.set(id, fn);
        return { $cb: id };
      },
      this.codec.binary,
    );
  }

  /** @param {unknown} value */
  _decode(value) {
    return decodeValue(value, (id) => this.remoteCallback(id));
  }

  /**
   * A function that calls the other side's callback `id`.
   * @param {number} id
   * @returns {RemoteCallback}
   */
  remoteCallback(id) {
    const cb = /** @type {RemoteCallback} */ (
      /** @type {unknown} */ ((/** @type {unknown[]} */ ...args) => this.call(String(id), args, { target: "callback" }))
    );
    cb.id = id;
    cb.released = false;
    cb.release = async () => {
      if (cb.released) return;
      cb.released = true;
      if (!this.closed) this._sendQuietly({ kind: "notify", target: "meta", method: "release", args: [id], kwargs: {} });
    };
    cb[REMOTE] = true;
    return cb;
  }

  // -- reading (section 16, step 5) -------------------------------------------------------------

  /** @param {unknown} data a text message (string), or a binary one (ArrayBuffer) */
  _onMessage(data) {
    if (this.closed) return;
    const payload = typeof data === "string" ? data : new Uint8Array(/** @type {ArrayBuffer} */ (data));
    if (this._onHello) {
      let text;
      try {
        text = typeof payload === "string" ? payload : decoder.decode(payload);
      } catch {
        text = ""; // not UTF-8: not a welcome either
      }
      this._onHello(text);
      return;
    }
    let message;
    try {
      // A text message's payload is its UTF-8 encoding, whatever the codec (section 2.2).
      const decoded =
        this.codec === msgpack
          ? msgpack.decode(typeof payload === "string" ? encoder.encode(payload) : payload)
          : json.decode(payload);
      message = parseMessage(decoded);
    } catch (error) {
      const why = error instanceof InvalidMessage ? error.message : `not ${this.codec.name}: ${errorMessage(error)}`;
      this._protocolFailure("invalid_message", "InvalidMessage", why);
      return;
    }
    switch (message.kind) {
      case "result": {
        const pending = this._pending.get(message.id);
        if (!pending) return; // an answer nobody waits for any more
        this._pending.delete(message.id);
        pending.settle();
        pending.resolve(this._decode(message.result));
        return;
      }
      case "error": {
        const { code, message: text, type, data } = message.error;
        if (message.id === null) {
          this.logger.warn(`herder: the other side reports [${code}] ${text}`);
          return; // the close that follows fails what is pending
        }
        const pending = this._pending.get(message.id);
        if (!pending) return;
        this._pending.delete(message.id);
        pending.settle();
        pending.reject(new RemoteError(code, text, type, data));
        return;
      }
      case "cancel": {
        const serving = this._serving.get(message.id);
        if (!serving) return; // answered already, or never known
        this._serving.delete(message.id);
        serving.abort();
        this._sendQuietly(errorFor(message.id, "cancelled", "the call was cancelled"));
        return;
      }
      default:
        this._serve(message);
    }
  }

  /**
   * @param {string} code
   * @param {string} type
   * @param {string} why
   */
  _protocolFailure(code, type, why) {
    this.logger.warn(`herder: closing the connection: ${why}`);
    this._sendQuietly(errorFor(null, code, why, type));
    this.close(`protocol error: ${why}`);
  }

  // -- serving -------------------------------------------------------------------------------

  /** @param {import("./messages.js").CallMessage | import("./messages.js").NotifyMessage} message */
  _serve(message) {
    const callId = message.kind === "call" ? message.id : null;
    if (this._running.size >= this.maxInFlight) {
      if (callId !== null) {
        this._sendQuietly(errorFor(callId, "overloaded", `${this.maxInFlight} calls are running on this connection`));
        this.peer?.dispatchEvent?.(new CustomEvent("overloaded", { detail: { method: message.method } }));
      } else {
        this.logger.warn(`herder: dropped a '${message.method}' notification: ${this._running.size} calls are running`);
      }
      return;
    }
    const control = new AbortController();
    this._running.add(control);
    if (callId !== null) this._serving.set(callId, control);
    this._invoke(message, control.signal).then(
      (result) => {
        if (callId !== null && this._serving.get(callId) === control) this._reply(callId, result);
      },
      (error) => {
        if (callId !== null && this._serving.get(callId) === control) {
          this._sendQuietly(errorAnswer(callId, error));
        } else if (callId === null && !(error instanceof Fault && error.code === "unknown_method")) {
          this.logger.warn(`herder: the '${message.method}' notification failed: ${errorMessage(error)}`);
        }
      },
    ).finally(() => {
      this._running.delete(control);
      if (callId !== null && this._serving.get(callId) === control) this._serving.delete(callId);
    });
  }

  /**
   * Answer call `callId` with `result`, or `internal_error` if it cannot be carried.
   * @param {number} callId
   * @param {unknown} result
   */
  _reply(callId, result) {
    let payload;
    try {
      payload = this._payload("", { kind: "result", id: callId, result: this._encode(result) });
    } catch (error) {
      const why = `the result cannot be encoded: ${errorMessage(error)}`;
      this._sendQuietly(errorFor(callId, "internal_error", why));
      return;
    }
    this._sendQuietly(payload);
  }

  /**
   * Run an incoming call or notify; its result, or an error (a Fault for the protocol's).
   *
   * @param {import("./messages.js").CallMessage | import("./messages.js").NotifyMessage} message
   * @param {AbortSignal} signal
   * @returns {Promise<unknown>}
   */
  async _invoke(message, signal) {
    const { target, method } = message;
    const args = /** @type {unknown[]} */ (this._decode(message.args));
    const kwargs = /** @type {Record<string, any>} */ (this._decode(message.kwargs));
    const hasKwargs = Object.keys(kwargs).length > 0;
    if (target === "callback") {
      const fn = /^\d+$/.test(method) ? this._callbacks.get(Number(method)) : undefined;
      if (!fn) throw new Fault("released_callback", `callback ${method} was released or never existed`);
      return await fn(...args, ...(hasKwargs ? [kwargs] : []));
    }
    if (target === "meta") return this._meta(method, args, hasKwargs);
    if (target !== null && target !== this.info.name) throw new Fault("unknown_target", `no target '${target}' here`);
    const handler = this.handlers.get(method);
    if (!handler) throw new Fault("unknown_method", `no method '${method}'`);
    if (hasKwargs && !handler.kwargs) {
      const names = Object.keys(kwargs).join(", ");
      throw new Fault("invalid_params", `${method}${handler.params}: no keyword arguments are taken (got ${names})`);
    }
    /** @type {CallContext} */
    const context = { peer: this.peer, signal, target, method, kwargs };
    return await handler.fn.apply(context, handler.kwargs ? [...args, kwargs] : args);
  }

  /**
   * The built-in meta methods every peer answers (section 8).
   * @param {string} method
   * @param {unknown[]} args
   * @param {boolean} hasKwargs
   */
  _meta(method, args, hasKwargs) {
    const arity = method === "release" ? 1 : 0;
    if (!["ping", "methods", "info", "release"].includes(method)) {
      throw new Fault("unknown_method", `meta has no method '${method}'`);
    }
    if (args.length !== arity || hasKwargs) {
      throw new Fault("invalid_params", `meta.${method} takes ${arity} positional argument${arity ? "" : "s"}`);
    }
    if (method === "ping") return "pong";
    if (method === "info") return { ...this.info, protocol: PROTOCOL_VERSION, codec: this.codec.name };
    if (method === "methods") {
      return [...this.handlers.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([name, h]) => ({ name, params: h.params, auth: false, doc: h.doc }));
    }
    const id = args[0];
    if (typeof id !== "number" || !Number.isInteger(id)) throw new Fault("invalid_params", "meta.release takes a callback id");
    this._callbacks.delete(id);
    return null;
  }

  // -- writing ---------------------------------------------------------------------------------

  /**
   * A message as its payload, refused if larger than a frame (section 3).
   * @param {string} method for the error message
   * @param {unknown} message
   * @returns {string | Uint8Array}
   */
  _payload(method, message) {
    const payload = this.codec.encode(message);
    // A UTF-8 character is at most 3 bytes per UTF-16 unit: measure text only near the limit.
    const bound = typeof payload === "string" ? payload.length * 3 : payload.length;
    if (bound > this.maxFrameSize) {
      const size = typeof payload === "string" ? encoder.encode(payload).length : payload.length;
      if (size > this.maxFrameSize) {
        throw new RpcError(`'${method}' cannot be sent: ${size} bytes exceed the frame limit of ${this.maxFrameSize}`);
      }
    }
    return payload;
  }

  /** @param {string | Uint8Array} payload text for JSON, binary for MessagePack */
  _send(payload) {
    if (this.closed || this.ws.readyState !== 1) throw this._lost();
    this.ws.send(payload);
  }

  /**
   * Send, or nothing if the connection is gone (the other side no longer listens).
   * @param {unknown} message a message, or a payload already encoded
   */
  _sendQuietly(message) {
    try {
      this._send(typeof message === "string" || message instanceof Uint8Array ? message : this.codec.encode(message));
    } catch {
      // the connection ended meanwhile: nobody is left to tell
    }
  }

  // -- the end ------------------------------------------------------------------------------------

  /**
   * Close the connection; calls in flight fail with ConnectionLost.
   * @param {string} [reason]
   */
  close(reason = "closed by this side") {
    this.closeReason ||= reason;
    if (this.ws.readyState === 0 || this.ws.readyState === 1) this.ws.close(1000);
    this._finish(this.closeReason);
  }

  /** @param {string} reason */
  _finish(reason) {
    if (this.closed) return;
    this.closed = true;
    this.closeReason ||= reason;
    const lost = this._lost();
    for (const pending of this._pending.values()) {
      pending.settle();
      pending.reject(lost);
    }
    this._pending.clear();
    for (const control of this._running) control.abort(lost);
    this._serving.clear();
    this._callbacks.clear();
    this._closedResolve(this.closeReason);
  }
}

/**
 * The hello (section 4.1): always UTF-8 JSON, whatever codec follows.
 * @param {string | null} token
 * @param {readonly CodecName[]} codecs
 * @returns {string}
 */
export function hello(token, codecs) {
  return JSON.stringify({ protocol: "herder", version: PROTOCOL_VERSION, codecs, token });
}

/**
 * The `error` answering call `callId`, whose handler threw `error` (section 12).
 *
 * @param {number} callId
 * @param {unknown} error
 */
function errorAnswer(callId, error) {
  if (error instanceof Fault) return errorFor(callId, error.code, error.message, "", error.data);
  if (error instanceof RemoteError) {
    // From a third peer this handler called: passed on as it came (a relay's rule).
    return errorFor(callId, error.code, error.message, error.type, error.data);
  }
  const detail = /** @type {{code?: unknown, field?: unknown, constructor?: {name?: string}, name?: unknown}} */ (
    error !== null && typeof error === "object" ? error : {}
  );
  const type =
    typeof detail.code === "string" && APPLICATION_CODE.test(detail.code)
      ? detail.code
      : detail.constructor?.name && detail.constructor.name !== "Object"
        ? detail.constructor.name
        : typeof detail.name === "string"
          ? detail.name
          : "Error";
  const data = typeof detail.field === "string" ? { field: detail.field } : null;
  return errorFor(callId, "application_error", errorMessage(error), type, data);
}

/** @param {unknown} error */
function errorMessage(error) {
  return error instanceof Error ? error.message : String(error);
}

/**
 * What a call abandoned through `signal` fails with: the signal's reason if it is an
 * error (an AbortSignal.timeout's TimeoutError), else CallCancelled.
 *
 * @param {AbortSignal} signal
 * @param {string} method
 * @returns {Error}
 */
export function abortReason(signal, method) {
  const reason = signal.reason;
  if (reason instanceof Error && reason.name !== "AbortError") return reason;
  return new CallCancelled(`'${method}' was cancelled by its caller`);
}
