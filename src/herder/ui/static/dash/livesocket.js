// One WebSocket to a daemon's live feed, kept open with backoff: the manager's (live.js)
// and the agent's (agent/feed.js) differ only in what they open, what they make of a
// message, and how they tell a refused token from a daemon that is away.

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;

/** Events: "state" (detail: "on" / "off"); subclasses add their own. */
export class LiveSocket extends EventTarget {
  constructor() {
    super();
    this.connected = false;
    this.stopped = true;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.backoff = BACKOFF_MIN_MS;
    /** @type {number | undefined} */
    this.timer = undefined;
  }

  /** The socket to open (may throw: then the feed stays off). @returns {WebSocket} */
  open() {
    throw new Error("LiveSocket.open is the subclass's");
  }

  /** A message of the feed, parsed. @param {any} _message */
  handle(_message) {}

  /** Called once a socket is open, before "state" says so. @param {WebSocket} _socket */
  opened(_socket) {}

  /**
   * Whether the session no longer holds: a refused socket says nothing of why, so one
   * call finds a token that was refused (401), and then no retry is made.
   * @returns {Promise<boolean>}
   */
  async signedOut() {
    return false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  /** @param {string} [why] */
  stop(why = "signed out") {
    this.stopped = true;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, why);
  }

  connect() {
    let socket;
    try {
      socket = this.open();
    } catch (error) {
      this.state("off");
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.backoff = BACKOFF_MIN_MS;
      this.opened(socket);
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

  async reconnect() {
    if (await this.signedOut()) return;
    if (this.stopped) return;
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
  }

  /** @param {string} value */
  state(value) {
    this.connected = value === "on";
    this.dispatchEvent(new CustomEvent("state", { detail: value }));
  }
}
