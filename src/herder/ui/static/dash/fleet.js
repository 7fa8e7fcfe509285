// The fleet: every worker with its state and figures, kept current by the feed.

import { ago, fill, h, listen, meter } from "./dom.js";
import { sparkline } from "./spark.js";

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

  function renderAll() {
    rows.clear();
    fill(body);
    const workers = [...feed.workers.values()].sort((a, b) => a.hostname.localeCompare(b.hostname));
    if (workers.length === 0) body.append(h("tr", {}, h("td", { colSpan: 9, className: "muted" }, "No workers yet.")));
    for (const worker of workers) render(worker);
    count();
  }

  function count() {
    const all = [...feed.workers.values()];
    const online = all.filter((w) => w.connection === "online").length;
    summary.textContent = `${online} online of ${all.length}`;
  }

  /** @param {any} worker */
  function render(worker) {
    const row = h("tr", { dataset: { worker: String(worker.id), connection: worker.connection } }, cells(worker));
    const old = rows.get(worker.id);
    if (old) old.replaceWith(row);
    else {
      if (rows.size === 0) fill(body);
      body.append(row);
    }
    rows.set(worker.id, row);
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
  const state = w.status === "disabled" ? "disabled" : w.connection;
  return [
    h("td", {}, h("strong", {}, w.hostname), h("div", { className: "muted" }, w.system || "", w.agent_url ? ` · ${w.agent_url}` : "")),
    h(
      "td",
      {},
      h("span", { className: `badge ${w.connection}`, title: `last seen ${ago(w.last_seen)}` }, state),
      w.slots_used ? h("span", { className: "badge rendering" }, "busy") : null,
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
