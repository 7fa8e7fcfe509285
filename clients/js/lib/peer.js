// The peer an application holds: `connect(url)` gives one. It calls the other side,
// offers methods the other side calls (`handle`), and, with `reconnect`, opens a new
// connection with backoff whenever one ends, until `close()`.
//
// The protocol has no resumption (docs/protocol.md, 10.3): calls in flight when a
// connection ends fail with ConnectionLost, and callbacks passed on it are gone. What
// outlives connections is this object: its handlers, its listeners, the calls that wait
// for the next connection (a reconnecting peer makes new calls wait for it, within their
// own timeout, rather than fail while it is away).

import { Connection, abortReason } from "./connection.js";
import { ConnectionLost, RpcError } from "./errors.js";
import { openSocket } from "./socket.js";

/** Backoff between reconnection attempts, in seconds: doubling from `initial` to `max`. */
export const BACKOFF_INITIAL_S = 0.2;
export const BACKOFF_MAX_S = 10;

/**
 * @typedef {import("./connection.js").CallOptions} CallOptions
 * @typedef {import("./connection.js").CallContext} CallContext
 * @typedef {import("./connection.js").Handler} Handler
 * @typedef {import("./connection.js").Welcome} Welcome
 * @typedef {import("./socket.js").WebSocketConstructor} WebSocketConstructor
 */

/**
 * A token, or a function giving one at each (re)connection (a fresh one bought with a key).
 * @typedef {string | null | (() => string | null | Promise<string | null>)} TokenSource
 */

/**
 * Options of `connect`.
 * @typedef {object} ConnectOptions
 * @property {TokenSource} [token] the bearer credential (the hello's `token`)
 * @property {WebSocketConstructor} [WebSocket] the WebSocket class (Node 20: the `ws` package's)
 * @property {import("./socket.js").TokenIn} [tokenIn] how the token also travels with the
 *   upgrade: "header" (default with a WebSocket class passed in) or "subprotocol" (default
 *   with the browser's own, which cannot send headers)
 * @property {Record<string, (this: CallContext, ...args: any[]) => unknown>} [handlers] methods to offer at once (as `handle`)
 * @property {boolean | {initial?: number, max?: number}} [reconnect] reconnect with backoff (seconds)
 * @property {readonly import("./connection.js").CodecName[]} [codecs] offered in order of
 *   preference: ["json"] by default (readable in developer tools); ["msgpack", "json"]
 *   carries byte strings (Uint8Array) too
 * @property {number} [timeout] default per-call timeout in seconds (none by default)
 * @property {{name?: string, version?: string}} [info] who this side is (meta.info)
 * @property {number} [maxFrameSize] bytes (16 MiB)
 * @property {number} [maxInFlight] incoming calls running at once (128)
 * @property {Pick<Console, "warn">} [logger] where warnings go (console)
 */

/**
 * Options of `handle`.
 * @typedef {object} HandleOptions
 * @property {boolean} [kwargs] pass the call's keyword arguments as a last argument (an object)
 * @property {string} [params] the signature meta.methods shows, for humans ("(text: str)")
 * @property {string} [doc] the summary meta.methods shows
 */

/**
 * Where to connect: a URL, or one with its own token (a relayed service is reached
 * with the manager's credential, not the service's).
 * @typedef {string | {url: string, token: string | null}} Endpoint
 */

/**
 * Where the next connection goes: a URL, or a function finding endpoints each time
 * (`dial`), tried in their order until one answers.
 * @typedef {string | ((peer: Peer) => Promise<Endpoint | Endpoint[]>)} Address
 */

export class Peer extends EventTarget {
  /**
   * Use `connect()`: a peer is only useful once its first connection is open.
   *
   * @param {Address} address
   * @param {ConnectOptions} [options]
   */
  constructor(address, options = {}) {
    super();
    this.address = address;
    this.options = options;
    /** @type {Map<string, Handler>} */
    this.handlers = new Map();
    /** @type {Record<string, unknown>} who this side is (meta.info); read by each connection */
    this.info = options.info ?? {};
    for (const [name, fn] of Object.entries(options.handlers ?? {})) this.handle(name, fn);
    /** @type {Connection | null} */
    this.connection = null;
    /** The URL of the current (or last) connection. */
    this.url = "";
    this.closed = false;
    this.closeReason = "";
    /** @type {Set<() => void>} calls waiting for the next connection */
    this._waiters = new Set();
    /** @type {(() => void) | null} ends the backoff wait early */
    this._wake = null;
  }

