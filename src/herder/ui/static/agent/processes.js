// The agent's processes: state, restarts, uptime, port, pid, CPU, memory, error, kept
// current by the feed; a live console (the process's attach WebSocket); stop, start,
// restart and delete (each answered by the agent, whose change comes back on the feed).

import { fill, h, listen } from "../dash/dom.js";
import { call, socket } from "./api.js";
import { badge, bytes, failure, since } from "./show.js";

const CONSOLE_LINES = 2000; // kept on screen; the agent keeps its own ring and log files
// What the agent's start-process takes (supervisorctl's rule): a process that does not run.
const STARTABLE = new Set(["stopped", "exited", "failed"]);

/**
 * @param {HTMLElement} root
 * @param {import("./feed.js").AgentFeed} feed
 * @returns {() => void} stops the view
 */
export function showProcesses(root, feed) {
  const body = h("tbody");
  const error = h("p", { className: "error", id: "processes-error" });
  const consoleCard = h("div", { className: "card hidden", id: "console" });
  fill(
    root,
    h("div", { className: "row" }, h("h2", {}, "Processes"), h("span", { className: "muted", id: "processes-count" })),
    error,
    h(
      "table",
      { id: "processes" },
      h("thead", {}, h("tr", {}, ["Process", "State", "Restarts", "Up", "Port", "PID", "CPU", "Memory", "Error", ""].map((t) => h("th", {}, t)))),
      body,
    ),
    consoleCard,
  );
  /** @type {{slug: string, ws: WebSocket} | null} */
  let attached = null;

  function render() {
    const processes = [...feed.processes.values()];
    /** @type {HTMLElement} */ (root.querySelector("#processes-count")).textContent = `${processes.length} on this agent`;
    fill(
      body,
      processes.length === 0 ? h("tr", {}, h("td", { colSpan: 10, className: "muted" }, "No processes.")) : processes.map(row),
    );
  }

  /** @param {any} p */
  function row(p) {
    const el = h(
      "tr",
      { dataset: { slug: p.slug, state: p.state } },
      h("td", {}, h("strong", {}, p.slug), h("div", { className: "muted" }, describe(p))),
      h("td", { className: "state" }, badge(p.state)),
      h("td", { className: "num restarts" }, String(p.restarts)),
      h("td", { className: "num uptime", dataset: { since: p.state === "running" ? String(p.started_at ?? "") : "" } }, uptime(p)),
      h("td", { className: "num port" }, p.port ?? "–"),
      h("td", { className: "num pid" }, p.pid ?? "–"),
      h("td", { className: "num cpu" }, p.cpu_percent == null ? "–" : `${p.cpu_percent} %`),
      h("td", { className: "num rss" }, p.rss_bytes == null ? "–" : bytes(p.rss_bytes)),
      h("td", { className: "error" }, p.error ?? ""),
      h(
        "td",
        {},
        h("div", { className: "row" },
          h("button", { type: "button", className: "console", onclick: () => openConsole(p.slug) }, "Console"),
          STARTABLE.has(p.state)
            ? h("button", { type: "button", className: "start", onclick: () => act(p.slug, "start") }, "Start")
            : h("button", { type: "button", className: "stop", disabled: p.state === "stopping", onclick: () => act(p.slug, "stop") }, "Stop"),
          h("button", { type: "button", className: "restart", disabled: p.state === "stopping", onclick: () => act(p.slug, "restart") }, "Restart"),
          h("button", { type: "button", className: "delete", onclick: () => remove(p.slug) }, "Delete")),
      ),
    );
    for (const cell of el.querySelectorAll("td.num, td:last-child > .row")) {
      /** @type {HTMLElement} */ (cell).style.whiteSpace = "nowrap"; // the CSSOM: the page's CSP has no inline style
      /** @type {HTMLElement} */ (cell).style.flexWrap = "nowrap";
    }
    return el;
  }

  /** Stop, start or restart: the answer is the process's status; the feed brings it too. @param {string} slug @param {"stop" | "start" | "restart"} verb */
  async function act(slug, verb) {
    error.textContent = "";
    try {
      await call("POST", `/${verb}-process/${encodeURIComponent(slug)}`);
    } catch (e) {
      error.textContent = `${slug}: ${failure(e)}`;
    }
  }

  /** @param {string} slug */
  async function remove(slug) {
    if (!confirm(`Stop and forget ${slug}?`)) return;
    error.textContent = "";
    try {
      await call("POST", `/delete-process/${encodeURIComponent(slug)}`);
    } catch (e) {
      error.textContent = failure(e);
    }
  }

  /** Follow a process's output: the lines the agent keeps, then each as it is written. @param {string} slug */
  function openConsole(slug) {
    closeConsole();
    const log = h("pre", { className: "log", id: "console-log" });
    const state = h("span", { className: "muted", id: "console-state" }, "connecting…");
    fill(
      consoleCard,
      h("div", { className: "row" }, h("h2", {}, `Console: ${slug}`), state, h("span", { className: "spacer" }),
        h("button", { type: "button", onclick: closeConsole }, "Close")),
      log,
    );
    consoleCard.classList.remove("hidden");
    const ws = socket(`/attach-console/${encodeURIComponent(slug)}`);
    attached = { slug, ws };
    ws.onopen = () => (state.textContent = "live");
    ws.onmessage = (message) => {
      const { stream, line } = JSON.parse(message.data);
      const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(h("div", { className: stream }, stream === "stdout" ? line : `${stream}: ${line}`));
      while (log.childElementCount > CONSOLE_LINES) log.firstElementChild?.remove();
      if (follow) log.scrollTop = log.scrollHeight;
    };
    ws.onclose = (event) => {
      if (attached?.ws === ws) state.textContent = event.reason || "ended";
    };
  }

  function closeConsole() {
    const was = attached;
    attached = null;
    was?.ws.close(1000, "closed");
    consoleCard.classList.add("hidden");
    consoleCard.replaceChildren();
  }

  // Uptime moves on between changes: redrawn from started_at (Unix seconds) each second (a clock, not a call).
  const clock = setInterval(() => {
    for (const cell of body.querySelectorAll("td.uptime")) {
      const started = /** @type {HTMLElement} */ (cell).dataset.since;
      if (started) cell.textContent = since(Number(started));
    }
  }, 1000);
  const unlisten = listen(feed, { change: render });
  render();
  return () => {
    unlisten();
    clearInterval(clock);
    closeConsole();
  };
}

/** @param {any} p */
function describe(p) {
  if (p.command) return Array.isArray(p.command) ? p.command.join(" ") : p.command;
  return `${p.process_type ?? ""} ${p.source_url ?? ""}`.trim();
}

/** @param {any} p */
function uptime(p) {
  return p.state === "running" && p.started_at ? since(p.started_at) : "–";
}
