// The agent's pools: each with its instances (state, port, in flight, requests,
// restarts), the requests waiting, its cold starts, its error; scale, drain, resume, delete.

import { fill, h, listen } from "../dash/dom.js";
import { call } from "./api.js";
import { badge, failure } from "./show.js";

/**
 * @param {HTMLElement} root
 * @param {import("./feed.js").AgentFeed} feed
 * @returns {() => void} stops the view
 */
export function showPools(root, feed) {
  const list = h("div", { id: "pools" });
  const error = h("p", { className: "error", id: "pools-error" });
  fill(root, h("div", { className: "row" }, h("h2", {}, "Pools")), error, list);
  /** @type {Map<string, HTMLElement>} by name: a pool's card, kept while it exists (a scale form being typed in survives a change) */
  const cards = new Map();

  function render() {
    for (const [name, card] of cards) {
      if (!feed.pools.has(name)) {
        card.remove();
        cards.delete(name);
      }
    }
    for (const pool of feed.pools.values()) {
      let card = cards.get(pool.name);
      if (!card) {
        card = newCard(pool);
        cards.set(pool.name, card);
        list.append(card);
      }
      update(card, pool);
    }
    const empty = list.querySelector(".empty");
    if (feed.pools.size === 0 && !empty) list.append(h("p", { className: "muted empty" }, "No pools."));
    if (feed.pools.size > 0) empty?.remove();
  }

  /** The card's fixed parts: the title, the actions, the scale form. @param {any} pool */
  function newCard(pool) {
    const name = pool.name;
    const min = h("input", { type: "number", min: 0, className: "min", name: "min_instances", value: pool.spec.min_instances });
    const max = h("input", { type: "number", min: 1, className: "max", name: "max_instances", value: pool.spec.max_instances });
    min.style.width = max.style.width = "5rem";
    const scale = h(
      "form",
      { className: "row scale" },
      h("label", {}, "min ", min),
      h("label", {}, "max ", max),
      h("button", { type: "submit", className: "primary" }, "Scale"),
    );
    scale.style.marginTop = ".8rem";
    scale.addEventListener("submit", (event) => {
      event.preventDefault();
      act(name, "scale", { min_instances: Number(min.value), max_instances: Number(max.value) });
    });
    return h(
      "div",
      { className: "card pool", dataset: { pool: name } },
      h("div", { className: "row" }, h("h2", {}, name), h("span", { className: "state" }), h("span", { className: "muted where" }),
        h("span", { className: "spacer" }),
        h("button", { type: "button", className: "drain", onclick: () => act(name, "drain") }, "Drain"),
        h("button", { type: "button", className: "resume", onclick: () => act(name, "resume") }, "Resume"),
        h("button", { type: "button", className: "delete", onclick: () => confirm(`Delete pool ${name}?`) && act(name, "delete") }, "Delete")),
      h("p", { className: "muted facts" }, h("span", { className: "counts" }), " · ", h("span", { className: "cold-starts" })),
      h("p", { className: "error" }),
      h(
        "table",
        { className: "instances" },
        h("thead", {}, h("tr", {}, ["Instance", "State", "Process", "Port", "PID", "In flight", "Requests", "Restarts", "Error"].map((t) => h("th", {}, t)))),
        h("tbody"),
      ),
      scale,
    );
  }

  /** What changes: the state, the figures, the instances. @param {HTMLElement} card @param {any} pool */
  function update(card, pool) {
    card.dataset.state = pool.state;
    const part = (/** @type {string} */ selector) => /** @type {HTMLElement} */ (card.querySelector(selector));
    fill(part(".state"), badge(pool.state));
    part(".where").textContent = pool.url ? `${pool.url} · ${pool.host}` : pool.host;
    part(".counts").textContent =
      `${pool.instances.length} of ${pool.spec.min_instances}–${pool.spec.max_instances} instances · ${pool.waiting} waiting`;
    part(".cold-starts").textContent = `${pool.cold_starts} cold start${pool.cold_starts === 1 ? "" : "s"}`;
    part(".cold-starts").title = "instances started because requests waited with none free";
    part("p.error").textContent = pool.error ?? "";
    part(".drain").hidden = pool.state !== "active";
    part(".resume").hidden = pool.state === "active";
    fill(
      part(".instances tbody"),
      pool.instances.length === 0
        ? h("tr", {}, h("td", { colSpan: 9, className: "muted" }, "No instance runs: the next request starts one."))
        : pool.instances.map((/** @type {any} */ i) =>
            h(
              "tr",
              { dataset: { instance: i.id, state: i.state } },
              h("td", {}, i.id),
              h("td", {}, badge(i.state)),
              h("td", {}, i.process_state),
              h("td", { className: "num" }, i.port),
              h("td", { className: "num" }, i.pid ?? "–"),
              h("td", { className: "num in-flight" }, i.in_flight),
              h("td", { className: "num requests" }, i.requests),
              h("td", { className: "num" }, i.restarts),
              h("td", { className: "error" }, i.error ?? ""),
            ),
          ),
    );
  }

  /** @param {string} name @param {string} action @param {any} [body] */
  async function act(name, action, body) {
    error.textContent = "";
    try {
      await call("POST", `/pools/${encodeURIComponent(name)}/${action}`, body);
    } catch (e) {
      error.textContent = `${name}: ${failure(e)}`;
    }
  }

  const unlisten = listen(feed, { change: render });
  render();
  return unlisten;
}