  /** The other side's `{name, version}` from its welcome (of the current connection). */
  get remote() {
    return this.connection?.welcome?.service ?? {};
  }

  /** The codec of the current connection: "json" or "msgpack". */
  get codec() {
    return this.connection?.codec.name ?? "";
  }

  /** True while a connection is open. */
  get connected() {
    return this.connection !== null && !this.connection.closed;
  }

  // -- offering methods -----------------------------------------------------------------

  /**
   * Offer `name` to the other side (and to anyone a manager relays here). The handler
   * gets the call's positional arguments (functions among them call back the caller)
   * and returns the result, or a promise of it; what it throws reaches the caller as an
   * `application_error` whose `type` is the error's `code` (snake_case) or class name.
   * In a `function` (not an arrow function), `this` is the call's context:
   * `{peer, signal, target, method, kwargs}`.
   *
   * @param {string} name
   * @param {(this: CallContext, ...args: any[]) => unknown} fn
   * @param {HandleOptions} [options]
   * @returns {this}
   */
  handle(name, fn, options = {}) {
    if (typeof name !== "string" || name.length === 0 || name.length > 256) {
      throw new TypeError("a method's name is a string of 1 to 256 characters");
    }
    if (typeof fn !== "function") throw new TypeError(`the handler of '${name}' must be a function`);
    this.handlers.set(name, {
      fn,
      kwargs: options.kwargs ?? false,
      params: options.params ?? `(${fn.length} argument${fn.length === 1 ? "" : "s"})`,
      doc: options.doc ?? "",
    });
    return this;
  }

  /**
   * Stop offering `name`.
   * @param {string} name
   * @returns {boolean} whether it was offered
   */
  unhandle(name) {
    return this.handlers.delete(name);
  }

  // -- calling ----------------------------------------------------------------------------

  /**
   * Call `method` with positional arguments; its result.
   *
   * @param {string} method
   * @param {...unknown} args
   * @returns {Promise<any>}
   * @throws {import("./errors.js").RemoteError} the other side answered with an error
   * @throws {import("./errors.js").CallTimeout} the peer's default timeout passed
   * @throws {ConnectionLost} the connection ended before the answer
   */
  call(method, ...args) {
    return this.callWith(method, args);
  }

  /**
   * Call with options: keyword arguments, a target, a timeout, an AbortSignal.
   *
   * @param {string} method
   * @param {unknown[]} [args]
   * @param {CallOptions} [options]
   * @returns {Promise<any>}
   */
  async callWith(method, args = [], options = {}) {
    const timeout = options.timeout ?? this.options.timeout;
    const started = Date.now();
    const connection = await this._ready(method, timeout, options.signal);
    const left = timeout == null ? undefined : Math.max(0, timeout - (Date.now() - started) / 1000);
    return connection.call(method, args, { ...options, timeout: left });
  }

  /**
   * Send a call that expects no answer (not even an error).
   *
   * @param {string} method
   * @param {unknown[]} [args]
   * @param {{kwargs?: Record<string, unknown>, target?: string | null}} [options]
   * @throws {ConnectionLost} no connection is open
   */
  notify(method, args = [], options = {}) {
    if (!this.connection || this.connection.closed) throw this._lost();
    this.connection.notify(method, args, options);
  }

