// herder.js's encoding against the byte-level examples of docs/protocol.md (section 15
// and the callback conversation of section 9.5): each example, read by herder.js and
// written again, is byte for byte what herder writes.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { hello } from "../lib/connection.js";
import { parseMessage } from "../lib/messages.js";
import { msgpack } from "../lib/msgpack.js";
import { encodeValue, json } from "../lib/values.js";

const doc = readFileSync(new URL("../../../docs/protocol.md", import.meta.url), "utf-8");

/** Every marked example of the page: its name, its language and its text. */
const examples = new Map(
  [...doc.matchAll(/<!-- example: (\S+) -->\n```(\w+)\n([\s\S]*?)```/g)].map((m) => [m[1], { lang: m[2], body: m[3] }]),
);

/**
 * The bytes of a hex example (comments after `#` left out).
 * @param {string} body
 */
function hexBytes(body) {
  const digits = body
    .split("\n")
    .map((line) => line.split("#")[0])
    .join(" ")
    .trim()
    .split(/\s+/)
    .filter(Boolean);
  return Uint8Array.from(digits.map((d) => Number.parseInt(d, 16)));
}

/**
 * The payload of a TCP frame example, its length prefix checked.
 * @param {string} name
 */
function framePayload(name) {
  const bytes = hexBytes(/** @type {{body: string}} */ (examples.get(name)).body);
  const length = new DataView(bytes.buffer).getUint32(0);
  assert.equal(length, bytes.length - 4, `${name}: the prefix counts the payload`);
  return bytes.subarray(4);
}

test("the page has the examples this test reads", () => {
  for (const name of ["call-json", "call-msgpack-tcp", "error-msgpack-tcp", "cb-call", "hello-json"]) {
    assert.ok(examples.has(name), name);
  }
});

test("JSON messages are read and written as herder does", () => {
  const names = [...examples.keys()].filter(
    (n) => examples.get(n)?.lang === "json" && !/^(hello|welcome|refusal)/.test(n),
  );
  assert.ok(names.length >= 10);
  for (const name of names) {
    const body = /** @type {{body: string}} */ (examples.get(name)).body.trim();
    const message = parseMessage(json.decode(body));
    assert.equal(json.encode(message), body, name);
  }
});

test("MessagePack messages are read and written as herder does", () => {
  for (const name of ["call-msgpack-tcp", "result-msgpack-tcp", "error-msgpack-tcp", "cancel-msgpack-tcp"]) {
    const payload = framePayload(name);
    const message = parseMessage(msgpack.decode(payload));
    assert.deepEqual(msgpack.encode(message), payload, name);
  }
  // The same error over both codecs is the same message.
  const fromJson = parseMessage(json.decode(/** @type {{body: string}} */ (examples.get("error-json")).body));
  assert.deepEqual(parseMessage(msgpack.decode(framePayload("error-msgpack-tcp"))), fromJson);
});

test("a TCP JSON frame's payload is the JSON example's UTF-8", () => {
  for (const name of ["hello-json", "welcome-json", "call-json", "result-json", "error-json", "cancel-json"]) {
    const text = /** @type {{body: string}} */ (examples.get(name)).body.trim();
    assert.deepEqual(framePayload(`${name}-tcp`), new TextEncoder().encode(text), name);
  }
});

test("the hello herder.js sends is the page's", () => {
  assert.equal(hello(null, ["json"]), /** @type {{body: string}} */ (examples.get("hello-json")).body.trim());
  const tcp = framePayload("hello-tcp"); // herder's Python client, preferring MessagePack
  assert.deepEqual(new TextEncoder().encode(hello(null, ["msgpack", "json"])), tcp);
});

test("a function among the arguments goes as a callback reference", () => {
  const tick = () => {};
  const args = encodeValue([2, tick], () => ({ $cb: 1 }));
  const call = { kind: "call", id: 1, target: null, method: "countdown", args, kwargs: {} };
  assert.equal(json.encode(call), /** @type {{body: string}} */ (examples.get("cb-call")).body.trim());
});

test("malformed MessagePack is refused", () => {
  for (const bad of [[0xc1], [0xd4, 0, 0], [0x81, 0x01, 0x02], [0xa2, 0xff, 0xfe], [0x92, 0x01], [0x01, 0x02]]) {
    assert.throws(() => msgpack.decode(Uint8Array.from(bad)), JSON.stringify(bad));
  }
});
