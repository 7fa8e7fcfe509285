// dial, find, watch and register against a real `herder manager`, with real Python
// services registered in it, and herder's own Python CLI calling a page that herder.js
// registered without a URL (the manager relays the call over the page's link).

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import WebSocket from "ws";

import {
  HandshakeRefused,
  RemoteError,
  ServiceNotFound,
  TokenRefused,
  buyToken,
  connect,
  connectManager,
  dial,
  find,
  managerBaseUrl,
  managerRpcUrl,
  register,
  watch,
} from "../herder.js";
import { HERDER, nextEvent, startManager, startService } from "./helpers.js";

const run = promisify(execFile);
const MATH = "/alice/prod/math/1.0.0/eu/host-1";
const PAGE = "/alice/dev/page/1.0.0/browser/tab/page-1";

/** @typedef {import("../herder.js").Peer} Peer */

/**
 * `herder call` (herder's Python CLI) with these arguments: its output, parsed.
 * @param {string[]} args
 */
async function herderCall(...args) {
  const { stdout } = await run(HERDER, ["call", ...args], { timeout: 60_000 });
  return JSON.parse(stdout);
}

/**
 * Resolves with the next watch event matching `wanted`.
 * @param {string} manager
 * @param {string} query
 * @param {(event: import("../lib/discovery.js").WatchEvent) => boolean} wanted
 * @param {Record<string, unknown>} [options]
 */
