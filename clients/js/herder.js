// herder.js: herder's wire protocol (docs/protocol.md) in the browser and in Node.
//
//   import { connect } from "./herder.js";
//   const math = await connect("ws://127.0.0.1:3636/rpc");
//   await math.call("square", 4);          // 16
//
// A plain ES module with no build step and no dependency: a page imports it as it is.
// Node 20 has no global WebSocket: pass the `ws` package's as {WebSocket}.

export { connect, Peer, BACKOFF_INITIAL_S, BACKOFF_MAX_S } from "./lib/peer.js";
export {
  dial,
  find,
  register,
  watch,
  buyToken,
  connectManager,
  managerBaseUrl,
  managerRpcUrl,
  relayUrl,
  Registration,
} from "./lib/discovery.js";
export {
  RpcError,
  RemoteError,
  ConnectionLost,
  HandshakeRefused,
  TokenRefused,
  CallTimeout,
  CallCancelled,
  ServiceNotFound,
} from "./lib/errors.js";
export { DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_IN_FLIGHT, PROTOCOL_VERSION } from "./lib/connection.js";
export { msgpack } from "./lib/msgpack.js";
