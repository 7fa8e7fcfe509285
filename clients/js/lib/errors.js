// The errors of herder.js, named and shaped as herder's Python ones (herder.rpc.errors),
// so that code in either language matches the same names and the same stable codes.
//
//   RpcError              base
//   ├── RemoteError       the other side answered a call with an error (code, type, data)
//   ├── ConnectionLost    the connection ended; every call in flight fails with it
//   ├── HandshakeRefused  the service (or the HTTP front door before it) refused us
//   │   └── TokenRefused  the manager sold no access token for a key
//   ├── CallTimeout       a call's timeout passed; the other side was told to cancel it
//   ├── CallCancelled     the caller's AbortSignal fired; the other side was told too
//   └── ServiceNotFound   dial() found no live instance of a service

/** Base of every error herder.js raises for the protocol's reasons. */
export class RpcError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/**
 * A call failed on the other side. `code` is the protocol's stable code
 * ("application_error", "unknown_method", "invalid_params"...), `type` for an
 * application error the other side's own code ("fenced") or its exception's class name
 * ("ValueError"), `message` the other side's text, `data` extra detail ({field} for
 * invalid_params) or null.
 */
export class RemoteError extends RpcError {
  /**
   * @param {string} code
   * @param {string} message
   * @param {string} [type]
   * @param {unknown} [data]
   */
  constructor(code, message, type = "", data = null) {
    super(`[${code}] ${type ? `${type}: ${message}` : message}`);
    // As in Python, `message` is the other side's text alone; the stack's first line
    // (made above) keeps the code and type for whoever reads a trace.
    this.message = message;
    this.code = code;
    this.type = type;
    this.data = data;
  }
}

/** The connection is gone (closed by either side, or broken). */
export class ConnectionLost extends RpcError {}

/** The service refused the connection: during the handshake, or at its HTTP door. */
export class HandshakeRefused extends RpcError {
  /**
   * @param {string} code the refusal's code ("unauthorized"...), or an HTTP status as text
   * @param {string} message
   */
  constructor(code, message) {
    super(`[${code}] ${message}`);
    this.message = message;
    this.code = code;
  }
}

/** The manager answered `POST /auth/token` with an error: the key buys nothing there. */
export class TokenRefused extends HandshakeRefused {
  /**
   * @param {number} status the HTTP status
   * @param {string} code the manager's error code ("revoked", "expired"...) or the status
   * @param {string} detail the manager's own message
   */
  constructor(status, code, detail) {
    super(code, `the manager refused the key (HTTP ${status}): ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

/** A call took longer than its timeout; a `cancel` was sent for it. */
export class CallTimeout extends RpcError {}

/** A call was abandoned through its AbortSignal; a `cancel` was sent for it. */
export class CallCancelled extends RpcError {}

/** No live instance of a service answered (none registered, or none reachable). */
export class ServiceNotFound extends RpcError {}
