// herder.js against a real herder service (Python, test/service.py): the cases of the
// Python conformance suite (tests/test_rpc.py) that apply to a WebSocket client.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import WebSocket from "ws";

import {
  CallCancelled,
  CallTimeout,
  ConnectionLost,
  HandshakeRefused,
  RemoteError,
  RpcError,
  connect,
} from "../herder.js";
import { nextEvent, startService } from "./helpers.js";

/** @typedef {import("../herder.js").Peer} Peer */

for (const codec of /** @type {const} */ (["json", "msgpack"])) describe(`a herder service, ${codec}`, () => {
  /** @type {Awaited<ReturnType<typeof startService>>} */
  let service;
  /** @type {Peer} */
  let peer;

  before(async () => {
    service = await startService();
    peer = await connect(service.url, { WebSocket, codecs: [codec], handlers: { hello: (name) => `hello ${name}` } });
    assert.equal(peer.codec, codec);
  });

  after(async () => {
    peer?.close();
    await service?.child.stop();
  });

  test("call and result", async () => {
    assert.equal(await peer.call("square", 4), 16);
    assert.equal(await peer.callWith("add", [2], { kwargs: { b: 3 } }), 5);
    assert.deepEqual(peer.remote, { name: "math", version: "1.0.0" });
  });

  test("values travel as they are", async () => {
    const value = { text: "héllo ✓", n: -1.5, big: 2 ** 53 - 1, list: [null, true, { a: [] }], __proto__x: 1 };
    assert.deepEqual(await peer.call("echo", value), value);
    const tricky = JSON.parse('{"__proto__": {"polluted": true}}');
    const back = await peer.call("echo", tricky);
    assert.deepEqual(Object.keys(back), ["__proto__"]);
    assert.equal(/** @type {any} */ ({}).polluted, undefined);
  });

  test("calls go both ways", async () => {
    assert.equal(await peer.call("greet_back", "ann"), "HELLO ANN");
  });

  test("many in flight, answered out of order", async () => {
    /** @type {number[]} */
    const finished = [];
    const results = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const value = await peer.call("echo_after", (10 - i) * 0.05, i);
        finished.push(value);
        return value;
      }),
    );
    assert.deepEqual(results, [...Array(10).keys()]);
    assert.deepEqual(finished, [...finished].sort((a, b) => b - a));
  });

  test("a callback called several times before the reply", async () => {
    /** @type {number[]} */
    const seen = [];
    assert.equal(await peer.call("count", 5, (/** @type {number} */ i) => seen.push(i)), 5);
    assert.deepEqual(seen, [0, 1, 2, 3, 4]);
    await peer.call("count", 2, async (/** @type {number} */ i) => {
      await new Promise((r) => setImmediate(r));
      seen.push(i * 10);
    });
    assert.deepEqual(seen.slice(-2), [0, 10]);
  });

  test("a released callback cannot be called", async () => {
    /** @type {string[]} */
    const received = [];
    await peer.call("keep", (/** @type {string} */ text) => received.push(text));
    await peer.call("call_kept");
    assert.deepEqual(received, ["again"]);
    await peer.call("release_kept");
    // The service's call to the released callback failed; its error reached us as the reply.
    await assert.rejects(peer.call("call_kept"), { name: "RemoteError", code: "released_callback" });
  });

  test("a notification runs there, unanswered", async () => {
    /** @type {string[]} */
    const received = [];
    peer.notify("keep", [(/** @type {string} */ text) => received.push(text)]);
    assert.equal(await peer.call("call_kept"), 1); // keep ran before this call (in order)
    assert.deepEqual(received, ["again"]);
    peer.notify("nope"); // an unknown method: no error comes back for a notification
    assert.equal(await peer.call("square", 2), 4);
  });

  test("a timeout cancels the remote call", async () => {
    await assert.rejects(peer.callWith("wait_forever", [], { timeout: 0.1 }), CallTimeout);
    assert.equal(await peer.callWith("was_cancelled", [], { timeout: 10 }), true);
    assert.equal(await peer.call("square", 3), 9); // the connection is fine
  });

  test("an AbortSignal cancels the remote call", async () => {
    const control = new AbortController();
    const call = assert.rejects(peer.callWith("wait_forever", [], { signal: control.signal }), CallCancelled);
    await peer.call("square", 1); // the service has the call
    control.abort();
    await call;
    assert.equal(await peer.callWith("was_cancelled", [], { timeout: 10 }), true);
  });

  test("remote exceptions are typed", async () => {
    /**
     * @param {Promise<unknown>} call
     * @param {Partial<RemoteError>} expected
     */
    const fails = (call, expected) =>
      assert.rejects(call, (/** @type {RemoteError} */ error) => {
        assert.ok(error instanceof RemoteError && error instanceof RpcError);
        for (const [name, value] of Object.entries(expected)) {
          assert.deepEqual(/** @type {any} */ (error)[name], value, name);
        }
        return true;
      });
    await fails(peer.call("fail", "value"), { code: "application_error", type: "ValueError", message: "bad value" });
    await fails(peer.call("fail", "type"), { code: "application_error", type: "TypeError" });
    await fails(peer.call("fail_coded"), { code: "application_error", type: "fenced", data: { field: "attempt" } });
    await fails(peer.call("square", 1, 2), { code: "invalid_params" });
    await fails(peer.call("nope"), { code: "unknown_method", message: "no method 'nope'" });
    await fails(peer.callWith("x", [], { target: "elsewhere" }), { code: "unknown_target" });
    await fails(peer.call("secret"), { code: "unauthorized" });
    if (codec === "json") await fails(peer.call("nan"), { code: "internal_error" }); // no NaN in JSON
  });

  test("meta", async () => {
    assert.equal(await peer.callWith("ping", [], { target: "meta" }), "pong");
    assert.deepEqual(await peer.callWith("info", [], { target: "meta" }), {
      name: "math",
      version: "1.0.0",
      protocol: 1,
      codec,
    });
    const methods = await peer.callWith("methods", [], { target: "meta" });
    const square = methods.find((/** @type {{name: string}} */ m) => m.name === "square");
    assert.deepEqual(square, { name: "square", params: "(x: float) -> float", auth: false, doc: "Square a number." });
  });

  test("what the codec cannot carry is refused here, before it is sent", async () => {
    if (codec === "json") {
      await assert.rejects(peer.call("echo", NaN), TypeError);
      await assert.rejects(peer.call("echo", new Uint8Array(2)), TypeError);
    } else {
      // MessagePack carries both: bytes as bin (str and bin kept apart), NaN as a float.
      const bytes = new Uint8Array([0, 1, 2, 255]);
      assert.deepEqual(await peer.call("echo", { bytes, text: "0123" }), { bytes, text: "0123" });
      assert.deepEqual(await peer.call("echo", new Uint8Array(70_000)), new Uint8Array(70_000));
      assert.ok(Number.isNaN(await peer.call("echo", NaN)));
      assert.equal(await peer.call("echo", -Infinity), -Infinity);
      const numbers = [0, 127, 128, 255, 256, 65535, 65536, 2 ** 32, 2 ** 53 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, -(2 ** 53 - 1), 0.5, -1.25e300];
      assert.deepEqual(await peer.call("echo", numbers), numbers);
      const long = { text: "é".repeat(40_000), list: Array.from({ length: 70_000 }, (_, i) => i % 3), map: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])) };
      assert.deepEqual(await peer.call("echo", long), long);
    }
    await assert.rejects(peer.call("echo", new Map()), TypeError);
    await assert.rejects(peer.call("echo", { $cb: 1 }), /reserved for callbacks/);
    assert.deepEqual(await peer.call("echo", { $cb: 1, other: 2 }), { $cb: 1, other: 2 });
    await assert.rejects(peer.call("echo", "x".repeat(17 * 1024 * 1024)), RpcError);
    assert.equal(await peer.call("square", 2), 4);
  });

  test("a large result arrives whole", async () => {
    assert.equal((await peer.call("blob", 1024 * 1024)).length, 1024 * 1024);
  });
});

