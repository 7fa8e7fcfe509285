// One task: its figures, its work items, why it waits, its output as it comes
// (WS /tasks/{id}/log), and what may be done to it (pause, resume, cancel; requeue once
// it ended). A deletion, from any tab, says so here.

import { ApiError, openSocket, request } from "./api.js";
import { ago, fill, h, listen } from "./dom.js";
import { itemsProgress } from "./progress.js";
import { ended, progressBar, requeueButton } from "./tasks.js";

const MAX_LINES = 5000; // lines kept on the page; older ones go

/**
 * @param {HTMLElement} root
 * @param {import("./live.js").Feed} feed
 * @param {number} id
 * @returns {() => void} stops the view
 */
export function showTask(root, feed, id) {
  // The card's parts are made once and filled at each reading, so that what the user
  // is typing (the priority) is not replaced under their hands by a change that arrives.
  const top = h("div", { className: "row" });
  const waiting = h("p", { className: "muted", id: "waiting", hidden: true });
  const failure = h("p", { className: "error", hidden: true });
  /** @type {Record<string, HTMLElement>} */
  const facts = {};
  const factList = h(
    "dl",
    { className: "facts" },
    ["type", "owner", "priority", "tags", "submitted", "settings"].map((name) => [h("dt", {}, name), (facts[name] = h("dd"))]),
  );
  const priority = h("input", { type: "number", id: "priority", size: 5 });
  const priorityForm = h("form", { className: "row inline", id: "priority-form" }, priority, h("button", { type: "submit" }, "Set"));
  priorityForm.addEventListener("submit", (event) => {
    event.preventDefault();
    change({ priority: Number(priority.value) });
  });
  const head = h("div", { className: "card", id: "task" }, top, waiting, failure, factList);
  const items = h("tbody");
  const log = h("pre", { className: "log", id: "log" });
  const logState = h("span", { className: "muted", id: "log-state" });
  const message = h("p", { className: "error" });
  fill(
    root,
    h("p", {}, h("a", { href: "#tasks" }, "← Tasks")),
    message,
    head,
    h("h2", {}, "Work items"),
    h("table", { id: "items" }, h("thead", {}, h("tr", {}, ["#", "Piece", "Status", "Progress", "Worker", "Attempt", "Exit", "Error"].map((t) => h("th", {}, t)))), items),
    h("div", { className: "row" }, h("h2", {}, "Output"), logState),
    log,
  );

  /** @type {Map<number, string>} work item id → its label, for the log's lines */
  const labels = new Map();
  let stopped = false;
  let loading = false;
  let again = false;
  /** Read the task again; a change that arrives meanwhile reads it once more after. */
  async function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      do {
        again = false;
        const task = await request("GET", `/tasks/${id}`);
        if (stopped) return;
        render(task);
      } while (again);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) showDeleted();  // deleted meanwhile
      else message.textContent = error instanceof ApiError ? error.message : "";
    } finally {
      loading = false;
    }
  }

  /** The task is gone (its deletion told by the feed, or a read that found nothing). */
  function showDeleted() {
    stopped = true;
    fill(top, h("h2", {}, `Task ${id}`), h("span", { className: "badge canceled", id: "task-status" }, "deleted"));
    message.textContent = "This task was deleted.";
  }

  /** @param {any} task */
  function render(task) {
    const buttons = [];
    if (task.status === "paused") buttons.push(button("Resume", { status: "queued" }));
    else if (!ended(task)) buttons.push(button("Pause", { status: "paused" }));
    if (!ended(task)) buttons.push(button("Cancel", { status: "canceled" }));
    else buttons.push(requeueButton(task.id, (why) => (message.textContent = why)));
    fill(
      top,
      h("h2", {}, `Task ${task.id}`),
      h("span", { className: `badge ${task.status}`, id: "task-status" }, task.status),
      progressBar(itemsProgress(task.work_items)),
      h("span", { className: "spacer" }),
      buttons,
    );
    waiting.hidden = !task.waiting;
    waiting.textContent = task.waiting ? `Waiting: ${task.waiting}` : "";
    failure.hidden = !task.error;
    failure.textContent = task.error ?? "";
    fill(facts.type, `${task.type} (parser ${task.parser})`);
    fill(facts.owner, task.owner ?? "–");
    if (ended(task)) fill(facts.priority, String(task.priority));
    else {
      if (priorityForm.parentElement !== facts.priority) fill(facts.priority, priorityForm);
      if (document.activeElement !== priority) priority.value = String(task.priority);
    }
    fill(facts.tags, (task.tags ?? []).join(", ") || "–");
    fill(facts.submitted, `${new Date(task.created_at * 1000).toLocaleString()} (${ago(task.created_at)})`);
    fill(facts.settings, h("code", {}, JSON.stringify(task.settings)));
    for (const item of task.work_items) labels.set(item.id, item.label || `#${item.index}`);
    fill(
      items,
      task.work_items.map((/** @type {any} */ item) =>
        h(
          "tr",
          { dataset: { item: String(item.id), status: item.status } },
          h("td", { className: "num" }, String(item.index)),
          h("td", {}, item.label),
          h("td", {}, h("span", { className: `badge ${item.status}` }, item.status)),
          h("td", {}, progressBar(itemsProgress([item]))),
          h("td", {}, item.worker_id == null ? "" : (feed.workers.get(item.worker_id)?.hostname ?? `#${item.worker_id}`)),
          h("td", { className: "num" }, String(item.attempt)),
          h("td", { className: "num" }, item.exit_code ?? ""),
          h("td", { className: "error" }, item.error ?? ""),
        ),
      ),
    );
  }

  /** @param {any} body what PATCH /tasks/{id} changes */
  async function change(body) {
    try {
      await request("PATCH", `/tasks/${id}`, body);
      message.textContent = "";
      load();
    } catch (error) {
      message.textContent = error instanceof ApiError ? error.message : "";
    }
  }

  /** @param {string} label @param {any} body */
  function button(label, body) {
    return h(
      "button",
      {
        type: "button",
        className: `act-${label.toLowerCase()}`,
        onclick: () => change(body),
      },
      label,
    );
  }

  // The output: the lines kept, then live ones; the manager closes the stream when the task ends.
  const socket = openSocket(`/tasks/${id}/log`);
  logState.textContent = "connecting…";
  socket.onopen = () => (logState.textContent = "following");
  socket.onclose = () => (logState.textContent = stopped ? "" : "ended");
  socket.onmessage = (event) => {
    const line = JSON.parse(event.data);
    const scrolled = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const el = h("span", { className: line.stream === "stdout" ? "" : "stderr" }, `[${labels.get(line.item) ?? `#${line.item}`} #${line.attempt}] ${line.line}\n`);
    log.append(el);
    while (log.childElementCount > MAX_LINES) log.firstElementChild?.remove();
    if (scrolled) log.scrollTop = log.scrollHeight;
  };

  const stop = listen(feed, {
    task: (/** @type {any} */ event) => event.detail.id === id && load(),
    task_deleted: (/** @type {any} */ event) => event.detail === id && showDeleted(),
    resync: load,
  });
  load();
  return () => {
    stopped = true;
    stop();
    socket.close(1000, "left the page");
  };
}
