// The agent page's one door to its agent: calls, the token, the sockets.
//
// An agent's credential is its shared secret (auth_token) or, when it works for a
// manager with keys, an access token of that manager: either is pasted in and kept in
// this tab's sessionStorage (never a cookie, never the key itself), as on the manager's
// page. Its own module, not dash/api.js: a refusal here must bring back the agent's
// sign-in, not the manager's.

import { ApiError, base } from "../dash/api.js";

export { ApiError };

const TOKEN_KEY = "herder.token"; // the manager's page keeps its token under the same name

/** @type {((why: string) => void) | null} */
let onRefused = null;

/** Who to tell when the agent refuses the token (the page shows its sign-in). @param {(why: string) => void} fn */
export function whenRefused(fn) {
  onRefused = fn;
}

export function heldToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** @param {string | null} value */
export function keepToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * A call to the agent's API: the answer's JSON. A 401 forgets the token and tells the page.
 * @param {string} method
 * @param {string} path from the root, "/pools/web/scale"
 * @param {any} [body]
 */
export async function call(method, path, body) {
  const held = heldToken();
  /** @type {Record<string, string>} */
  const headers = held ? { Authorization: `Bearer ${held}` } : {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const url = new URL(path.replace(/^\//, ""), base);
  const init = { method, headers, credentials: /** @type {RequestCredentials} */ ("omit"), cache: /** @type {RequestCache} */ ("no-store") };
  const answer = await fetch(url, body === undefined ? init : { ...init, body: JSON.stringify(body) });
  const doc = await answer.json().catch(() => null);
  if (answer.status === 401) {
    keepToken(null);
    onRefused?.(held ? `Signed out: ${doc?.message ?? "the agent refused the token"}` : "");
    throw new ApiError(401, doc);
  }
  if (!answer.ok) throw new ApiError(answer.status, doc);
  return doc;
}

/**
 * A WebSocket to the agent; the token goes as the subprotocol herder.bearer.<token>
 * (a browser cannot set Authorization on a WebSocket: docs/protocol.md §2.2).
 * @param {string} path from the root, "/events"
 */
export function socket(path) {
  const url = new URL(path.replace(/^\//, ""), base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const held = heldToken();
  return new WebSocket(url, held ? ["herder", `herder.bearer.${held}`] : []);
}