describe("methods this side offers", () => {
  /** @type {Awaited<ReturnType<typeof startService>>} */
  let service;
  /** @type {Peer} */
  let peer;
  /** @type {AbortSignal[]} */
  const signals = [];
  /** @type {unknown[]} */
  const notified = [];
  /** @type {(() => void)[]} calls of "hold" waiting to be let go */
  const held = [];
  /** Called when a call of "hold" starts or one is refused. */
  let changed = () => {};

  before(async () => {
    service = await startService();
    peer = await connect(service.url, { WebSocket, maxInFlight: 3, info: { name: "page", version: "2.0.0" } });
    peer
      .handle("double", (x) => x * 2, { params: "(x: number)", doc: "Twice x." })
      .handle("fail", () => {
        throw Object.assign(new RangeError("out of range"), { field: "x" });
      })
      .handle("coded", () => {
        throw Object.assign(new Error("the lease ended"), { code: "fenced" });
      })
      .handle("nan", () => NaN)
      .handle("named", (a, kwargs) => `${a} ${kwargs.b}`, { kwargs: true })
      .handle("hold", async (/** @type {number} */ i) => {
        await new Promise((r) => {
          held.push(() => r(undefined));
          changed();
        });
        return i;
      })
      .handle("forever", function () {
        signals.push(this.signal);
        return new Promise(() => {});
      })
      .handle("note", (/** @type {unknown} */ value) => {
        notified.push(value);
      });
  });

  after(async () => {
    peer?.close();
    await service?.child.stop();
  });

  /**
   * The service calls `method` here; what it got back.
   * @param {string} method
   * @param {unknown[]} args
   * @param {Record<string, unknown>} [kwargs]
   */
  const called = (method, args, kwargs) => peer.call("call_client", method, args, kwargs ?? null);

  test("the service calls them and gets their results", async () => {
    assert.deepEqual(await called("double", [21]), { result: 42 });
    assert.deepEqual(await called("named", ["a"], { b: "b" }), { result: "a b" });
  });

  test("their errors reach the service typed", async () => {
    const { error } = await called("fail", []);
    assert.deepEqual(error, { code: "application_error", type: "RangeError", message: "out of range", data: { field: "x" } });
    assert.equal((await called("coded", [])).error.type, "fenced");
    assert.equal((await called("missing", [])).error.code, "unknown_method");
    assert.equal((await called("double", [1], { y: 2 })).error.code, "invalid_params");
    assert.equal((await called("nan", [])).error.code, "internal_error");
  });

  test("meta, answered here", async () => {
    assert.deepEqual(await peer.call("call_client", "ping", [], null, "meta"), { result: "pong" });
    assert.deepEqual(await peer.call("call_client", "info", [], null, "meta"), {
      result: { name: "page", version: "2.0.0", protocol: 1, codec: "json" },
    });
    const { result } = await peer.call("call_client", "methods", [], null, "meta");
    assert.deepEqual(
      result.find((/** @type {{name: string}} */ m) => m.name === "double"),
      { name: "double", params: "(x: number)", auth: false, doc: "Twice x." },
    );
    assert.deepEqual(result.map((/** @type {{name: string}} */ m) => m.name), [...peer.handlers.keys()].sort());
    assert.equal((await peer.call("call_client", "nope", [], null, "meta")).error.code, "unknown_method");
    assert.equal((await peer.call("call_client", "x", [], null, "elsewhere")).error.code, "unknown_target");
  });

  test("calls past the in-flight limit are refused", async () => {
    /** @type {string[]} */
    const refused = [];
    // Three run (held here) while the five others are refused; then the three finish.
    const full = new Promise((resolve) => {
      changed = () => held.length === 3 && refused.length === 5 && resolve(undefined);
    });
    const onRefused = (/** @type {Event} */ e) => {
      refused.push(/** @type {CustomEvent} */ (e).detail.method);
      changed();
    };
    peer.addEventListener("overloaded", onRefused);
    const flood = peer.call("flood_client", "hold", 8);
    await full;
    peer.removeEventListener("overloaded", onRefused);
    for (const release of held.splice(0)) release();
    const results = await flood;
    assert.deepEqual(refused, Array(5).fill("hold"));
    assert.deepEqual(results.slice(0, 3), [0, 1, 2]);
    assert.deepEqual(new Set(results.slice(3)), new Set(["overloaded"]));
    assert.deepEqual(await called("double", [2]), { result: 4 }); // and it serves again
  });

  test("a cancel from the caller aborts the handler's signal", async () => {
    assert.equal(await peer.call("timeout_client", "forever", 0.1), "timed out");
    assert.equal(signals.length, 1);
    if (!signals[0].aborted) await new Promise((r) => signals[0].addEventListener("abort", r, { once: true }));
    assert.equal(signals[0].aborted, true);
  });

  test("a function the service passes is called back there, and cannot be passed back", async () => {
    peer.handle("use", async (/** @type {import("../lib/connection.js").RemoteCallback} */ double) => {
      const doubled = await double(21);
      const passedBack = await peer.call("echo", double).then(
        () => "sent",
        (/** @type {Error} */ error) => error.name,
      );
      await double.release();
      const afterRelease = await double(1).then(
        () => "answered",
        (/** @type {RemoteError} */ error) => error.code,
      );
      return [doubled, passedBack, afterRelease];
    });
    try {
      assert.deepEqual(await peer.call("give_client_callback", "use"), [42, "TypeError", "released_callback"]);
    } finally {
      peer.unhandle("use");
    }
  });

  test("notifications run without an answer", async () => {
    await peer.call("notify_client", "note", ["first"]);
    await peer.call("notify_client", "missing", ["ignored"]); // no error, not even for this
    assert.equal(await peer.call("square", 2), 4); // the notifications arrived before this answer
    assert.deepEqual(notified, ["first"]);
  });
});

