// Finding services through a manager's registry, and being found (herder.rpc.discovery
// in Python): the registry lives on the manager's /rpc as `find_services`,
// `register_service`, `renew_service` and `deregister_service`, and its changes stream
// from `WS /services/watch?query=`.
//
// Keys are the seed's seven parts, `/user/env/name/version/region/host/id`; a query is a
// prefix of one (`/alice/prod/math`), whose version part may be a range (`>=1.2,<2`).

import { ConnectionLost, ServiceNotFound, TokenRefused } from "./errors.js";
import { BACKOFF_INITIAL_S, Peer, connect } from "./peer.js";
import { errorText, newSocket } from "./socket.js";

/** Attempts at buying a token while the manager is away (5xx, unreachable). */
const TOKEN_ATTEMPTS = 3;

/**
 * @typedef {import("./peer.js").ConnectOptions} ConnectOptions
 * @typedef {import("./peer.js").TokenSource} TokenSource
 * @typedef {import("./socket.js").WebSocketConstructor} WebSocketConstructor
 */

/**
 * A registration as the registry holds it.
 * @typedef {object} ServiceDocument
 * @property {string} id the key's last part
 * @property {string} key
 * @property {string} url where it is reached (for a relayed one, the manager's relay as
 *   the manager saw itself: dial it through the manager that was asked instead)
 * @property {boolean} relay registered without a URL: reached through the manager's
 *   `/relay/<id>`, with the manager's credential
 * @property {Record<string, unknown>} metadata
 * @property {string} owner
 * @property {number} registered_at
 * @property {number | null} expires_at null: kept alive by its link
 */

/**
 * Where a manager is, and who asks.
 * @typedef {object} ManagerOptions
 * @property {string} [manager] its URL: http(s)://host:port, or its ws(s)://.../rpc;
 *   default, in a page, the page's own origin
 * @property {TokenSource} [token] an access token (or the manager's shared secret)
 * @property {string} [key] a key the manager issued: buys the access token instead
 * @property {WebSocketConstructor} [WebSocket]
 * @property {typeof fetch} [fetch] for buying tokens (default the global fetch)
 */

/**
 * A manager's HTTP base from either of its URLs: `ws://h:p/rpc` and `http://h:p/` both
 * give `http://h:p` (a path prefix before /rpc is kept).
 *
 * @param {string | undefined} url default: the page's own origin
 * @returns {string}
 */
export function managerBaseUrl(url) {
  const given = url ?? globalThis.location?.origin;
  if (!given) throw new TypeError("no manager: pass {manager: 'http://host:port'}");
  const match = /^(https?|wss?):\/\/(.*)$/i.exec(given.trim());
  if (!match) throw new TypeError(`${JSON.stringify(given)}: a manager's URL is http(s):// or ws(s)://`);
  const scheme = { http: "http", https: "https", ws: "http", wss: "https" }[match[1].toLowerCase()];
  const rest = match[2].replace(/\/+$/, "").replace(/\/rpc$/, "");
  return `${scheme}://${rest}`;
}

/**
 * The WebSocket URL of a manager's `/rpc` (where the registry's methods are).
 * @param {string | undefined} url
 */
export function managerRpcUrl(url) {
  return `${managerBaseUrl(url).replace(/^http/, "ws")}/rpc`;
}

/**
 * Where a relayed service is dialled: `ws(s)://<manager>/relay/<id>`.
 * @param {string | undefined} manager
 * @param {string} id the registration's id
 */
export function relayUrl(manager, id) {
  return `${managerBaseUrl(manager).replace(/^http/, "ws")}/relay/${encodeURIComponent(id)}`;
}

/**
 * A fresh access token for a key the manager issued (`POST /auth/token`), tried again
 * while the manager is away. Keys go nowhere else: what travels afterwards is the token.
 *
 * @param {string | undefined} manager
 * @param {string} key
 * @param {{fetch?: typeof fetch}} [options]
 * @returns {Promise<{token: string, expires_at: number}>}
 * @throws {TokenRefused} the manager refused the key (401), has no auth (404), or failed
 * @throws {ConnectionLost} the manager could not be reached, even after retries
 */
export async function buyToken(manager, key, options = {}) {
  const base = managerBaseUrl(manager);
  const send = options.fetch ?? globalThis.fetch;
  for (let attempt = 1; ; attempt++) {
    let answer;
    try {
      answer = await send(`${base}/auth/token`, { method: "POST", headers: { Authorization: `Bearer ${key}` } });
    } catch (error) {
      if (attempt >= TOKEN_ATTEMPTS) {
        throw new ConnectionLost(`cannot reach the manager at ${base}: ${error instanceof Error ? error.message : error}`);
      }
      await sleep(BACKOFF_INITIAL_S * 2 ** (attempt - 1));
      continue;
    }
    if (answer.status >= 500 && attempt < TOKEN_ATTEMPTS) {
      await sleep(BACKOFF_INITIAL_S * 2 ** (attempt - 1));
      continue;
    }
    const text = await answer.text();
    let document = null;
    try {
      document = JSON.parse(text);
    } catch {
      // not JSON: reported below with the text itself
    }
    if (answer.status === 200 && typeof document?.token === "string") {
      return { token: document.token, expires_at: Number(document.expires_at) };
    }
    const code = typeof document?.error === "string" ? document.error : String(answer.status);
    const detail = typeof document?.message === "string" ? document.message : text.slice(0, 200);
    throw new TokenRefused(answer.status, code, detail);
  }
}

