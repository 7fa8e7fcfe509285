// The tab as a service (the seed's browser kite): it offers `alert`, registers in the
// manager's registry without a URL, and the manager relays callers' calls to it over
// the tab's own link. `herder call /alice/ui/dashboard alert "the render is done"` shows
// a note in one of alice's dashboard tabs (a call reaches one instance of a name).

import { token } from "./api.js";
import { h } from "./dom.js";

const SHOWN_MS = 15000; // how long a note stays unless closed

/**
 * Offer the tab's methods and register it; a handle to stop. Failures are shown, not
 * thrown: the dashboard works without its kite.
 * @param {string} user whose name the key starts with (a user registers only under it)
 * @param {HTMLElement} label where the tab's key is shown
 * @param {HTMLElement} notes where calls' notes appear
 * @returns {Promise<() => void>}
 */
export async function offer(user, label, notes) {
  const { connectManager, register } = await import("../herder.js");
  const id = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  const key = `/${user}/ui/dashboard/1.0.0/browser/tab/${id}`;
  let link;
  try {
    // The token as it is at each connection: a reconnection presents the tab's current one.
    link = await connectManager({ token: () => token(), reconnect: true });
    link.handle("alert", (/** @type {unknown} */ text, /** @type {unknown} */ title) => {
      note(notes, String(text), title == null ? "" : String(title));
      return "shown";
    });
    await register(link, key, { metadata: { title: document.title, offers: ["alert"] } });
  } catch (error) {
    link?.close();
    label.textContent = "";
    label.title = `this tab could not register: ${error instanceof Error ? error.message : error}`;
    return () => {};
  }
  label.textContent = `tab ${id}`;
  label.title = `This tab is the service ${key}: herder call /${user}/ui/dashboard alert "text" shows a note here.`;
  return () => {
    label.textContent = "";
    link.close();
  };
}

/** @param {HTMLElement} notes @param {string} text @param {string} title */
function note(notes, text, title) {
  const close = h("button", { type: "button", className: "close", title: "close" }, "×");
  const el = h("div", { className: "note", role: "status" }, title ? h("strong", {}, title, " ") : null, text, close);
  close.addEventListener("click", () => el.remove());
  notes.append(el);
  setTimeout(() => el.remove(), SHOWN_MS);
}
