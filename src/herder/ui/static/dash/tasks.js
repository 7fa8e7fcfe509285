// Tasks: a page at a time (GET /tasks pages by id: ?limit=, ?before=), filtered by
// status, owner and tag, kept current by the feed; submit a task, cancel one, run an
// ended one again (requeue: a new task, whose page opens).

import { ApiError, request } from "./api.js";
import { ago, fill, h, listen } from "./dom.js";
import { progressOf } from "./progress.js";

const PAGE = 25;
const COUNTS_EVERY_MS = 2000;
const STATUSES = ["queued", "assigned", "rendering", "paused", "completed", "failed", "canceled"];
const ENDED = new Set(["completed", "failed", "canceled"]);


/**
 * A progress bar with its figure. @param {number | null} percent null: nothing to measure
 * @returns {HTMLElement}
 */
export function progressBar(percent) {
  const bar = h("span");
  bar.style.width = `${percent ?? 0}%`;
  const label = h("em", {}, percent == null ? "" : `${Math.floor(percent)}%`);
  return h("div", { className: "progress", role: "progressbar", ariaValueNow: String(Math.round(percent ?? 0)) }, bar, label);
}

/**
 * *Requeue* for an ended task: POST /tasks/{id}/requeue makes a new task with its
 * settings (the old one stays as it ended), and the new task's page opens.
 * @param {number} id
 * @param {(why: string) => void} refused shows the manager's refusal
 * @returns {HTMLElement}
 */
export function requeueButton(id, refused) {
  const button = h("button", { type: "button", className: "requeue", title: "Run it again: a new task with these settings" }, "Requeue");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const task = await request("POST", `/tasks/${id}/requeue`);
      location.hash = `#tasks/${task.id}`;
    } catch (error) {
      refused(error instanceof ApiError ? error.message : "");
      button.disabled = false;
    }
  });
  return button;
}

/** Whether a task has ended (no change is possible). @param {any} task */
export function ended(task) {
  return ENDED.has(task.status);
}

/**
 * @param {HTMLElement} root
 * @param {import("./live.js").Feed} feed
 * @returns {() => void} stops the view
 */