/**
 * The credential to present to the manager: a function buying a token with `key` (one
 * per connection, so a reconnection never presents an expired one), else `token`.
 *
 * @param {ManagerOptions} options
 * @returns {TokenSource}
 */
export function managerCredential(options) {
  const { key, manager } = options;
  if (key == null) return options.token ?? null;
  return async () => (await buyToken(manager, key, { fetch: options.fetch })).token;
}

/**
 * A connection to the manager's `/rpc` with the caller's credential.
 *
 * @param {ManagerOptions & ConnectOptions} [options]
 * @returns {Promise<Peer>}
 */
export function connectManager(options = {}) {
  return connect(managerRpcUrl(options.manager), { ...options, token: managerCredential(options) });
}

/**
 * The live registrations under `query` (`/alice/prod/math`, `/alice/prod/math/>=1.2,<2`).
 *
 * @param {string} query
 * @param {ManagerOptions & {limit?: number}} [options]
 * @returns {Promise<ServiceDocument[]>}
 */
export async function find(query, options = {}) {
  const registry = await connectManager({ ...options, reconnect: false });
  try {
    return await registry.callWith("find_services", [query, ...(options.limit ? [options.limit] : [])]);
  } finally {
    registry.close();
  }
}

/**
 * Connect to a live instance of the service `query` names, found in the manager's
 * registry (in a random order, so that clients spread over instances; the first that
 * answers wins). With `reconnect` (the default here), when that instance goes away the
 * peer asks the registry again and connects to whichever instance is live then, woken
 * at once by the registry's watch when one registers.
 *
 * @param {string} query
 * @param {ManagerOptions & ConnectOptions & {serviceToken?: TokenSource}} [options]
 *   `token`/`key` are for the manager; `serviceToken` is presented to the service
 * @returns {Promise<Peer>}
 * @throws {ServiceNotFound} no live instance is registered, or none answered
 */
export async function dial(query, options = {}) {
  const { serviceToken, ...rest } = options;
  /** @type {{close: () => void} | null} */
  let watcher = null;
  let asked = false; // the registry answered: a failure is then the instances'
  const locate = async () => {
    // One credential for the registry and the relay (a key buys one token, not two).
    const credential = await resolve(managerCredential(rest));
    const found = await find(query, { ...rest, key: undefined, token: credential });
    asked = true;
    if (found.length === 0) throw new ServiceNotFound(`no live instance of ${query}: none is registered`);
    const direct = await resolve(serviceToken ?? null);
    shuffle(found);
    return found.map((service) =>
      service.relay === true
        ? { url: relayUrl(rest.manager, service.id), token: credential }
        : { url: service.url, token: direct },
    );
  };
  const peer = new Peer(locate, { reconnect: true, ...rest, token: null });
  try {
    await peer.start();
  } catch (error) {
    if (asked && error instanceof ConnectionLost) throw new ServiceNotFound(`no live instance of ${query}: ${error.message}`);
    throw error;
  }
  if (peer.options.reconnect) {
    const stopWatching = () => {
      watcher?.close();
      watcher = null;
    };
    peer.addEventListener("close", () => {
      if (watcher || peer.closed) return;
      try {
        watcher = watch(query, { ...rest, onEvent: (event) => event.event === "registered" && peer.reconnectNow() });
      } catch {
        watcher = null; // no watch: the backoff alone brings the peer back
      }
    });
    peer.addEventListener("open", stopWatching);
    peer.addEventListener("end", stopWatching);
  }
  return peer;
}

/**
 * @typedef {object} WatchEvent
 * @property {"registered" | "deregistered"} event
 * @property {ServiceDocument} service
 */

/**
 * Follow the registrations under `query` as they come and go (`WS /services/watch`).
 *
 * Events are `{"event": "registered" | "deregistered", "service": {...}}`. The watch
 * ends when the manager goes away (`onClose` says why); it does not come back by itself.
 *
 * @param {string} query
 * @param {ManagerOptions & {onEvent: (event: WatchEvent) => void, onOpen?: () => void, onClose?: (reason: string) => void, tokenIn?: import("./socket.js").TokenIn}} options
 * @returns {{close: () => void}}
 */
