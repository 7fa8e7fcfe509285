// Real herder processes for the tests: a Python service (service.py beside this file)
// and a manager, on loopback with free ports, each stopped by its pid.

import { execFile, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../../..");
/** herder's Python (the project's venv unless HERDER_PYTHON says otherwise). */
export const PYTHON = process.env.HERDER_PYTHON ?? join(repo, ".venv/bin/python");
export const HERDER = process.env.HERDER_BIN ?? join(dirname(PYTHON), "herder");
const run = promisify(execFile);
/** Seconds a process has to start, and to stop after SIGTERM before SIGKILL. */
const START_S = 30;
const STOP_S = 10;

/**
 * A child process we started, stopped by its pid.
 */
export class Child {
  /** @param {import("node:child_process").ChildProcess} proc */
  constructor(proc) {
    this.proc = proc;
    this.pid = /** @type {number} */ (proc.pid);
    this.output = "";
    this.exited = once(proc, "exit");
  }

  /**
   * The first match of `pattern` in what the process writes on `stream`.
   * @param {"stdout" | "stderr"} stream
   * @param {RegExp} pattern
   * @returns {Promise<RegExpMatchArray>}
   */
  waitFor(stream, pattern) {
    const source = /** @type {import("node:stream").Readable} */ (this.proc[stream]);
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => fail(`no ${pattern} within ${START_S} s`), START_S * 1000);
      /** @param {string} why */
      const fail = (why) => {
        cleanup();
        this.stop();
        reject(new Error(`${why}; it wrote:\n${this.output}`));
      };
      /** @param {Buffer} chunk */
      const onData = (chunk) => {
        this.output += chunk.toString();
        const match = pattern.exec(this.output);
        if (match) {
          cleanup();
          resolvePromise(match);
        }
      };
      const onExit = () => fail("it exited");
      const cleanup = () => {
        clearTimeout(timer);
        source.off("data", onData);
        this.proc.off("exit", onExit);
        // Keep draining: a pipe nobody reads would block the process's writes.
        source.on("data", (/** @type {Buffer} */ chunk) => {
          this.output += chunk.toString();
        });
      };
      source.on("data", onData);
      this.proc.once("exit", onExit);
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited within STOP_S. */
  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    process.kill(this.pid, "SIGTERM");
    const timer = setTimeout(() => {
      if (this.proc.exitCode === null && this.proc.signalCode === null) process.kill(this.pid, "SIGKILL");
    }, STOP_S * 1000);
    await this.exited;
    clearTimeout(timer);
  }

  /** SIGKILL now (a host that dies), and wait for it to be gone. */
  async kill() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    process.kill(this.pid, "SIGKILL");
    await this.exited;
  }
}

/**
 * A Python herder service (test/service.py) with the given arguments.
 * @param {string[]} [args]
 * @returns {Promise<{child: Child, url: string, port: number, ready: Record<string, string>}>}
 */
export async function startService(args = []) {
  const proc = spawn(PYTHON, [join(here, "service.py"), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const child = new Child(proc);
  proc.stderr.on("data", (/** @type {Buffer} */ chunk) => {
    child.output += chunk.toString();
  });
  const match = await child.waitFor("stdout", /^(\{.*\})$/m);
  const ready = JSON.parse(match[1]);
  return { child, url: ready.url, port: Number(new URL(ready.url).port), ready };
}

/**
 * A real `herder manager` on a free port, with SQLite in a temporary data dir. With
 * `keys`, auth is on (`herder keys init`) and `key` is a key issued to `alice` (a user).
 *
 * `port` and `dataDir` start one again where a killed one was (its database, its keys).
 *
 * @param {{keys?: boolean, port?: number, dataDir?: string}} [options]
 * @returns {Promise<{child: Child, url: string, dataDir: string, key: string | null, issue: (user: string, role?: string) => Promise<string>, stop: () => Promise<void>}>}
 */
export async function startManager(options = {}) {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "herder-js-manager-"));
  const db = `sqlite:///${join(dataDir, "manager.db")}`;
  /** @param {string} user @param {string} [role] */
  const issue = async (user, role = "user") => {
    const { stdout } = await run(HERDER, ["keys", "issue", "--user", user, "--role", role, "--data-dir", dataDir, "--db", db]);
    return stdout.trim();
  };
  let key = null;
  if (options.keys) {
    await run(HERDER, ["keys", "init", "--data-dir", dataDir]);
    key = await issue("alice");
  }
  const args = ["manager", "--port", String(options.port ?? 0), "--data-dir", dataDir, "--db", db];
  // The services here listen on loopback, which the manager's proxy refuses by default.
  args.push("--proxy-allow-network", "127.0.0.0/8");
  const proc = spawn(HERDER, args, { stdio: ["ignore", "pipe", "pipe"] });
  const child = new Child(proc);
  proc.stdout.on("data", () => {});
  const match = await child.waitFor("stderr", /herder manager listening on (http:\/\/\S+)/);
  return {
    child,
    url: match[1],
    dataDir,
    key,
    issue,
    stop: async () => {
      await child.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Resolves with the event's detail the next time `target` dispatches `type`.
 * @param {EventTarget} target
 * @param {string} type
 * @param {number} [seconds]
 * @returns {Promise<any>}
 */
export function nextEvent(target, type, seconds = 20) {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${type}' event within ${seconds} s`)), seconds * 1000);
    target.addEventListener(
      type,
      (event) => {
        clearTimeout(timer);
        resolvePromise(/** @type {CustomEvent} */ (event).detail);
      },
      { once: true },
    );
  });
}