function watchFor(manager, query, wanted, options = {}) {
  /** @type {{close: () => void}} */
  let watching = { close: () => {} };
  /** @type {() => void} */
  let onOpen = () => {};
  const opened = new Promise((resolve) => {
    onOpen = () => resolve(undefined);
  });
  const seen = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no such event for ${query} within 20 s`)), 20_000);
    watching = watch(query, {
      manager,
      WebSocket,
      ...options,
      onOpen,
      onEvent: (event) => {
        if (!wanted(event)) return;
        clearTimeout(timer);
        resolve(event);
      },
    });
  });
  return { opened, seen, close: () => watching.close() };
}

test("manager URLs in either form", () => {
  assert.equal(managerBaseUrl("http://127.0.0.1:8020/"), "http://127.0.0.1:8020");
  assert.equal(managerBaseUrl("wss://example.org/herder/rpc"), "https://example.org/herder");
  assert.equal(managerRpcUrl("http://127.0.0.1:8020"), "ws://127.0.0.1:8020/rpc");
  assert.equal(managerRpcUrl("https://example.org/herder/"), "wss://example.org/herder/rpc");
  assert.throws(() => managerBaseUrl("tcp://127.0.0.1:1"), TypeError);
});

/** @type {Awaited<ReturnType<typeof startManager>>} without auth */
let manager;
/** @type {Awaited<ReturnType<typeof startManager>>} with keys (auth on) */
let keyed;

before(async () => {
  // Both at once: each takes a few seconds to start.
  [manager, keyed] = await Promise.all([startManager(), startManager({ keys: true })]);
});

after(async () => {
  await Promise.all([manager?.stop(), keyed?.stop()]);
});

describe("a manager without auth", () => {
  test("dial finds a live instance, and follows the registry when it goes", async () => {
    await assert.rejects(dial("/alice/prod/math", { manager: manager.url, WebSocket }), ServiceNotFound);
    const first = await startService(["--register", `${MATH}/math-1`, "--manager", manager.url]);
    /** @type {Awaited<ReturnType<typeof startService>> | null} */
    let second = null;
    const peer = await dial("/alice/prod/math", { manager: manager.url, WebSocket, reconnect: { initial: 0.5, max: 5 } });
    try {
      assert.deepEqual(
        (await find("/alice/prod/math", { manager: manager.url, WebSocket })).map((s) => [s.key, s.url, s.relay]),
        [[`${MATH}/math-1`, first.url, false]],
      );
      assert.equal(await peer.call("square", 4), 16);
      assert.equal(peer.url, first.url);
      const closed = nextEvent(peer, "close");
      await first.child.kill(); // its link closes: it drops out of the registry
      await closed;
      const reopened = nextEvent(peer, "open", 30);
      second = await startService(["--register", `${MATH}/math-2`, "--manager", manager.url]);
      assert.equal((await reopened).url, second.url); // woken by the watch, not the backoff
      assert.equal(await peer.call("square", 5), 25);
    } finally {
      peer.close();
      await first.child.stop();
      await second?.child.stop();
    }
  });

  test("watch sees services come and go", async () => {
    const registered = watchFor(manager.url, "/alice/prod", (e) => e.event === "registered");
    const gone = watchFor(manager.url, "/alice/prod", (e) => e.event === "deregistered");
    await Promise.all([registered.opened, gone.opened]);
    const service = await startService(["--register", `${MATH}/math-3`, "--manager", manager.url]);
    try {
      const event = /** @type {any} */ (await registered.seen);
      assert.equal(event.service.key, `${MATH}/math-3`);
      await service.child.stop();
      assert.equal(/** @type {any} */ (await gone.seen).service.key, `${MATH}/math-3`);
    } finally {
      registered.close();
      gone.close();
      await service.child.stop();
    }
  });

  test("register a service with a URL: a ttl renewed, then deregistered", async () => {
    const service = await startService();
    const link = await connectManager({ manager: manager.url, WebSocket });
    try {
      const registration = await register(link, `${MATH}/by-js`, { url: service.url, ttl: 0.6, metadata: { zone: "a" } });
      assert.equal(registration.id, "by-js");
      assert.equal(registration.document?.relay, false);
      assert.equal(typeof registration.document?.expires_at, "number");
      for (let i = 0; i < 3; i++) await nextEvent(registration, "renewed"); // kept past its ttl
      const found = await find(`${MATH}/by-js`, { manager: manager.url, WebSocket });
      assert.deepEqual(found.map((s) => [s.url, s.metadata]), [[service.url, { zone: "a" }]]);
      // herder's Python finds and calls it through the registry.
      assert.equal(await herderCall(`${MATH}/by-js`, "square", "6", "--manager", manager.url), 36);
      await registration.close();
      assert.deepEqual(await find(`${MATH}/by-js`, { manager: manager.url, WebSocket }), []);
    } finally {
      link.close();
      await service.child.stop();
    }
  });

  test("a page registered without a URL is called through the manager's relay", async () => {
    /** @type {string[]} */
    const alerts = [];
    const link = await connectManager({ manager: manager.url, WebSocket, reconnect: { initial: 0.1, max: 1 } });
    link.handle("alert", (text) => {
      if (typeof text !== "string") throw Object.assign(new Error("alert needs a text"), { field: "text" });
      alerts.push(text);
      return `shown: ${text}`;
    }, { params: "(text: str)", doc: "Show text." });
    link.handle("countdown", async (n, tick) => {
      for (let i = n; i > 0; i--) await tick(i);
      return "liftoff";
    });
    try {
      const registration = await register(link, PAGE, { metadata: { title: "a tab" } });
      assert.equal(registration.document?.relay, true);
      assert.deepEqual(link.info, { name: "page", version: "1.0.0" });
      // herder's Python CLI reaches this page through the manager.
      assert.equal(await herderCall("/alice/dev/page", "alert", "hi", "--manager", manager.url), "shown: hi");
      const listed = await run(HERDER, ["call", "/alice/dev/page", "--methods", "--manager", manager.url]);
      assert.match(listed.stdout, /alert\(text: str\).*Show text\./);
      // And herder.js does too, callbacks crossing the relay both ways.
      const caller = await dial("/alice/dev/page", { manager: manager.url, WebSocket });
      try {
        assert.deepEqual(caller.remote, { name: "page", version: "1.0.0" });
        assert.equal(await caller.call("alert", "from js"), "shown: from js");
        assert.equal(await caller.callWith("alert", ["by name"], { target: "page" }), "shown: by name");
        /** @type {number[]} */
        const ticks = [];
        assert.equal(await caller.call("countdown", 2, (/** @type {number} */ i) => ticks.push(i)), "liftoff");
        assert.deepEqual(ticks, [2, 1]);
        await assert.rejects(caller.call("alert", 3), { code: "application_error", data: { field: "text" } });
        assert.deepEqual(alerts, ["hi", "from js", "by name"]);
      } finally {
        caller.close();
      }
      await registration.close();
      assert.deepEqual(await find("/alice/dev/page", { manager: manager.url, WebSocket }), []);
    } finally {
      link.close();
    }
  });

  test("a page that reconnects registers again", async () => {
    const port = new URL(manager.url).port;
    const link = await connectManager({ manager: manager.url, WebSocket, reconnect: { initial: 0.1, max: 1 } });
    link.handle("alert", (text) => `shown: ${text}`);
    try {
      const registration = await register(link, PAGE);
      const registeredAgain = nextEvent(registration, "registered", 60);
      await manager.child.kill(); // the manager goes away, and its registry with it
      manager = await startManager({ port: Number(port), dataDir: manager.dataDir });
      await registeredAgain;
      assert.equal(await herderCall("/alice/dev/page", "alert", "back", "--manager", manager.url), "shown: back");
      await registration.close();
    } finally {
      link.close();
    }
  });
});

describe("a manager with keys", () => {
  test("a key buys a token; a bad key is refused", async () => {
    const bought = await buyToken(keyed.url, /** @type {string} */ (keyed.key));
    assert.equal(typeof bought.token, "string");
    assert.ok(bought.expires_at > Date.now() / 1000);
    await assert.rejects(buyToken(keyed.url, "not-a-key"), (/** @type {TokenRefused} */ error) => {
      assert.ok(error instanceof TokenRefused);
      assert.equal(error.status, 401);
      return true;
    });
  });

  test("no token: the manager's door refuses the upgrade", async () => {
    await assert.rejects(connect(managerRpcUrl(keyed.url), { WebSocket }), HandshakeRefused);
  });

  test("a page registers with the user's key, in a header or as a browser does", async () => {
    const key = /** @type {string} */ (keyed.key);
    for (const tokenIn of /** @type {const} */ (["header", "subprotocol"])) {
      const link = await connectManager({ manager: keyed.url, key, WebSocket, tokenIn });
      link.handle("alert", (text) => `shown: ${text}`);
      try {
        await assert.rejects(register(link, "/bob/dev/page/1.0.0/browser/tab/t"), (/** @type {RemoteError} */ error) => {
          assert.ok(error instanceof RemoteError);
          assert.match(error.message, /only under \/alice/);
          return true;
        });
        const registration = await register(link, PAGE);
        // Another user finds it and calls it, with their own key.
        const carol = await keyed.issue("carol");
        const tab = await dial("/alice/dev/page", { manager: keyed.url, key: carol, WebSocket, tokenIn });
        assert.equal(await tab.call("alert", tokenIn), `shown: ${tokenIn}`);
        tab.close();
        const seen = watchFor(keyed.url, "/alice/dev", (e) => e.event === "deregistered", { key: carol, tokenIn });
        await seen.opened;
        await registration.close();
        await seen.seen;
        seen.close();
      } finally {
        link.close();
      }
    }
  });
});
