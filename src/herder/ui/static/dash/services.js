// Services: the manager's registry under a query (a prefix of the keys), live. The page
// watches first (WS /services/watch), then reads what is there (GET /services), so that
// nothing registered in between is missed; each event adds or removes its row.

import { ApiError, openSocket, request } from "./api.js";
import { ago, fill, h } from "./dom.js";

const LIMIT = 1000;

/**
 * @param {HTMLElement} root
 * @returns {() => void} stops the view
 */
export function showServices(root) {
  const body = h("tbody");
  const state = h("span", { className: "muted", id: "services-state" });
  const query = h("input", { id: "services-query", value: "/*", size: 30 });
  const form = h("form", { className: "row", id: "services-form" }, h("label", {}, "Key prefix ", query), h("button", { type: "submit" }, "Watch"), state);
  /** @type {Map<string, HTMLElement>} by registration id */
  const rows = new Map();
  /** @type {WebSocket | null} */
  let socket = null;
  fill(
    root,
    h("div", { className: "row" }, h("h2", {}, "Services")),
    form,
    h("table", { id: "services" }, h("thead", {}, h("tr", {}, ["Key", "Address", "Owner", "Metadata", "Registered", "Expires"].map((t) => h("th", {}, t)))), body),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    watch(query.value.trim());
  });

  /** @param {string} prefix */
  function watch(prefix) {
    socket?.close(1000, "another query");
    rows.clear();
    fill(body);
    state.textContent = "connecting…";
    const watching = openSocket(`/services/watch?${new URLSearchParams({ query: prefix })}`);
    socket = watching;
    watching.onmessage = (message) => {
      const { event, service } = JSON.parse(message.data);
      if (event === "registered") place(service);
      else remove(service.id);
    };
    watching.onclose = () => {
      if (socket === watching) state.textContent = "not live: press Watch to see it again";
    };
    watching.onopen = async () => {
      state.textContent = "live";
      try {
        const found = await request("GET", `/services?${new URLSearchParams({ query: prefix, limit: String(LIMIT) })}`);
        for (const service of found.services) if (!rows.has(service.id)) place(service);
        if (rows.size === 0) empty();
      } catch (error) {
        state.textContent = error instanceof ApiError ? error.message : "";
      }
    };
  }

  function empty() {
    body.append(h("tr", { className: "empty" }, h("td", { colSpan: 6, className: "muted" }, "No services under this prefix.")));
  }

  /** @param {any} service */
  function place(service) {
    body.querySelector("tr.empty")?.remove();
    const row = h(
      "tr",
      { dataset: { service: service.id } },
      h("td", {}, h("code", {}, service.key)),
      h("td", {}, service.relay ? h("span", { className: "badge active", title: "reached through the manager (WS /relay/<id>)" }, "relayed") : service.url),
      h("td", {}, service.owner ?? ""),
      h("td", { className: "muted" }, h("code", {}, JSON.stringify(service.metadata ?? {}).slice(0, 120))),
      h("td", {}, ago(service.registered_at)),
      h("td", {}, service.expires_at ? new Date(service.expires_at * 1000).toLocaleTimeString() : "with its link"),
    );
    const old = rows.get(service.id);
    if (old) old.replaceWith(row);
    else body.append(row);
    rows.set(service.id, row);
  }

  /** @param {string} id */
  function remove(id) {
    rows.get(id)?.remove();
    rows.delete(id);
    if (rows.size === 0) empty();
  }

  watch(query.value);
  return () => {
    const closing = socket;
    socket = null;
    closing?.close(1000, "left the page");
  };
}