export function watch(query, options) {
  const base = managerBaseUrl(options.manager).replace(/^http/, "ws");
  const url = `${base}/services/watch?query=${encodeURIComponent(query)}`;
  /** @type {WebSocket | null} */
  let ws = null;
  let closed = false;
  const open = (/** @type {string | null} */ token) => {
    if (closed) return;
    ws = newSocket(url, { WebSocket: options.WebSocket, token, tokenIn: options.tokenIn });
    follow(ws);
  };
  const credential = managerCredential(options);
  Promise.resolve(typeof credential === "function" ? credential() : credential)
    .then(open)
    .catch((error) => options.onClose?.(`the watch could not start: ${error instanceof Error ? error.message : error}`));
  /** @param {WebSocket} ws */
  const follow = (ws) => {
    let failure = "";
    ws.addEventListener("open", () => options.onOpen?.());
    ws.addEventListener("message", (event) => {
      try {
        options.onEvent(JSON.parse(typeof event.data === "string" ? event.data : new TextDecoder().decode(event.data)));
      } catch (error) {
        failure = `a watch event that is not JSON: ${error instanceof Error ? error.message : error}`;
        ws.close();
      }
    });
    ws.addEventListener("error", (event) => {
      failure ||= errorText(event);
    });
    ws.addEventListener("close", (event) => options.onClose?.(failure || `closed (code ${event.code})`));
  };
  return {
    close: () => {
      closed = true;
      ws?.close();
    },
  };
}

/**
 * A registration in a manager's registry, kept up by `register` until `close()`.
 */
export class Registration extends EventTarget {
  /**
   * @param {Peer} peer
   * @param {string} key
   * @param {{url: string | null, metadata: Record<string, unknown>, ttl: number}} settings
   */
  constructor(peer, key, settings) {
    super();
    this.peer = peer;
    this.key = key;
    this.url = settings.url;
    this.metadata = settings.metadata;
    this.ttl = settings.ttl;
    /** @type {ServiceDocument | null} the registry's document, from the last registration */
    this.document = null;
    this.closed = false;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this._renewer = undefined;
    this._onOpen = () => {
      this._register().catch((error) => this._failed(error));
    };
  }

  /** The registration's id (the key's last part). */
  get id() {
    return this.key.split("/").pop() ?? "";
  }

  async _register() {
    if (this.closed) return;
    const { key, url, metadata, ttl } = this;
    this.document = await this.peer.callWith("register_service", [key, url, metadata, ttl]);
    this.dispatchEvent(new CustomEvent("registered", { detail: this.document }));
  }

  /** @param {unknown} error */
  _failed(error) {
    this.dispatchEvent(new CustomEvent("error", { detail: error }));
  }

  async _start() {
    await this._register();
    // A new link (the peer reconnected) registers again: a link-kept registration
    // dropped out with the old one, and a manager started again forgot them all.
    this.peer.addEventListener("open", this._onOpen);
    this.peer.addEventListener("end", () => clearInterval(this._renewer), { once: true });
    if (this.ttl > 0) {
      this._renewer = setInterval(() => {
        if (!this.peer.connected) return; // the next link registers anew
        this.peer.callWith("renew_service", [this.id, this.ttl]).then(
          (document) => {
            this.document = document;
            this.dispatchEvent(new CustomEvent("renewed", { detail: document }));
          },
          () => this._onOpen(), // gone meanwhile (the manager started again): register anew
        );
      }, (this.ttl * 1000) / 3);
    }
  }

  /** Deregister: the service drops out of the registry now. */
  async close() {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this._renewer);
    this.peer.removeEventListener("open", this._onOpen);
    if (this.peer.connected) {
      try {
        await this.peer.callWith("deregister_service", [this.id], { timeout: 10 });
      } catch {
        // the link went away meanwhile: a link-kept registration went with it
      }
    }
  }
}

/**
 * Register this side in the manager's registry under `key` (the seven parts:
 * `/alice/dev/page/1.0.0/local/browser/tab-1`), over `peer`, a connection to the
 * manager's /rpc made with the user's credential (`connectManager({key})` buys it with
 * their key). Without `url`, callers are relayed by the manager over this very link to
 * the methods `peer.handle` offers: how a browser, which cannot listen, is called.
 *
 * With `ttl` 0 (the default) the registration lives as long as the link; otherwise it
 * is renewed every `ttl / 3` seconds. Either way a reconnecting peer registers again on
 * each new link. `await registration.close()` deregisters.
 *
 * @param {Peer} peer
 * @param {string} key
 * @param {{ttl?: number, url?: string | null, metadata?: Record<string, unknown>}} [options]
 * @returns {Promise<Registration>}
 * @throws {import("./errors.js").RemoteError} the manager refused (another user's name, a bad key...)
 */
export async function register(peer, key, options = {}) {
  if (!options.url) {
    // Callers reach a relayed page as the key's name (the relay's welcome says so) and
    // may use it as their target: the page answers to it as to its own.
    const [, , , name, version] = key.split("/");
    peer.info.name ??= name;
    peer.info.version ??= version;
  }
  const registration = new Registration(peer, key, {
    url: options.url ?? null,
    metadata: options.metadata ?? {},
    ttl: options.ttl ?? 0,
  });
  await registration._start();
  return registration;
}

/**
 * The token a source gives now.
 * @param {TokenSource} source
 * @returns {Promise<string | null>}
 */
async function resolve(source) {
  return typeof source === "function" ? await source() : source;
}

/** @param {number} seconds */
function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

/**
 * Shuffle in place (Fisher-Yates).
 * @template T
 * @param {T[]} items
 */
function shuffle(items) {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}
