// The dashboard's one door to the daemon that served it: HTTP calls, the live feed's
// WebSocket, and the session's token. Switching what lies behind (more of herder.js)
// changes this file only.
//
// The token lives in this tab's sessionStorage, never in a cookie: a cookie would be
// sent by the browser on any site's request to the manager (CSRF), and a token in
// localStorage would outlive the tab. Requests go to the page's own origin only.

const TOKEN_KEY = "herder.token";
const RENEW_AT = 0.8; // of a token's life: renewed then, while it still holds
const RENEW_RETRY_MS = 10000; // a renewal that did not reach the manager is tried again

/** The daemon's root: the page is served at <root>/ui/. */
export const base = new URL("..", document.baseURI);

/** An error answer of the API: its status and the error document ({error, message, field}). */
export class ApiError extends Error {
  /** @param {number} status @param {any} doc */
  constructor(status, doc) {
    super(doc?.message ?? `HTTP ${status}`);
    this.status = status;
    this.doc = doc;
  }
}

/** A call was refused for want of valid credentials: the user is signed out. */
export class SignedOut extends Error {}

/** @type {Set<(why: string) => void>} */
const signOutListeners = new Set();

/** Called with a reason whenever the session ends (a 401, or the user's choice). */
export function onSignOut(listener) {
  signOutListeners.add(listener);
}

/** The session's token, or null. */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/**
 * What the held token says of its holder ({sub, role, ...}), for the page to show and
 * to offer only what the holder may do (the server decides anyway); null without one,
 * or for a shared secret.
 * @returns {any}
 */
export function claims() {
  const part = token()?.split(".")[1];
  if (!part) return null;
  try {
    return JSON.parse(atob(part.replace(/-/g, "+").replace(/_/g, "/")));
  } catch {
    return null;
  }
}

/** Whether the holder is an admin: an admin's token, a shared secret, or no auth at all. */
export function isAdmin() {
  const held = claims();
  return held === null || held.role === "admin";
}

/** End the session: forget the token, tell the views. @param {string} why */
export function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  for (const listener of signOutListeners) listener(why);
}

/**
 * Sign in with a key: it buys an access token (POST /auth/token, through herder.js), and
 * only the token is kept. A manager without keys but with a shared secret answers 404
 * there: the secret itself is then the bearer credential.
 * @param {string} key
 */
export async function signIn(key) {
  const given = key.trim();
  if (!given) throw new Error("paste a key first");
  // herder.js is loaded when a key is given, not with the page: a signed-in page starts sooner.
  const { buyToken, TokenRefused } = await import("../herder.js");
  let bought;
  try {
    bought = (await buyToken(base.origin + base.pathname.replace(/\/$/, ""), given)).token;
  } catch (error) {
    if (!(error instanceof TokenRefused) || error.status !== 404) throw error;
    bought = given;
  }
  sessionStorage.setItem(TOKEN_KEY, bought);
  try {
    await request("GET", "/tasks?limit=1");
  } catch (error) {
    sessionStorage.removeItem(TOKEN_KEY);
    throw error instanceof SignedOut ? new Error("the manager refused this key") : error;
  }
}

/**
 * Keep the session's token renewed while the tab is open: at RENEW_AT of its life it is
 * traded for a fresh one (POST /auth/token/renew, same user, role and key), so a tab
 * left open is not signed out when its hour is up. A refused renewal (401: the key was
 * revoked, or the token expired while the tab slept) signs the tab out, as any call
 * does. Only tokens the manager issued are renewed (not a shared secret); one it will
 * not renew (404: an older manager; 403: bought with no key) is kept until it expires.
 * @returns {() => void} stops renewing (a sign-out)
 */
export function keepRenewed() {
  /** @type {number | undefined} */
  let timer;
  let stopped = false;
  const plan = () => {
    const held = claims();
    if (stopped || typeof held?.exp !== "number") return;
    const issued = typeof held.iat === "number" ? held.iat : held.exp - 3600;
    const at = (issued + RENEW_AT * (held.exp - issued)) * 1000;
    timer = setTimeout(renew, Math.max(0, at - Date.now()));
  };
  const renew = async () => {
    const held = token();
    if (stopped || !held) return;
    try {
      const fresh = await request("POST", "/auth/token/renew");
      if (!stopped && token() === held) sessionStorage.setItem(TOKEN_KEY, fresh.token);
      plan();
    } catch (error) {
      // Refused for good (401 signed the tab out; 404 no such route; 403 not renewable);
      // the manager away or failing: try again while the token holds.
      if (error instanceof SignedOut || (error instanceof ApiError && error.status < 500)) return;
      const left = (claims()?.exp ?? 0) * 1000 - Date.now();
      if (!stopped && left > 0) timer = setTimeout(renew, Math.min(RENEW_RETRY_MS, left / 2));
    }
  };
  plan();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/**
 * Which daemon served the page, its version, and the credential it takes:
 * {daemon: "manager" | "agent", version, auth: "keys" | "token" | "secret" | "none"}.
 */
export async function about() {
  const answer = await fetch(new URL("ui/about.json", base), { credentials: "omit", cache: "no-store" });
  return answer.json();
}

/**
 * A call to the API: the answer's JSON (null when empty).
 * @param {string} method
 * @param {string} path from the root, "/tasks?limit=50"
 * @param {any} [body] sent as JSON
 * @throws {SignedOut} 401: the session is over (listeners were told)
 * @throws {ApiError} any other error answer
 */
export async function request(method, path, body) {
  const headers = /** @type {Record<string, string>} */ ({});
  const held = token();
  if (held) headers.Authorization = `Bearer ${held}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(new URL(path.replace(/^\//, ""), base), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  const text = await answer.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = { message: text.slice(0, 200) };
  }
  if (answer.status === 401) {
    signOut(held ? `Signed out: ${doc?.message ?? "the token was refused"}` : "");
    throw new SignedOut(doc?.message ?? "unauthorized");
  }
  if (!answer.ok) throw new ApiError(answer.status, doc);
  return doc;
}

/**
 * The live feed (WS /events). A browser cannot set Authorization on a WebSocket: the
 * token is offered as the subprotocol herder.bearer.<token> (docs/protocol.md §2.2).
 * @returns {WebSocket}
 */
export function openEvents() {
  return openSocket("/events");
}

/**
 * A WebSocket to a path of the daemon, with the session's token (as the subprotocol).
 * @param {string} path from the root, "/tasks/3/log"
 * @returns {WebSocket}
 */
export function openSocket(path) {
  const url = new URL(path.replace(/^\//, ""), base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const held = token();
  return new WebSocket(url, held ? ["herder", `herder.bearer.${held}`] : []);
}
