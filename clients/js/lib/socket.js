// Opening a WebSocket to a herder service: the browser's own, or one passed in (Node 20
// has no global WebSocket: pass the `ws` package's). Translates how a socket fails to
// open into the protocol's errors: ConnectionLost, or HandshakeRefused for an HTTP door
// that answered the upgrade with an error status (401, 403).

import { ConnectionLost, HandshakeRefused } from "./errors.js";

/** Seconds to wait for the socket to open, and then for the service's welcome. */
export const CONNECT_TIMEOUT_S = 10;

/**
 * A WebSocket constructor: the browser's, or one with the same API that also takes
 * options as its third argument (the `ws` package's, which sends `headers`).
 * @typedef {new (url: string, ...rest: any[]) => any} WebSocketConstructor
 */

/**
 * The WebSocket class to use: the one given, else the global one.
 *
 * @param {WebSocketConstructor | undefined} given
 * @returns {WebSocketConstructor}
 * @throws {TypeError} neither exists (Node 20: `import WebSocket from "ws"` and pass it)
 */
export function webSocketClass(given) {
  const found = given ?? /** @type {WebSocketConstructor | undefined} */ (globalThis.WebSocket);
  if (typeof found !== "function") {
    throw new TypeError(
      "no WebSocket here: pass one as {WebSocket} (in Node 20: import WebSocket from 'ws')",
    );
  }
  return found;
}

/**
 * How a token travels with the upgrade: an `Authorization` header (what the `ws`
 * package can send), or the subprotocol `herder.bearer.<token>` beside `herder` (what a
 * browser can: it sets no header on an upgrade; docs/protocol.md, section 2.2).
 * @typedef {"header" | "subprotocol"} TokenIn
 */

/** The subprotocols a browser offers: `herder`, which herder's servers answer with. */
export const BROWSER_PROTOCOL = "herder";
export const BEARER_PROTOCOL_PREFIX = "herder.bearer.";

/**
 * A new WebSocket to `url`, its token in a header or a subprotocol (the hello carries
 * it too: a service that only reads the hello still gets it).
 *
 * @param {string} url
 * @param {{WebSocket?: WebSocketConstructor, token?: string | null, tokenIn?: TokenIn}} options
 *   `tokenIn` defaults to a header when the WebSocket class was passed in, else (the
 *   browser's own) to the subprotocol
 * @returns {WebSocket}
 */
export function newSocket(url, options) {
  const Socket = webSocketClass(options.WebSocket);
  const token = options.token;
  if (!token) return new Socket(url);
  const tokenIn = options.tokenIn ?? (options.WebSocket ? "header" : "subprotocol");
  if (tokenIn === "subprotocol") return new Socket(url, [BROWSER_PROTOCOL, BEARER_PROTOCOL_PREFIX + token]);
  return new Socket(url, [], { headers: { Authorization: `Bearer ${token}` } });
}

/**
 * An open WebSocket to `url`.
 *
 * @param {string} url ws:// or wss://
 * @param {{WebSocket?: WebSocketConstructor, token?: string | null, tokenIn?: TokenIn, timeout?: number}} [options]
 * @returns {Promise<WebSocket>}
 * @throws {ConnectionLost | HandshakeRefused}
 */
export function openSocket(url, options = {}) {
  if (!/^wss?:\/\//i.test(url)) {
    return Promise.reject(new TypeError(`${JSON.stringify(url)}: herder.js speaks ws:// and wss:// only`));
  }
  /** @type {WebSocket} */
  const ws = newSocket(url, options);
  ws.binaryType = "arraybuffer";
  const timeoutS = options.timeout ?? CONNECT_TIMEOUT_S;
  return new Promise((resolve, reject) => {
    /** @type {string} */
    let failure = "";
    const timer = setTimeout(() => {
      done();
      ws.close();
      reject(new ConnectionLost(`cannot connect to ${url}: no answer within ${timeoutS} s`));
    }, timeoutS * 1000);
    const done = () => {
      clearTimeout(timer);
      ws.removeEventListener("open", opened);
      ws.removeEventListener("error", errored);
      ws.removeEventListener("close", closed);
    };
    const opened = () => {
      done();
      resolve(ws);
    };
    /** @param {Event} event */
    const errored = (event) => {
      failure = errorText(event);
    };
    const closed = () => {
      done();
      const status = /Unexpected server response: (\d{3})/.exec(failure);
      if (status) {
        reject(new HandshakeRefused(status[1], `${url} refused the connection: HTTP ${status[1]}`));
      } else {
        reject(new ConnectionLost(`cannot connect to ${url}${failure ? `: ${failure}` : ""}`));
      }
    };
    ws.addEventListener("open", opened);
    ws.addEventListener("error", errored);
    ws.addEventListener("close", closed);
  });
}

/**
 * What an error event says (the `ws` package's carry a message; a browser's nothing).
 *
 * @param {Event} event
 * @returns {string}
 */
export function errorText(event) {
  const detail = /** @type {{message?: unknown, error?: {message?: unknown}}} */ (/** @type {unknown} */ (event));
  const text = detail.message ?? detail.error?.message;
  return typeof text === "string" ? text : "";
}