export function showTasks(root, feed) {
  /** @type {(number | undefined)[]} the `before` of each page shown so far: [undefined] is the newest */
  let cursors = [undefined];
  /** @type {number | null} */
  let next = null;
  let status = "";
  let owner = "";
  let tag = "";
  /** @type {Map<number, {task: any, row: HTMLElement}>} */
  const shown = new Map();
  const body = h("tbody");
  const message = h("span", { className: "muted", id: "tasks-message" });
  const older = h("button", { type: "button", id: "older", onclick: () => go(cursors.length) }, "Older →");
  const newer = h("button", { type: "button", id: "newer", onclick: () => go(cursors.length - 2) }, "← Newer");
  const filter = h(
    "select",
    { id: "status-filter", onchange: () => ((status = filter.value), (cursors = [undefined]), load()) },
    h("option", { value: "" }, "every status"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );

  // Owner and tag, asked of the manager (GET /tasks?owner=&tag=) when the field is left.
  const ownerField = h("input", { id: "owner-filter", placeholder: "anyone", size: 10 });
  const tagField = h("input", { id: "tag-filter", placeholder: "any tag", size: 10 });
  for (const field of [ownerField, tagField]) {
    field.addEventListener("change", () => {
      owner = ownerField.value.trim();
      tag = tagField.value.trim();
      cursors = [undefined];
      load();
      counts();
    });
  }

  fill(
    root,
    submitForm(),
    h(
      "div",
      { className: "row" },
      h("h2", {}, "Tasks"),
      h("label", {}, "Status ", filter),
      h("label", {}, "Owner ", ownerField),
      h("label", {}, "Tag ", tagField),
      message,
    ),
    h(
      "table",
      { id: "tasks" },
      h("thead", {}, h("tr", {}, ["ID", "Type", "Status", "Progress", "Priority", "Owner", "Worker", "Submitted", ""].map((t) => h("th", {}, t)))),
      body,
    ),
    h("div", { className: "row pager" }, newer, older),
  );

  /** @param {number} index which page, 0 the newest */
  function go(index) {
    if (index < 0) return;
    if (index >= cursors.length) {
      if (next === null) return;
      cursors.push(next);
    } else cursors = cursors.slice(0, index + 1);
    load();
  }

  async function load() {
    const before = cursors[cursors.length - 1];
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (status) query.set("status", status);
    if (owner) query.set("owner", owner);
    if (tag) query.set("tag", tag);
    if (before !== undefined) query.set("before", String(before));
    message.textContent = "loading…";
    message.className = "muted";
    try {
      const page = await request("GET", `/tasks?${query}`);
      next = page.next;
      shown.clear();
      fill(body);
      for (const task of page.tasks) place(task, false);
      const measure = page.tasks.filter((/** @type {any} */ t) => t.status !== "completed").map((/** @type {any} */ t) => t.id);
      if (measure.length) feed.ask({ type: "progress", ids: measure });
      if (page.tasks.length === 0) body.append(h("tr", {}, h("td", { colSpan: 9, className: "muted" }, "No tasks.")));
      message.textContent = "";
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
      message.className = "error";
    }
    newer.disabled = cursors.length <= 1;
    older.disabled = next === null;
  }

  /** Show a task: replace its row, or add it (at the top when `first`). @param {any} task @param {boolean} first */
  function place(task, first) {
    const row = h("tr", { dataset: { task: String(task.id), status: task.status } }, cells(task));
    const old = shown.get(task.id);
    if (old) old.row.replaceWith(row);
    else if (first) {
      body.querySelector("td[colspan]")?.parentElement?.remove();
      body.prepend(row);
    } else body.append(row);
    shown.set(task.id, { task, row });
  }

  // How many tasks have each status, in the filter's options, of the owner and tag asked
  // (the list's other filters): read at first and when those change, then again after
  // changes, at most every COUNTS_EVERY_MS (a count reads the whole table).
  /** @type {number | undefined} */
  let countsTimer;
  let countsAt = 0;
  async function counts() {
    countsTimer = undefined;
    countsAt = Date.now();
    try {
      const asked = filtersNow();
      const all = await request("GET", `/tasks/counts${asked ? `?${asked}` : ""}`);
      if (asked !== filtersNow()) return; // the filters changed meanwhile: their read follows
      for (const option of filter.options) {
        const n = option.value ? all[option.value] : all.total;
        option.textContent = `${option.value || "every status"} (${n ?? 0})`;
      }
    } catch {
      // a 401 signed the tab out; anything else leaves the old figures
    }
  }
  /** The owner and tag asked, as a query (""). */
  function filtersNow() {
    const query = new URLSearchParams();
    if (owner) query.set("owner", owner);
    if (tag) query.set("tag", tag);
    return query.toString();
  }
  function countsSoon() {
    if (countsTimer === undefined) countsTimer = setTimeout(counts, Math.max(0, countsAt + COUNTS_EVERY_MS - Date.now()));
  }

  /** Whether a task the feed brings belongs to the list as filtered. @param {any} task */
  function passes(task) {
    return (!status || task.status === status) && (!owner || task.owner === owner) && (!tag || (task.tags ?? []).includes(tag));
  }

  const onTask = (/** @type {any} */ event) => {
    countsSoon();
    const task = event.detail;
    const old = shown.get(task.id);
    if (old) {
      if (task.updated_at >= old.task.updated_at) place({ progress: old.task.progress, ...task }, false);
      return;
    }
    // A task not shown: new ones belong at the top of the newest page, if they pass the filter.
    const newest = Math.max(0, ...shown.keys());
    if (cursors.length === 1 && task.id > newest && passes(task)) {
      place(task, true);
      while (shown.size > PAGE) {
        const last = [...shown.keys()].sort((a, b) => a - b)[0];
        shown.get(last)?.row.remove();
        shown.delete(last);
        next = last;
        older.disabled = false;
      }
    }
  };
  const onProgress = (/** @type {any} */ event) => {
    for (const [id, percent] of Object.entries(event.detail)) {
      const old = shown.get(Number(id));
      if (old && typeof percent === "number" && old.task.progress === undefined) place({ ...old.task, progress: percent }, false);
    }
  };
  /** A task deleted (here or in another tab): its row goes, and the counts follow. */
  const onDeleted = (/** @type {any} */ event) => {
    countsSoon();
    const old = shown.get(event.detail);
    if (!old) return;
    old.row.remove();
    shown.delete(event.detail);
    if (shown.size === 0) body.append(h("tr", {}, h("td", { colSpan: 9, className: "muted" }, "No tasks.")));
  };
  const stop = listen(feed, { task: onTask, task_deleted: onDeleted, resync: load, progress: onProgress });
  load();
  counts();
  return () => {
    stop();
    clearTimeout(countsTimer);
  };

  /** @param {any} task */
  function cells(task) {
    const percent = progressOf(task);
    const frames =
      task.frame_start != null ? `frames ${task.frame_start}–${task.frame_end}${task.frame_current != null ? `, at ${task.frame_current}` : ""}` : "";
    const action = ended(task)
      ? requeueButton(task.id, (/** @type {string} */ why) => (message.textContent = why))
      : h("button", { type: "button", className: "cancel", onclick: () => act(task.id, { status: "canceled" }) }, "Cancel");
    return [
      h("td", { className: "num" }, h("a", { href: `#tasks/${task.id}` }, String(task.id))),
      h("td", {}, task.type, h("div", { className: "muted" }, summary(task))),
      h("td", {}, h("span", { className: `badge ${task.status}`, title: task.error ?? "" }, task.status)),
      h(
        "td",
        {},
        progressBar(percent),
        h("div", { className: "muted" }, frames),
      ),
      h("td", { className: "num" }, String(task.priority)),
      h("td", {}, task.owner ?? ""),
      h("td", {}, task.worker_id == null ? "" : (feed.workers.get(task.worker_id)?.hostname ?? `#${task.worker_id}`)),
      h("td", { title: new Date(task.created_at * 1000).toLocaleString() }, ago(task.created_at)),
      h("td", {}, action),
    ];
  }

  /** @param {number} id @param {any} change */
  async function act(id, change) {
    try {
      await request("PATCH", `/tasks/${id}`, change);
      message.textContent = "";
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  function submitForm() {
    const type = h("select", { name: "type", id: "submit-type" }, h("option", { value: "frames" }, "frames"), h("option", { value: "command" }, "command"));
    const command = h("input", { name: "command", id: "submit-command", className: "wide", value: "echo Fra:{frame}; sleep 0.2", required: true });
    const start = h("input", { name: "frame_start", id: "submit-start", type: "number", value: "1", size: 5 });
    const end = h("input", { name: "frame_end", id: "submit-end", type: "number", value: "10", size: 5 });
    const chunk = h("input", { name: "chunk_size", id: "submit-chunk", type: "number", value: "2", min: "1", size: 4 });
    const priority = h("input", { name: "priority", id: "submit-priority", type: "number", value: "0", size: 4 });
    const framesOnly = [start, end, chunk].map((input) => h("label", { className: "frames-only" }, input.name.replace("_", " "), input));
    const outcome = h("span", { className: "muted", id: "submit-outcome" });
    const sync = () => {
      for (const label of framesOnly) label.classList.toggle("hidden", type.value !== "frames");
      command.placeholder = type.value === "frames" ? "render --frame {frame}" : "a shell command";
    };
    type.addEventListener("change", sync);
    sync();
    const form = h(
      "form",
      { className: "card submit", id: "submit" },
      h("div", { className: "row" }, h("label", {}, "type", type), h("label", { className: "wide" }, "command ({frame} is the frame)", command), framesOnly, h("label", {}, "priority", priority), h("button", { type: "submit", className: "primary" }, "Submit")),
      outcome,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body =
        type.value === "frames"
          ? {
              type: "frames",
              parser: "frames",
              priority: Number(priority.value),
              settings: { command: command.value, frame_start: Number(start.value), frame_end: Number(end.value), chunk_size: Number(chunk.value) },
            }
          : { type: "command", priority: Number(priority.value), settings: { shell: command.value } };
      try {
        const task = await request("POST", "/tasks", body);
        outcome.textContent = `task ${task.id} submitted`;
        outcome.className = "muted";
        onTask({ detail: task });
      } catch (error) {
        outcome.textContent = error instanceof ApiError ? `${error.doc?.field ?? ""}: ${error.message}` : String(error);
        outcome.className = "error";
      }
    });
    return form;
  }
}

/** @param {any} task */
function summary(task) {
  const s = task.settings ?? {};
  const text = s.command ?? s.shell ?? (Array.isArray(s.argv) ? s.argv.join(" ") : "");
  return String(text).slice(0, 80);
}
