// The fleet: every worker with its state and figures, kept current by the feed. An admin
// clicks a worker through to its view (worker.js: what its agent runs).

import { ApiError, isAdmin, request } from "./api.js";
import { ago, fill, h, listen, meter } from "./dom.js";
import { sparkline } from "./spark.js";

const CHUNK = 100; // rows added per animation frame

/**
 * @param {HTMLElement} root
 * @param {import("./live.js").Feed} feed
 * @returns {() => void} stops the view
 */
export function showFleet(root, feed) {
  const body = h("tbody");
  const summary = h("span", { className: "muted" });
  /** @type {Map<number, HTMLElement>} */
  const rows = new Map();
  fill(
    root,
    h("div", { className: "row" }, h("h2", {}, "Fleet"), summary),
    h(
      "table",
      { id: "workers" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Worker", "State", "Load (1/5/15 min)", "CPU", "Memory", "Disk", "Slots", "Tags", "Load, last beats"].map(
            (title) => h("th", {}, title),
          ),
        ),
      ),
      body,
    ),
  );

  /** @type {number[]} the workers' ids in the order shown; those before `next` have rows */
  let order = [];
  let next = 0;
  let rendering = 0; // the renderAll in progress: a newer one stops an older one's chunks

  /** Every worker again: the first rows at once, the rest a chunk per frame, so that a
   * fleet of thousands shows its first rows without waiting for the last. */
  function renderAll() {
    const run = ++rendering;
    rows.clear();
    fill(body);
    order = [...feed.workers.values()].sort((a, b) => a.hostname.localeCompare(b.hostname)).map((w) => w.id);
    next = 0;
    if (order.length === 0) body.append(h("tr", {}, h("td", { colSpan: 9, className: "muted" }, "No workers yet.")));
    count();
    const chunk = () => {
      if (run !== rendering) return;
      const rowsOfChunk = document.createDocumentFragment();
      for (const id of order.slice(next, next + CHUNK)) {
        const worker = feed.workers.get(id); // as it is now, not as it was at the snapshot
        if (worker) rowsOfChunk.append(row(worker));
      }
      body.append(rowsOfChunk);
      next += CHUNK;
      if (next < order.length) requestAnimationFrame(chunk);
    };
    chunk();
  }

  /** @param {any} worker */
  function row(worker) {
    const el = h("tr", { dataset: { worker: String(worker.id), connection: worker.connection } }, cells(worker));
    rows.set(worker.id, el);
    return el;
  }

  function count() {
    const all = [...feed.workers.values()];
    const online = all.filter((w) => w.connection === "online").length;
    summary.textContent = `${online} online of ${all.length}`;
  }

  /** A worker changed: its row again; a new worker goes last (until the next snapshot),
   * and one whose chunk is still to come waits for it. @param {any} worker */
  function render(worker) {
    const old = rows.get(worker.id);
    if (old) {
      old.replaceWith(row(worker));
      return;
    }
    if (order.includes(worker.id)) return;
    order.push(worker.id);
    if (next < order.length - 1) return; // chunks are still being added: the last will hold it
    if (order.length === 1) fill(body);
    body.append(row(worker));
    next = order.length;
  }

  const onWorker = (/** @type {any} */ event) => {
    render(event.detail);
    count();
  };
  const stop = listen(feed, { workers: renderAll, worker: onWorker });
  renderAll();
  return stop;
}

/** @param {any} w */
function cells(w) {
  const frequent = w.update_frequent ?? {};
  const rare = w.update_less_frequent ?? {};
  const load = frequent.load_average;
  const loadText = load ? [load["1min"], load["5min"], load["15min"]].map((x) => Number(x).toFixed(2)).join(" / ") : "–";
  const state = workerState(w);
  // An admin opens the worker's view (what its agent runs); a user sees the fleet only.
  const name = h("strong", {}, w.hostname);
  return [
    h("td", {}, isAdmin() ? h("a", { href: `#worker/${w.id}`, className: "worker-link" }, name) : name, h("div", { className: "muted" }, w.system || "", w.agent_url ? [" · ", agentLink(w.agent_url)] : "")),
    h(
      "td",
      {},
      h("span", { className: `badge ${w.connection}`, title: `last seen ${ago(w.last_seen)}` }, state),
      w.slots_used ? h("span", { className: "badge rendering" }, "busy") : null,
      isAdmin() ? switchButton(w) : null,
    ),
    h("td", { className: "num" }, loadText, rare.worker_num_cpus ? h("span", { className: "muted" }, ` (${rare.worker_num_cpus} CPUs)`) : null),
    h("td", {}, meter(frequent.worker_cpu_percent)),
    h("td", {}, meter(rare.worker_mem_percent)),
    h("td", {}, meter(rare.worker_disk_percent)),
    h("td", { className: "num slots" }, `${w.slots_used ?? 0} / ${w.slots}`),
    h("td", {}, (w.tags ?? []).map((t) => h("span", { className: "tag" }, t))),
    h("td", {}, sparkline(w.history ?? [], { floor: rare.worker_num_cpus || 1, title: "1-minute load average, one point per heartbeat" })),
  ];
}

/** What the fleet says of a worker: disabled by an operator, or online or offline. @param {any} w */
export function workerState(w) {
  return w.status === "disabled" ? "disabled" : w.connection;
}

/**
 * Disable a worker (it gets no new work; what it runs finishes) or enable it again: an
 * admin's (PATCH /workers/{id}; the manager refuses anyone else's). Such a PATCH also
 * counts as the worker's heartbeat, as the seed's API has it.
 * @param {any} w
 */
function switchButton(w) {
  const wanted = w.status === "disabled" ? "enabled" : "disabled";
  const button = h("button", { type: "button", className: "switch", dataset: { wanted } }, wanted === "disabled" ? "Disable" : "Enable");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await request("PATCH", `/workers/${w.id}`, { status: wanted }); // the feed shows the change
    } catch (error) {
      button.disabled = false;
      button.title = error instanceof ApiError ? error.message : String(error);
    }
  });
  return h("div", {}, button);
}

/** A link to the worker's agent's own page (its processes and pools), for an http(s)
 * agent_url only: the worker says what it is, and a javascript: URL must not become a
 * link. @param {string} url */
export function agentLink(url) {
  if (!/^https?:\/\//i.test(url)) return url;
  return h("a", { href: `${url.replace(/\/$/, "")}/ui/`, className: "agent-ui", target: "_blank", rel: "noopener noreferrer" }, url);
}
