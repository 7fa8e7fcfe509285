// What the agent's views share: a state's badge, a duration, an error's words.

import { h } from "../dash/dom.js";

// The dashboard's badge colours (dash.css), by the agent's states.
const TONE = /** @type {Record<string, string>} */ ({
  running: "online", ready: "online", active: "online",
  failed: "failed", exited: "canceled",
  fetching: "queued", building: "queued", starting: "queued", backoff: "paused", unready: "paused",
  stopping: "paused", draining: "paused", drained: "paused", stopped: "canceled",
  open: "online", closing: "paused",
});

/** @param {string} state */
export function badge(state) {
  return h("span", { className: `badge ${TONE[state] ?? ""}` }, state);
}

/** "42 s", "3 min", "2 h 5 min" since a time in Unix seconds (as the agent gives them). @param {number} at */
export function since(at) {
  const s = Math.max(0, Math.round((Date.now() - new Date(at * 1000).getTime()) / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/** "12.3 MiB": a size in bytes, in binary units. @param {number} n */
export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** An error as the agent worded it, with the field it names. @param {unknown} e */
export function failure(e) {
  const doc = /** @type {any} */ (e)?.doc;
  if (doc?.message) return doc.field ? `${doc.message} (${doc.field})` : doc.message;
  return e instanceof Error ? e.message : String(e);
}
