// The agent's live feed: one WebSocket to its /events (herder.agent.api.events), kept
// open with backoff. It holds the processes, pools and sessions as the agent last
// described them; the views draw from it when it says "change". Nothing polls.

import { LiveSocket } from "../dash/livesocket.js";
import { call, socket } from "./api.js";

/** Events: "change" (detail: what changed, the message's type), "state" (detail: "on" / "off"). */
export class AgentFeed extends LiveSocket {
  constructor() {
    super();
    /** @type {Map<string, any>} by slug, in creation order */
    this.processes = new Map();
    /** @type {Map<string, any>} by name */
    this.pools = new Map();
    /** @type {any[]} every session (meta.list_sessions' documents) */
    this.sessions = [];
  }

  open() {
    return socket("/events");
  }

  async signedOut() {
    try {
      await call("GET", "/");
    } catch (error) {
      if (/** @type {any} */ (error)?.status === 401) return true;
    }
    return false;
  }

  /** @param {string} name @param {any} [detail] */
  emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  /** @param {any} message */
  handle(message) {
    switch (message.type) {
      case "snapshot":
        this.processes = new Map(message.processes.map((p) => [p.slug, p]));
        this.pools = new Map(message.pools.map((p) => [p.name, p]));
        this.sessions = []; // a "sessions" message follows when there are any
        break;
      case "sessions":
        this.sessions = message.sessions;
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
