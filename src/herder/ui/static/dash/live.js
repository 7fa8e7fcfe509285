// The live feed: one WebSocket to /events per tab, reconnected with backoff. It keeps
// the workers (the snapshot, then each change) and passes task changes on to whichever
// view shows them. Nothing polls: what changes arrives.

import { openEvents, request, SignedOut } from "./api.js";

const HISTORY = 60; // load samples per worker, as the manager keeps
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

/**
 * Events: "workers" (the whole set changed), "worker" (detail: one worker), "task"
 * (detail: a task document, with its progress), "resync" (reload what you show),
 * "progress" (detail: {id: percent}, the answer to ask()), "state" (detail: "on"/"off").
 */
export class Feed extends EventTarget {
  constructor() {
    super();
    /** @type {Map<number, any>} by id */
    this.workers = new Map();
    this.connected = false;
    this.stopped = true;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.backoff = BACKOFF_MIN_MS;
    /** @type {number | undefined} */
    this.timer = undefined;
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

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close(1000, "signed out");
    this.socket = null;
  }

  connect() {
    let socket;
    try {
      socket = openEvents();
    } catch (error) {
      this.state("off");
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = BACKOFF_MIN_MS;
      for (const question of this.questions.splice(0)) socket.send(JSON.stringify(question));
      this.state("on");
    };
    socket.onmessage = (message) => this.handle(JSON.parse(message.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.state("off");
      if (!this.stopped) this.reconnect();
    };
  }

  /** Before connecting again, one call finds whether the session still holds (a 401 ends it). */
  async reconnect() {
    try {
      await request("GET", "/tasks?limit=1");
    } catch (error) {
      if (error instanceof SignedOut) return;
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
  }

  /** @param {string} value */
  state(value) {
    this.connected = value === "on";
    this.dispatchEvent(new CustomEvent("state", { detail: value }));
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
      case "resync":
        this.dispatchEvent(new Event("resync"));
        break;
      case "progress":
        this.dispatchEvent(new CustomEvent("progress", { detail: message.progress }));
        break;
    }
  }
}
