// The agent's sessions (docs/sessions.md): each host process a client opened for a
// product, whether a client is attached, the events it keeps for one that left. The
// feed brings the whole list whenever a session opens, is attached or detached, or
// ends; sessions are opened and closed over the wire protocol, not from this page.

import { fill, h, listen } from "../dash/dom.js";
import { badge } from "./show.js";

/**
 * @param {HTMLElement} root
 * @param {import("./feed.js").AgentFeed} feed
 * @returns {() => void} stops the view
 */
export function showSessions(root, feed) {
  const body = h("tbody");
  const count = h("span", { className: "muted", id: "sessions-count" });
  fill(
    root,
    h("div", { className: "row" }, h("h2", {}, "Sessions"), count),
    h(
      "table",
      { id: "sessions" },
      h("thead", {}, h("tr", {}, ["Session", "Product", "State", "Client", "Opened", "PID", "Buffered"].map((t) => h("th", {}, t)))),
      body,
    ),
  );

  function render() {
    const sessions = feed.sessions;
    count.textContent = `${sessions.length} open on this agent`;
    fill(
      body,
      sessions.length === 0
        ? h("tr", {}, h("td", { colSpan: 7, className: "muted" }, "No sessions."))
        : sessions.map((/** @type {any} */ s) =>
            h(
              "tr",
              { dataset: { session: s.id, state: s.state } },
              h("td", {}, h("code", {}, s.id)),
              h("td", { className: "product" }, s.product),
              h("td", { className: "state" }, badge(s.state)),
              h("td", { className: "client" }, s.attached ? "attached" : "detached"),
              h("td", {}, new Date(s.created_at * 1000).toLocaleString()),
              h("td", { className: "num" }, s.pid ?? "–"),
              h("td", { className: "num buffered" }, s.buffered),
            ),
          ),
    );
  }

  const unlisten = listen(feed, { change: render });
  render();
  return unlisten;
}
