// Schedules: the tasks the manager submits by itself (#18), over GET /schedules and
// PATCH/DELETE /schedules/{id}: when each runs, its next run, its last run and the task
// it submitted, and pause, resume or delete. A user's key sees its own (the manager says
// which). Schedules are not on the live feed: the view reads them again every few seconds.

import { ApiError, request } from "./api.js";
import { ago, fill, h } from "./dom.js";

const REFRESH_MS = 3000;

/** "in 5 min", "in 3 s", from Unix seconds. @param {number} at */
function until(at) {
  const s = at - Date.now() / 1000;
  if (s <= 0) return "due";
  if (s < 60) return `in ${Math.round(s)} s`;
  if (s < 3600) return `in ${Math.round(s / 60)} min`;
  if (s < 86400) return `in ${Math.round(s / 3600)} h`;
  return `in ${Math.round(s / 86400)} d`;
}

/** "cron 0 2 * * * (Europe/Paris)" or "every 300 s". @param {any} s */
function when(s) {
  return s.cron !== null ? `cron ${s.cron} (${s.timezone})` : `every ${s.interval_s} s`;
}

/**
 * @param {HTMLElement} root
 * @returns {() => void} stops the view
 */
export function showSchedules(root) {
  const body = h("tbody");
  const message = h("p", { className: "error", id: "schedules-message" });
  const headers = ["ID", "Name", "When", "Overlap", "Next run", "Last run", "Runs", "State", ""];
  fill(
    root,
    h("div", { className: "row" }, h("h2", {}, "Schedules")),
    h("p", { className: "muted" }, "Added with 'herder schedules add' or POST /schedules (docs/schedules.md)."),
    message,
    h("table", { id: "schedules" }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))), body),
  );
  let stopped = false;

  async function load() {
    try {
      const { schedules } = await request("GET", "/schedules");
      if (stopped) return;
      message.textContent = "";
      fill(body, schedules.length ? schedules.map(row) : h("tr", {}, h("td", { colSpan: headers.length, className: "muted" }, "No schedules.")));
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  /** @param {any} s */
  function row(s) {
    const next = !s.enabled ? "–" : s.next_run_at === null ? "never" : until(s.next_run_at);
    const last = s.last_run_at === null
      ? h("span", { className: "muted" }, "–")
      : h("span", { title: new Date(s.last_run_at * 1000).toLocaleString() }, `${ago(s.last_run_at)}, `, h("a", { href: `#tasks/${s.last_task_id}`, className: "last-task" }, `task ${s.last_task_id}`));
    const state = s.enabled ? h("span", { className: "badge active" }, "enabled") : h("span", { className: "badge paused" }, "paused");
    const toggle = h("button", { type: "button", className: s.enabled ? "pause" : "resume", onclick: () => change(s, { enabled: !s.enabled }) }, s.enabled ? "Pause" : "Resume");
    const remove = h("button", { type: "button", className: "delete", onclick: () => removeSchedule(s) }, "Delete");
    return h(
      "tr",
      { dataset: { schedule: String(s.id), enabled: String(s.enabled) } },
      h("td", {}, String(s.id)),
      h("td", {}, s.name || h("span", { className: "muted" }, "–"), s.owner ? h("span", { className: "muted" }, ` (${s.owner})`) : null),
      h("td", {}, h("code", {}, when(s))),
      h("td", {}, s.overlap),
      h("td", { className: "next", title: s.next_run_at ? new Date(s.next_run_at * 1000).toLocaleString() : "" }, next),
      h("td", { className: "last" }, last),
      h("td", { title: `${s.skipped} skipped` }, `${s.runs}`, s.skipped ? h("span", { className: "muted" }, ` (+${s.skipped} skipped)`) : null),
      h("td", {}, state),
      h("td", {}, toggle, " ", remove),
    );
  }

  /** @param {any} s @param {object} changes */
  async function change(s, changes) {
    try {
      await request("PATCH", `/schedules/${s.id}`, changes);
      load();
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  /** @param {any} s */
  async function removeSchedule(s) {
    if (!confirm(`Delete schedule ${s.id}${s.name ? ` (${s.name})` : ""}? The tasks it submitted stay.`)) return;
    try {
      await request("DELETE", `/schedules/${s.id}`);
      load();
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