describe("connecting", () => {
  test("a shared secret", async () => {
    const service = await startService(["--secret", "s3cret"]);
    try {
      const withToken = await connect(service.url, { token: "s3cret", WebSocket });
      assert.equal(await withToken.call("secret"), "only with credentials");
      withToken.close();
      // As a browser sends it: the subprotocol herder.bearer.<token> (and the hello).
      const asBrowser = await connect(service.url, { token: "s3cret", tokenIn: "subprotocol", WebSocket });
      assert.equal(await asBrowser.call("secret"), "only with credentials");
      asBrowser.close();
      // A token source is asked at each connection (a key buys a fresh one).
      const fromFunction = await connect(service.url, { token: async () => "s3cret", WebSocket });
      assert.equal(await fromFunction.call("secret"), "only with credentials");
      fromFunction.close();
      await assert.rejects(connect(service.url, { token: "wrong", WebSocket }), (/** @type {HandshakeRefused} */ error) => {
        assert.ok(error instanceof HandshakeRefused);
        assert.equal(error.code, "unauthorized");
        return true;
      });
      const anonymous = await connect(service.url, { WebSocket });
      assert.equal(await anonymous.call("square", 2), 4);
      await assert.rejects(anonymous.call("secret"), { code: "unauthorized" });
      anonymous.close();
    } finally {
      await service.child.stop();
    }
  });

  test("nothing listening", async () => {
    const service = await startService();
    await service.child.stop();
    await assert.rejects(connect(service.url, { WebSocket }), ConnectionLost);
  });

  test("without a WebSocket in Node 20, the error says what to pass", async () => {
    if (typeof globalThis.WebSocket === "function") return; // Node 22 has one
    await assert.rejects(connect("ws://127.0.0.1:1/rpc"), /pass one as \{WebSocket\}/);
  });

  test("connection loss fails pending calls", async () => {
    const service = await startService();
    const peer = await connect(service.url, { WebSocket });
    try {
      const pending = assert.rejects(peer.call("wait_forever"), ConnectionLost);
      await peer.call("square", 1);
      const closed = nextEvent(peer, "close");
      await service.child.kill();
      await pending;
      await closed;
      await assert.rejects(peer.call("square", 2), ConnectionLost);
    } finally {
      peer.close();
    }
  });

  test("closing fails pending calls", async () => {
    const service = await startService();
    try {
      const peer = await connect(service.url, { WebSocket });
      const pending = assert.rejects(peer.call("wait_forever"), /connection lost: closed by this side/);
      await peer.call("square", 1);
      peer.close();
      await pending;
    } finally {
      await service.child.stop();
    }
  });

  test("reconnect with backoff: calls wait for the next connection", async () => {
    const first = await startService();
    const peer = await connect(first.url, { WebSocket, reconnect: { initial: 0.05, max: 0.5 }, handlers: { hello: (n) => `hi ${n}` } });
    /** @type {Awaited<ReturnType<typeof startService>> | null} */
    let second = null;
    try {
      assert.equal(await peer.call("square", 3), 9);
      const pending = assert.rejects(peer.call("wait_forever"), ConnectionLost);
      await peer.call("square", 1);
      const closed = nextEvent(peer, "close");
      await first.child.kill();
      await pending;
      await closed;
      assert.equal(peer.connected, false);
      const waiting = peer.callWith("square", [5], { timeout: 30 }); // waits for the next link
      const reopened = nextEvent(peer, "open", 30);
      second = await startService(["--port", String(first.port)]);
      await reopened;
      assert.equal(await waiting, 25);
      assert.equal(await peer.call("greet_back", "bo"), "HI BO"); // handlers outlive connections
    } finally {
      peer.close();
      await second?.child.stop();
    }
  });

  test("a reconnecting peer's call gives up at its timeout", async () => {
    const service = await startService();
    const peer = await connect(service.url, { WebSocket, reconnect: { initial: 0.05, max: 0.2 } });
    try {
      const closed = nextEvent(peer, "close");
      await service.child.kill();
      await closed;
      await assert.rejects(peer.callWith("square", [2], { timeout: 0.3 }), ConnectionLost);
    } finally {
      peer.close();
    }
    await assert.rejects(peer.call("square", 2), ConnectionLost); // closed: no more waiting
  });
});
