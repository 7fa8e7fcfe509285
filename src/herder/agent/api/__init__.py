"""The agent's faces: HTTP/WebSocket routes, the pools API, the wire-protocol service and the front door."""
