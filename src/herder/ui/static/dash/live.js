// The live feed: one WebSocket to /events per tab, reconnected with backoff. It keeps
// the workers (the snapshot, then each change) and passes task changes on to whichever
// view shows them. Nothing polls: what changes arrives.

import { openEvents, request, SignedOut } from "./api.js";
import { LiveSocket } from "./livesocket.js";

const HISTORY = 60; // load samples per worker, as the manager keeps

/**
 * Events: "workers" (the whole set changed), "worker" (detail: one worker), "task"
 * (detail: a task document, with its progress), "task_deleted" (detail: its id), "resync"
 * (reload what you show),
 * "progress" (detail: {id: percent}, the answer to ask()), "state" (detail: "on"/"off").
 */
export class Feed extends LiveSocket {
  constructor() {
    super();
    /** @type {Map<number, any>} by id */
    this.workers = new Map();
    /** @type {any[]} questions waiting for the socket to open */
    this.questions = [];
  }

  /**
   * Ask the manager something on the feed (`{type: "progress", ids}`); sent once the
   * socket is open. Answers come as events of their type.
   * @param {any} question
   */
  ask(question) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(question));
    else this.questions.push(question);
  }

  open() {
    return openEvents();
  }

  /** @param {WebSocket} socket */
  opened(socket) {
    for (const question of this.questions.splice(0)) socket.send(JSON.stringify(question));
  }

  async signedOut() {
    try {
      await request("GET", "/tasks?limit=1");
    } catch (error) {
      if (error instanceof SignedOut) return true;
    }
    return false;
  }

  /** @param {any} message */
  handle(message) {
    switch (message.type) {
      case "snapshot":
        this.workers = new Map(message.workers.map((w) => [w.id, w]));
        this.dispatchEvent(new Event("workers"));
        break;
      case "worker": {
        const worker = message.worker;
        const before = this.workers.get(worker.id);
        const history = before?.history ? [...before.history] : [];
        const load = worker.update_frequent?.load_average?.["1min"];
        if (typeof load === "number" && (!before || before.last_seen !== worker.last_seen)) {
          history.push(load);
          if (history.length > HISTORY) history.shift();
        }
        this.workers.set(worker.id, { ...worker, history });
        this.dispatchEvent(new CustomEvent("worker", { detail: this.workers.get(worker.id) }));
        break;
      }
      case "task":
        this.dispatchEvent(new CustomEvent("task", { detail: message.task }));
        break;
      case "task_deleted":
        this.dispatchEvent(new CustomEvent("task_deleted", { detail: message.id }));
        break;
      case "resync":
        this.dispatchEvent(new Event("resync"));
        break;
      case "progress":
        this.dispatchEvent(new CustomEvent("progress", { detail: message.progress }));
        break;
    }
  }
}
