"""Registered methods: what a peer can serve, with their signatures and auth flags.

Methods are registered explicitly (``Service.method``), never found by reflection;
the same registry answers ``meta.methods``. Arguments are bound to the signature
before the handler runs, so a ``TypeError`` raised *inside* a handler is reported as
the application error it is, not as bad parameters.

A method may declare its arguments as a pydantic model (``params=``): the call's
positional arguments fill the model's fields in their order, keyword arguments by name,
and the handler receives the validated model. Arguments that do not validate are
``InvalidParams`` naming the field (answered ``invalid_params``), before the handler
runs; a ``ValidationError`` the handler raises itself stays an application error.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from herder.rpc.errors import InvalidParams
from herder.rpc.stats import CallStats

if TYPE_CHECKING:
    from pydantic import BaseModel

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
    # The model of the arguments (None: they bind to the handler's signature as they are).
    params: type[BaseModel] | None = None
    # (fewest, most) positional arguments a call may pass as they are, without binding
    # them to the signature (``prepare``); None when the signature needs the full bind.
    positional: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positional", _positional_range(self))

    @classmethod
    def of(
        cls,
        func: Handler,
        *,
        name: str | None = None,
        auth: bool = True,
        params: type[BaseModel] | None = None,
    ) -> Method:
        """A method serving ``func``; with ``params``, ``func`` takes the validated model
        as its one argument (besides a ``Peer`` parameter, if it declares one)."""
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
            params=params,
        )

    def prepare(
        self, args: list[Any], kwargs: dict[str, Any], peer: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """What to call the handler with: the call's arguments bound (and the peer, if
        asked for), or the validated model of its ``params``.

        Raises:
            InvalidParams: the arguments do not fit the signature, or do not validate.
        """
        positional = self.positional
        if positional is not None and not kwargs and positional[0] <= len(args) <= positional[1]:
            # What bind() would give, at a tenth of its cost: the common call on the hot path.
            return tuple(args), {name: peer for name in self.peer_params}
        extra = {name: peer for name in self.peer_params}
        if self.params is not None:
            return (validate_params(self.params, args, kwargs),), extra
        if self.signature is None:
            return tuple(args), kwargs
        try:
            bound = self.signature.bind(*args, **kwargs, **extra)
        except TypeError as exc:
            raise InvalidParams(str(exc)) from None
        return bound.args, bound.kwargs

    def encode_result(self, result: Any) -> Any:
        """A model answered by a method with ``params`` goes out as its JSON document
        (``None`` fields left out: an optional answer field is absent, not null)."""
        if self.params is not None and hasattr(result, "model_dump"):
            return result.model_dump(mode="json", exclude_none=True)
        return result

    def describe(self) -> dict[str, Any]:
        """The entry of ``meta.methods``."""
        params = "(...)"
        if self.params is not None:
            fields = self.params.model_fields.items()
            params = "(" + ", ".join(f"{n}: {_type_name(f.annotation)}" for n, f in fields) + ")"
        elif self.signature is not None:
            shown = [p for p in self.signature.parameters.values() if p.name not in self.peer_params]
            params = str(self.signature.replace(parameters=shown))
        return {"name": self.name, "params": params, "auth": self.auth, "doc": self.doc}


def _positional_range(method: Method) -> tuple[int, int] | None:
    """How many positional arguments ``method`` takes such that passing them as they are
    (and its ``Peer`` parameters by name) is exactly what ``Signature.bind`` would pass.

    That holds for a signature of plain positional parameters (defaults allowed)
    followed only by ``Peer`` parameters that can be given by name; anything else
    (``*args``, ``**kwargs``, keyword-only parameters, a model) is left to ``bind``.
    """
    if method.params is not None or method.signature is None:
        return None
    fewest = most = 0
    peers_started = False
    for p in method.signature.parameters.values():
        if p.name in method.peer_params:
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                return None
            peers_started = True
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and not peers_started:
            most += 1
            if p.default is p.empty:
                if fewest != most - 1:  # a required parameter after one with a default
                    return None
                fewest = most
        else:
            return None
    return fewest, most


def validate_params(model: type[BaseModel], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The call's arguments as ``model``: positional ones fill its fields in order.

    Raises:
        InvalidParams: too many arguments, one given twice, or one that does not
            validate (``field`` is the first failing one's path, ``"running.0.1"``).
    """
    from pydantic import ValidationError

    names = list(model.model_fields)
    if len(args) > len(names):
        raise InvalidParams(f"takes at most {len(names)} arguments ({len(args)} given)")
    data = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key in data:
            raise InvalidParams(f"got multiple values for {key!r}", key)
        data[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        more = exc.error_count() - 1
        also = f" (and {more} more)" if more else ""
        raise InvalidParams(f"{where}: {first['msg']}{also}", where) from None


def _type_name(annotation: Any) -> str:
    """A type as a reader writes it: ``list[tuple[int, int]]``, without ``Annotated`` rules."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', origin)}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return str(getattr(annotation, "__name__", annotation))


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
        # What the peers serving these methods were asked (``/metrics``, #16).
        self.stats = CallStats()

    def add(self, method: Method, target: str | None = None) -> None:
        self._methods.setdefault(target, {})[method.name] = method

    def find(self, target: str | None, name: str) -> Method | None:
        return self._methods.get(target, {}).get(name)

    def has_target(self, target: str | None) -> bool:
        return target in self._methods

    def describe(self, target: str | None = None) -> list[dict[str, Any]]:
        return [m.describe() for m in sorted(self._methods.get(target, {}).values(), key=lambda m: m.name)]
