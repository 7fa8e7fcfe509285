// One worker, inside the manager's page (#worker/<id>): its figures from the feed, and what
// its agent runs (processes, pools, sessions), which the manager asks the agent over the
// link it keeps (GET /workers/{id}/inventory). Read-only: actions (console, restart,
// scale) stay on the agent's own page, linked from here.
//
// When it is asked again: whenever the feed says the worker changed (each heartbeat, or
// its switch), at most once every REFRESH_MS and never twice at once. No timer polls: a
// worker that stops beating is not asked again (its state says why).

import { ApiError, isAdmin, request } from "./api.js";
import { ago, fill, h, listen, meter } from "./dom.js";
import { agentLink, workerState } from "./fleet.js";
import { badge, bytes } from "../agent/show.js";

// The fewest milliseconds between two inventories: heartbeats come every few seconds (as
// often as 0.3 s in tests), an inventory costs the agent one pass over its processes.
const REFRESH_MS = 3000;

/**
 * @param {HTMLElement} root
 * @param {import("./live.js").Feed} feed
 * @param {number} id the worker's
 * @returns {() => void} stops the view
 */
export function showWorker(root, feed, id) {
  if (!isAdmin()) {
    fill(root, h("p", { className: "error" }, "Only an admin sees what a worker's agent runs."));
    return () => {};
  }
  const title = h("h2", {}, `Worker ${id}`);
  const state = h("span", { id: "worker-state" });
  const figures = h("dl", { className: "facts", id: "worker-figures" });
  const actions = h("span", { id: "worker-agent" });
  const status = h("p", { className: "muted", id: "inventory-status" }, "Asking the agent…");
  const processes = h("tbody");
  const pools = h("tbody");
  const sessions = h("tbody");
  const counts = {
    processes: h("span", { className: "muted", id: "worker-processes-count" }),
    pools: h("span", { className: "muted", id: "worker-pools-count" }),
    sessions: h("span", { className: "muted", id: "worker-sessions-count" }),
  };
  fill(
    root,
    h("div", { className: "row" }, h("a", { href: "#fleet" }, "← Fleet"), title, state, h("span", { className: "spacer" }), actions),
    h("div", { className: "card" }, figures),
    status,
    section("Processes", counts.processes, "worker-processes", ["Process", "State", "Restarts", "Up", "Port", "CPU", "Memory", "Error"], processes),
    section("Pools", counts.pools, "worker-pools", ["Pool", "State", "Instances", "In flight", "Waiting", "Cold starts", "Error"], pools),
    section("Sessions", counts.sessions, "worker-sessions", ["Session", "Product", "State", "Client", "Opened", "PID", "Buffered"], sessions),
  );

  let stopped = false;
  let asking = false;
  let again = false; // the feed said it changed while an inventory was on its way
  let last = 0; // when the last inventory was asked (performance.now())
  /** @type {number | undefined} */
  let timer;

  function showWorkerFigures() {
    const w = feed.workers.get(id);
    if (!w) {
      title.textContent = `Worker ${id}`;
      fill(state, h("span", { className: "muted" }, "not in the fleet (yet)"));
      return;
    }
    title.textContent = w.hostname;
    fill(state, h("span", { className: `badge ${w.connection}`, title: `last seen ${ago(w.last_seen)}` }, workerState(w)));
    fill(actions, w.agent_url ? ["The agent's own page (console, restart, scale): ", agentLink(w.agent_url)] : "");
    const frequent = w.update_frequent ?? {};
    const rare = w.update_less_frequent ?? {};
    const load = frequent.load_average;
    fill(
      figures,
      fact("System", w.system || "–"),
      fact("Load (1/5/15 min)", load ? [load["1min"], load["5min"], load["15min"]].map((x) => Number(x).toFixed(2)).join(" / ") : "–"),
      fact("CPU", meter(frequent.worker_cpu_percent)),
      fact("Memory", meter(rare.worker_mem_percent)),
      fact("Disk", meter(rare.worker_disk_percent)),
      fact("CPUs", rare.worker_num_cpus ?? "–"),
      fact("Slots", `${w.slots_used ?? 0} / ${w.slots}`),
      fact("Tags", (w.tags ?? []).length ? w.tags.map((/** @type {string} */ t) => h("span", { className: "tag" }, t)) : "–"),
      fact("Last seen", ago(w.last_seen) || "–"),
    );
  }

  /** Ask the agent now, or as soon as REFRESH_MS have passed since the last time. */
  function refresh() {
    if (stopped) return;
    if (asking) {
      again = true;
      return;
    }
    const wait = last + REFRESH_MS - performance.now();
    if (last && wait > 0) {
      if (timer === undefined) timer = setTimeout(() => { timer = undefined; refresh(); }, wait);
      return;
    }
    void ask();
  }

  async function ask() {
    asking = true;
    last = performance.now();
    try {
      const inventory = await request("GET", `/workers/${id}/inventory`);
      if (stopped) return;
      render(inventory);
      status.className = "muted";
      status.textContent = `As the agent said ${new Date(inventory.collected_at * 1000).toLocaleTimeString()}; asked again when the worker next reports.`;
    } catch (error) {
      if (stopped) return;
      status.className = "error";
      status.textContent = error instanceof ApiError ? error.message : String(error);
    } finally {
      asking = false;
      if (again && !stopped) {
        again = false;
        refresh();
      }
    }
  }

  /** @param {any} inventory */
  function render(inventory) {
    counts.processes.textContent = total(inventory.processes.length, inventory.processes_total);
    counts.pools.textContent = total(inventory.pools.length, inventory.pools_total);
    counts.sessions.textContent = total(inventory.sessions.length, inventory.sessions_total);
    rows(processes, inventory.processes, 8, "No processes.", processRow);
    rows(pools, inventory.pools, 7, "No pools.", poolRow);
    rows(sessions, inventory.sessions, 7, "No sessions.", sessionRow);
  }

  const onWorker = (/** @type {any} */ event) => {
    if (event.detail.id !== id) return;
    showWorkerFigures();
    refresh();
  };
  const stop = listen(feed, {
    workers: () => {
      showWorkerFigures();
      refresh();
    },
    worker: onWorker,
  });
  showWorkerFigures();
  refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    stop();
  };
}

