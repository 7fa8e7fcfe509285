// The dashboard's entry: find whether a sign-in is needed, then show the view the URL's
// hash names (#fleet, #tasks, #schedules, #services, #keys; #tasks/<id>, #worker/<id>), all fed by
// one live connection.

import { about, claims, isAdmin, keepRenewed, onSignOut, signOut, token } from "./api.js";
import { fill, h } from "./dom.js";
import { showFleet } from "./fleet.js";
import { showKeys } from "./keys.js";
import { Feed } from "./live.js";
import { offer } from "./kite.js";
import { showSchedules } from "./schedules.js";
import { showServices } from "./services.js";
import { showSignIn } from "./signin.js";
import { showTask } from "./task.js";
import { showTasks } from "./tasks.js";
import { showWorker } from "./worker.js";

const VIEWS = { fleet: showFleet, tasks: showTasks, schedules: showSchedules, services: showServices, keys: showKeys };
const app = /** @type {HTMLElement} */ (document.getElementById("app"));
const nav = /** @type {HTMLElement} */ (document.getElementById("nav"));
const who = /** @type {HTMLElement} */ (document.getElementById("who"));
const live = /** @type {HTMLElement} */ (document.getElementById("live"));
const signOutButton = /** @type {HTMLButtonElement} */ (document.getElementById("signout"));
const keysLink = /** @type {HTMLElement} */ (nav.querySelector("a[data-view=keys]"));
const feed = new Feed();
/** @type {(() => void) | null} */
let stopView = null;
let auth = "keys"; // the credential the manager takes (about.json), for the sign-in's words
/** @type {Promise<() => void> | null} the tab's registration as a service (kite.js) */
let kite = null;
let signedIn = false;
/** @type {(() => void) | null} stops renewing the token */
let stopRenewing = null;

feed.addEventListener("state", (event) => {
  const on = /** @type {CustomEvent} */ (event).detail === "on";
  live.hidden = false;
  live.className = `live ${on ? "on" : "off"}`;
  live.textContent = on ? "live" : "reconnecting";
});

onSignOut((why) => {
  signedIn = false;
  stopRenewing?.();
  stopRenewing = null;
  feed.stop();
  kite?.then((stop) => stop());
  kite = null;
  stopView?.();
  stopView = null;
  nav.hidden = true;
  live.hidden = true;
  signOutButton.hidden = true;
  who.textContent = "";
  showSignIn(app, why, enter, auth);
});

signOutButton.addEventListener("click", () => signOut(""));
window.addEventListener("hashchange", route);

/** Signed in (or no sign-in needed): the header, the feed, the view. */
function enter() {
  signedIn = true;
  nav.hidden = false;
  const holder = claims();
  who.textContent = holder ? `${holder.sub ?? "?"} (${holder.role ?? "user"})` : token() ? "signed in" : "";
  signOutButton.hidden = !token();
  // Keys are an admin's, and only where the manager issues them (a token it signed).
  keysLink.hidden = !(holder && isAdmin());
  stopRenewing = keepRenewed();
  feed.start();
  kite = offer(holder?.sub ?? "local", /** @type {HTMLElement} */ (document.getElementById("kite")), /** @type {HTMLElement} */ (document.getElementById("notes")));
  route();
}

function route() {
  if (!signedIn) return;
  const [name, id] = (location.hash.replace(/^#/, "") || "fleet").split("/");
  const section = name === "worker" ? "fleet" : name; // a worker's view is the fleet's
  for (const link of nav.querySelectorAll("a")) link.classList.toggle("current", link.dataset.view === section);
  stopView?.();
  if (name === "tasks" && /^\d+$/.test(id ?? "")) {
    stopView = showTask(app, feed, Number(id));
    return;
  }
  if (name === "worker" && /^\d+$/.test(id ?? "")) {
    stopView = showWorker(app, feed, Number(id)); // an admin's (it says so to anyone else)
    return;
  }
  const view = (name === "keys" && keysLink.hidden ? null : VIEWS[/** @type {keyof typeof VIEWS} */ (name)]) ?? showFleet;
  stopView = view(app, feed);
}

/** Straight to the views when a token is held or none is needed: no call first. A token
 * that no longer holds (or a shared secret the tab lacks) is found by the views' first
 * call or the feed's refused connection, which signs the tab out (api.js). */
async function start() {
  try {
    const served = await about();
    document.title = `herder ${served.daemon}`;
    if (served.daemon !== "manager") {
      (await import("../agent/page.js")).showAgent(app, served); // the agent's own page
      return;
    }
    auth = served.auth;
    if (!token() && served.auth !== "none") {
      signOut(""); // shows the form, without a refused call first
      return;
    }
  } catch (error) {
    fill(app, h("p", { className: "error" }, `This page needs a herder manager: ${error instanceof Error ? error.message : error}`));
    return;
  }
  enter();
}

start();
