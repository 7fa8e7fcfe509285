"""Registered methods: what a peer can serve, with their signatures and auth flags.

Methods are registered explicitly (``Service.method``), never found by reflection;
the same registry answers ``meta.methods``. Arguments are bound to the signature
before the handler runs, so a ``TypeError`` raised *inside* a handler is reported as
the application error it is, not as bad parameters.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Method:
    """One callable method."""

    name: str
    func: Handler
    auth: bool = True
    doc: str = ""
    signature: inspect.Signature | None = None
    is_async: bool = False
    # Parameters annotated with Peer receive the calling peer (not sent on the wire).
    peer_params: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, func: Handler, *, name: str | None = None, auth: bool = True) -> Method:
        sig = _signature(func)
        peer_params: tuple[str, ...] = ()
        if sig is not None:
            peer_params = tuple(
                p.name
                for p in sig.parameters.values()
                if p.annotation in ("Peer", "herder.rpc.Peer") or _is_peer(p.annotation)
            )
        doc = (inspect.getdoc(func) or "").split("\n", 1)[0]
        return cls(
            name=name or func.__name__,
            func=func,
            auth=auth,
            doc=doc,
            signature=sig,
            is_async=inspect.iscoroutinefunction(func),
            peer_params=peer_params,
        )

    def bind(self, args: list[Any], kwargs: dict[str, Any], peer: Any) -> inspect.BoundArguments | None:
        """Bind the call's arguments (and the peer, if asked for).

        Raises:
            TypeError: the arguments do not fit the signature.
        """
        if self.signature is None:
            return None
        extra = {name: peer for name in self.peer_params}
        return self.signature.bind(*args, **kwargs, **extra)

    def describe(self) -> dict[str, Any]:
        """The entry of ``meta.methods``."""
        params = "(...)"
        if self.signature is not None:
            shown = [p for p in self.signature.parameters.values() if p.name not in self.peer_params]
            params = str(self.signature.replace(parameters=shown))
        return {"name": self.name, "params": params, "auth": self.auth, "doc": self.doc}


def _signature(func: Handler) -> inspect.Signature | None:
    """The signature with string annotations resolved (``from __future__ import annotations``)."""
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, SyntaxError, TypeError):  # an annotation that does not resolve
        try:
            return inspect.signature(func)
        except (TypeError, ValueError):
            return None
    except ValueError:  # no signature (some builtins)
        return None


def _is_peer(annotation: Any) -> bool:
    from herder.rpc.peer import Peer

    return annotation is Peer


# Serves a call to a target no method is registered for: (peer, target, method, args,
# kwargs) -> result. A relay (the agent, for its sessions) installs one.
Forwarder = Callable[[Any, str, str, list[Any], dict[str, Any]], Awaitable[Any]]


class Registry:
    """Methods by target: ``None`` for the service's own, other names for other targets.

    Methods registered under the target ``"meta"`` add to the built-in meta methods.
    A ``forwarder`` serves calls to targets that are not registered here (it decides
    itself whether the target exists); without one they are ``unknown_target``.
    """

    def __init__(self) -> None:
        self._methods: dict[str | None, dict[str, Method]] = {}
        self.forwarder: Forwarder | None = None

    def add(self, method: Method, target: str | None = None) -> None:
        self._methods.setdefault(target, {})[method.name] = method

    def find(self, target: str | None, name: str) -> Method | None:
        return self._methods.get(target, {}).get(name)

    def has_target(self, target: str | None) -> bool:
        return target in self._methods

    def describe(self, target: str | None = None) -> list[dict[str, Any]]:
        return [m.describe() for m in sorted(self._methods.get(target, {}).values(), key=lambda m: m.name)]