/** @param {string} name @param {HTMLElement} count @param {string} tableId @param {string[]} titles @param {HTMLElement} body */
function section(name, count, tableId, titles, body) {
  return [
    h("div", { className: "row" }, h("h3", {}, name), count),
    h("table", { id: tableId }, h("thead", {}, h("tr", {}, titles.map((t) => h("th", {}, t)))), body),
  ];
}

/** @param {string} term @param {any} value */
function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

/** @param {number} shown @param {number} all */
function total(shown, all) {
  return shown < all ? `the first ${shown} of ${all}` : `${all} on this agent`;
}

/**
 * @param {HTMLElement} body @param {any[]} things @param {number} columns @param {string} none
 * @param {(thing: any) => HTMLElement} row
 */
function rows(body, things, columns, none, row) {
  fill(body, things.length === 0 ? h("tr", {}, h("td", { colSpan: columns, className: "muted" }, none)) : things.map(row));
}

/** @param {any} p */
function processRow(p) {
  return h(
    "tr",
    { dataset: { slug: p.slug, state: p.state } },
    h("td", {}, h("strong", {}, p.slug), h("div", { className: "muted" }, describe(p))),
    h("td", { className: "state" }, badge(p.state)),
    h("td", { className: "num restarts" }, String(p.restarts ?? 0)),
    h("td", { className: "num uptime" }, p.uptime_s == null ? "–" : duration(p.uptime_s)),
    h("td", { className: "num port" }, p.port ?? "–"),
    h("td", { className: "num cpu" }, p.cpu_percent == null ? "–" : `${p.cpu_percent} %`),
    h("td", { className: "num rss" }, p.rss_bytes == null ? "–" : bytes(p.rss_bytes)),
    h("td", { className: "error" }, p.error ?? ""),
  );
}

/** What runs: the app and its process type, or the command line. @param {any} p */
function describe(p) {
  if (p.process_type) return `${p.app} · ${p.process_type}`;
  return (p.command ?? []).join(" ");
}

/** @param {any} pool */
function poolRow(pool) {
  return h(
    "tr",
    { dataset: { pool: pool.name, state: pool.state } },
    h("td", {}, h("strong", {}, pool.name), pool.url ? h("div", { className: "muted" }, pool.url) : null),
    h("td", { className: "state" }, badge(pool.state)),
    h("td", { className: "num instances" }, String(pool.instances)),
    h("td", { className: "num in-flight" }, String(pool.in_flight)),
    h("td", { className: "num waiting" }, String(pool.waiting)),
    h("td", { className: "num cold-starts" }, String(pool.cold_starts)),
    h("td", { className: "error" }, pool.error ?? ""),
  );
}

/** @param {any} s */
function sessionRow(s) {
  return h(
    "tr",
    { dataset: { session: s.id, state: s.state } },
    h("td", {}, h("code", {}, s.id)),
    h("td", { className: "product" }, s.product),
    h("td", { className: "state" }, badge(s.state)),
    h("td", { className: "client" }, s.attached ? "attached" : "detached"),
    h("td", {}, s.created_at ? new Date(s.created_at * 1000).toLocaleString() : "–"),
    h("td", { className: "num" }, s.pid ?? "–"),
    h("td", { className: "num buffered" }, String(s.buffered ?? 0)),
  );
}

/** "42 s", "3 min", "2 h 5 min" from seconds. @param {number} seconds */
function duration(seconds) {
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}
