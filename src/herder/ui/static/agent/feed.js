// The agent's live feed: one WebSocket to its /events (herder.agent.api.events), kept
// open with backoff. It holds the processes and pools as the agent last described them;
// the views draw from it when it says "change". Nothing polls.

import { call, socket } from "./api.js";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

/** Events: "change" (the processes or pools changed), "state" (detail: "on" / "off"). */
export class AgentFeed extends EventTarget {
  constructor() {
    super();
    /** @type {Map<string, any>} by slug, in creation order */
    this.processes = new Map();
    /** @type {Map<string, any>} by name */
    this.pools = new Map();
    this.stopped = true;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.backoff = BACKOFF_MIN_MS;
    /** @type {number | undefined} */
    this.timer = undefined;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "signed out");
  }

  connect() {
    const ws = socket("/events");
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = BACKOFF_MIN_MS;
      this.emit("state", "on");
    };
    ws.onmessage = (message) => this.take(JSON.parse(message.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.emit("state", "off");
      if (!this.stopped) this.retry();
    };
  }

  /** A refused socket says nothing of why: one call finds a token that no longer holds (401). */
  async retry() {
    try {
      await call("GET", "/");
    } catch (error) {
      if (/** @type {any} */ (error)?.status === 401) return;
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
  }

  /** @param {string} name @param {any} [detail] */
  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  /** @param {any} message */
  take(message) {
    switch (message.type) {
      case "snapshot":
        this.processes = new Map(message.processes.map((p) => [p.slug, p]));
        this.pools = new Map(message.pools.map((p) => [p.name, p]));
        break;
      case "process":
        this.processes.set(message.process.slug, message.process);
        break;
      case "process_deleted":
        this.processes.delete(message.slug);
        break;
      case "pool":
        this.pools.set(message.pool.name, message.pool);
        break;
      case "pool_deleted":
        this.pools.delete(message.name);
        break;
      default:
        return; // "resync": its snapshot follows
    }
    this.emit("change", message.type);
  }
}
