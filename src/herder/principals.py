"""Who is asking, as the front doors (the agent's ``Guard``, the manager's ``FrontDoor``)
found in an access token, and what that lets them see.

Both front doors put ``(name, role)`` in the ASGI scope's ``state`` once a token checks
out; the routes ask here. Without keys and tokens there is no principal, and everything
is everyone's (loopback, or one shared secret).
"""

from __future__ import annotations

from typing import Any

STATE_KEY = "principal"


def set_principal(scope: dict[str, Any], name: str | None, role: str) -> None:
    scope.setdefault("state", {})[STATE_KEY] = (name, role)


def principal_of(scope: Any) -> tuple[str | None, str | None]:
    """(name, role) of whoever is asking; (None, None) without tokens."""
    found = scope.get("state", {}).get(STATE_KEY) if isinstance(scope, dict) else None
    return (found[0], found[1]) if found else (None, None)


def viewer_of(scope: Any) -> str | None:
    """Whose things the asker may see: their own name for a user; None (everything's) for an
    admin, or without tokens."""
    name, role = principal_of(scope)
    return None if role in (None, "admin") else name


def may_see(scope: Any, owner: str | None) -> bool:
    viewer = viewer_of(scope)
    return viewer is None or viewer == owner
