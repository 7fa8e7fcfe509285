// The agent's own page (its /ui/): its processes, pools and sessions, live over its WS /events.
// main.js hands over here when about.json says an agent serves the page.
//
// Signing in: an agent has no keys of its own to buy tokens with. Its credential is its
// shared secret (auth_token), or an access token of its manager (herder keys token)
// when it works for one with keys; the user pastes it, and it is kept in this tab's
// sessionStorage. An agent that asks for nothing (loopback, no token) opens at once.

import { fill, h } from "../dash/dom.js";
import { ApiError, call, heldToken, keepToken, whenRefused } from "./api.js";
import { AgentFeed } from "./feed.js";
import { showPools } from "./pools.js";
import { showProcesses } from "./processes.js";
import { showSessions } from "./sessions.js";

const VIEWS = { processes: showProcesses, pools: showPools, sessions: showSessions };
const byId = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {HTMLElement} root
 * @param {{daemon: string, version: string}} served
 */
export async function showAgent(root, served) {
  const nav = byId("nav");
  const live = byId("live");
  const who = byId("who");
  const signOutButton = /** @type {HTMLButtonElement} */ (byId("signout"));
  const feed = new AgentFeed();
  /** @type {(() => void) | null} */
  let stopView = null;
  let inside = false;

  fill(nav, Object.keys(VIEWS).map((name) => h("a", { href: `#${name}`, dataset: { view: name } }, name[0].toUpperCase() + name.slice(1))));
  feed.addEventListener("state", (event) => {
    const on = /** @type {CustomEvent} */ (event).detail === "on";
    live.hidden = false;
    live.className = `live ${on ? "on" : "off"}`;
    live.textContent = on ? "live" : "reconnecting";
  });

  function route() {
    if (!inside) return;
    const name = location.hash.replace(/^#/, "") || "processes";
    for (const link of nav.querySelectorAll("a")) link.classList.toggle("current", link.dataset.view === name);
    stopView?.();
    stopView = (VIEWS[/** @type {keyof typeof VIEWS} */ (name)] ?? showProcesses)(root, feed);
  }

  function enter() {
    inside = true;
    nav.hidden = false;
    who.textContent = `agent ${location.host} · herder ${served.version}`;
    signOutButton.hidden = !heldToken();
    feed.start();
    route();
  }

  /** @param {string} why */
  function leave(why) {
    inside = false;
    feed.stop();
    stopView?.();
    stopView = null;
    nav.hidden = live.hidden = signOutButton.hidden = true;
    who.textContent = "";
    showSignIn(root, why, enter);
  }

  whenRefused(leave);
  signOutButton.addEventListener("click", () => {
    keepToken(null);
    leave("");
  });
  window.addEventListener("hashchange", route);
  try {
    await call("GET", "/"); // with the token held, or none: a 401 shows the sign-in (leave)
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      fill(root, h("p", { className: "error" }, `This agent did not answer: ${error instanceof Error ? error.message : error}`));
    }
    return;
  }
  enter();
}

/**
 * @param {HTMLElement} root
 * @param {string} why shown above the form (why the tab was signed out), or ""
 * @param {() => void} done
 */
function showSignIn(root, why, done) {
  const secret = h("input", { type: "password", id: "agent-token", name: "token", autocomplete: "off", required: true });
  secret.style.width = "100%";
  const error = h("p", { className: "error", id: "signin-error" });
  const form = h(
    "form",
    { className: "card signin", id: "signin" },
    h("h2", {}, "Sign in to this agent"),
    why ? h("p", { className: "error", id: "signed-out" }, why) : null,
    h("p", { className: "muted" }, "Paste the agent's token (its auth_token), or an access token of its manager (herder keys token). It is kept for this tab only."),
    secret,
    h("div", { className: "row" }, h("button", { type: "submit", className: "primary" }, "Sign in")),
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    keepToken(secret.value.trim());
    try {
      await fetchChecked();
      secret.value = "";
      done();
    } catch {
      keepToken(null);
      error.textContent = "the agent refused this token";
    }
  });
  fill(root, form);
  secret.focus();
}

/** The token tried without the page's refusal handling (a wrong one stays on the form). */
async function fetchChecked() {
  const answer = await fetch(new URL("list-processes", new URL("..", document.baseURI)), {
    headers: { Authorization: `Bearer ${heldToken()}` },
    credentials: "omit",
    cache: "no-store",
  });
  if (!answer.ok) throw new Error(String(answer.status));
}