  /**
   * The open connection, or (reconnecting) the next one, within `timeout` seconds.
   *
   * @param {string} method
   * @param {number | undefined} timeout
   * @param {AbortSignal | undefined} signal
   * @returns {Promise<Connection>}
   */
  async _ready(method, timeout, signal) {
    while (!this.connection || this.connection.closed) {
      if (this.closed || !this.options.reconnect) throw this._lost();
      await new Promise((resolve, reject) => {
        const cleanup = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", abort);
          this._waiters.delete(wake);
        };
        const wake = () => {
          cleanup();
          resolve(undefined);
        };
        const abort = () => {
          cleanup();
          if (signal) reject(abortReason(signal, method));
        };
        const timer =
          timeout == null
            ? undefined
            : setTimeout(() => {
                cleanup();
                reject(new ConnectionLost(`'${method}': no connection within ${timeout} s (${this.closeReason})`));
              }, timeout * 1000);
        signal?.addEventListener("abort", abort, { once: true });
        this._waiters.add(wake);
      });
    }
    return this.connection;
  }

  _lost() {
    const why = this.connection?.closeReason || this.closeReason || "not connected";
    return new ConnectionLost(`connection lost: ${why}`);
  }

  // -- connections --------------------------------------------------------------------------

  /**
   * Open the first connection (its errors are thrown), then keep reconnecting if asked.
   * @returns {Promise<this>}
   */
  async start() {
    await this._open();
    this._watch();
    return this;
  }

  async _open() {
    const found = typeof this.address === "function" ? await this.address(this) : this.address;
    const endpoints = Array.isArray(found) ? found : [found];
    const source = this.options.token;
    const token = typeof source === "function" ? await source() : (source ?? null);
    /** @type {string[]} */
    const failures = [];
    for (const endpoint of endpoints) {
      const url = typeof endpoint === "string" ? endpoint : endpoint.url;
      let connection;
      try {
        connection = await this._connectTo(url, typeof endpoint === "string" ? token : endpoint.token);
      } catch (error) {
        if (endpoints.length === 1 || !(error instanceof RpcError)) throw error;
        failures.push(`${url}: ${error.message}`);
        continue;
      }
      if (this.closed) {
        connection.close("closed by this side");
        throw this._lost();
      }
      this.url = url;
      this.connection = connection;
      for (const wake of [...this._waiters]) wake();
      this.dispatchEvent(new CustomEvent("open", { detail: { url, service: connection.welcome?.service } }));
      return;
    }
    throw new ConnectionLost(failures.length ? `none answered: ${failures.join("; ")}` : "nowhere to connect to");
  }

  /**
   * A connection to `url`, welcomed.
   * @param {string} url
   * @param {string | null} token
   * @returns {Promise<Connection>}
   */
  async _connectTo(url, token) {
    const { WebSocket, tokenIn } = this.options;
    const ws = await openSocket(url, { WebSocket, token, tokenIn });
    const connection = new Connection(ws, {
      handlers: this.handlers,
      peer: this,
      info: this.info,
      maxFrameSize: this.options.maxFrameSize,
      maxInFlight: this.options.maxInFlight,
      logger: this.options.logger,
    });
    try {
      await connection.handshake(token, this.options.codecs);
    } catch (error) {
      connection.close();
      throw error;
    }
    return connection;
  }

  /** When the connection ends: tell listeners, and reconnect if asked. */
  async _watch() {
    const options = this.options.reconnect;
    const initial = typeof options === "object" ? (options.initial ?? BACKOFF_INITIAL_S) : BACKOFF_INITIAL_S;
    const max = typeof options === "object" ? (options.max ?? BACKOFF_MAX_S) : BACKOFF_MAX_S;
    while (this.connection) {
      const reason = await this.connection.ended;
      this.closeReason = reason;
      this.dispatchEvent(new CustomEvent("close", { detail: { reason } }));
      if (this.closed || !options) break;
      let delay = initial;
      for (;;) {
        // Jitter: clients dropped together by one restart do not all come back at once.
        await this._sleep(delay * (0.75 + Math.random() / 2));
        if (this.closed) break;
        try {
          await this._open();
          break;
        } catch (error) {
          this.closeReason = error instanceof Error ? error.message : String(error);
          const event = new CustomEvent("retry", { detail: { error, delay } });
          this.dispatchEvent(event);
          delay = Math.min(delay * 2, max);
        }
      }
      if (this.closed) break;
    }
    for (const wake of [...this._waiters]) wake(); // they learn that the peer is closed
  }

  /** @param {number} seconds */
  _sleep(seconds) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, seconds * 1000);
      function done() {
        clearTimeout(timer);
        resolve(undefined);
      }
      this._wake = done;
    }).finally(() => {
      this._wake = null;
    });
  }

  /**
   * Try to reconnect now rather than at the end of the current backoff wait (a watch
   * saw the service come back, a page became visible again). Nothing if connected.
   */
  reconnectNow() {
    this._wake?.();
  }

  /**
   * Close for good: calls in flight and calls waiting for a connection fail with
   * ConnectionLost; no reconnection follows.
   * @param {string} [reason]
   */
  close(reason = "closed by this side") {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.connection?.close(reason);
    this._wake?.();
    for (const wake of [...this._waiters]) wake();
    this.dispatchEvent(new CustomEvent("end", { detail: { reason } }));
  }
}

/**
 * Connect to the herder service at `url` (`ws://host:port/rpc`), say hello, and resolve
 * with the peer once the service has welcomed it.
 *
 * @param {Address} url
 * @param {ConnectOptions} [options]
 * @returns {Promise<Peer>}
 * @throws {ConnectionLost} the service could not be reached
 * @throws {import("./errors.js").HandshakeRefused} the service (or its HTTP door) refused the connection
 */
export async function connect(url, options = {}) {
  const peer = new Peer(url, options);
  return peer.start();
}

