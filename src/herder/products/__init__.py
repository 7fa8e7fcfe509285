"""Products: what a session's host process can do, as extensions found by entry points.

A *product* (the Inedo seed's word: BuildMaster, Otter; herder ships ``shell``) is a
name, and its *extensions* are classes registered under the entry point group
``herder.products`` with the name ``<product>.<extension>``::

    [project.entry-points."herder.products"]
    "shell.fs" = "herder.products.shell.fs:Fs"
    "shell.proc" = "herder.products.shell.proc:Proc"

so a third party adds a product, or an extension to an existing one, by installing a
package. The host process of a session loads every extension of its product, makes one
instance of each for the session, and serves the methods marked ``@expose`` as
``<extension>.<method>`` under the product's target::

    from herder.products import Extension, expose

    class Greeter(Extension):
        @expose
        async def hello(self, name: str) -> str:
            return f"hello {name} from {self.session.root}"

Extensions get their session (``self.session``): its private directory, a way to send
events to the client, and the place to register what must be released when the
session closes. This module imports nothing of herder's agent: an extension sees only
this API.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, TypeVar

ENTRY_POINT_GROUP = "herder.products"
F = TypeVar("F", bound=Callable[..., Any])
_EXPOSED = "__herder_exposed__"


def expose(func: F) -> F:
    """Mark an extension method as callable by the session's client."""
    setattr(func, _EXPOSED, True)
    return func


class SessionApi(Protocol):
    """What an extension may use of its session (implemented by the host process)."""

    @property
    def id(self) -> str:
        """The session's id."""
        ...

    @property
    def root(self) -> Path:
        """The session's own directory: its working directory, where ``fs`` paths live."""
        ...

    @property
    def confined(self) -> bool:
        """Whether file paths must stay under ``root`` (the agent's configuration)."""
        ...

    @property
    def env(self) -> dict[str, str]:
        """The environment for programs the session launches (markers included)."""
        ...

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Send an event to the session's client (buffered by the agent while it is away)."""
        ...

    def on_close(self, release: Callable[[], Awaitable[None] | None]) -> None:
        """Call ``release`` when the session closes (gracefully or not), last added first."""
        ...


class Extension:
    """Base of extensions: one instance per session."""

    def __init__(self, session: SessionApi) -> None:
        self.session = session

    async def shutdown(self) -> None:
        """Release what this extension holds; called once when the session closes.

        Not ``close``: an extension may well expose a ``close`` of its own (``fs`` does).
        """

    def exposed(self) -> dict[str, Callable[..., Any]]:
        """The methods marked ``@expose``, by name (bound to this instance)."""
        found: dict[str, Callable[..., Any]] = {}
        for name, member in inspect.getmembers(type(self), predicate=inspect.isfunction):
            if getattr(member, _EXPOSED, False):
                found[name] = getattr(self, name)
        return found


class UnknownProduct(LookupError):
    """No installed extension belongs to the product asked for."""


def load_extensions(product: str) -> dict[str, type[Extension]]:
    """The extension classes of ``product``, by extension name.

    Raises:
        UnknownProduct: no entry point ``<product>.<extension>`` is installed.
        TypeError: an entry point does not name an ``Extension`` subclass.
    """
    found: dict[str, type[Extension]] = {}
    prefix = f"{product}."
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if not point.name.startswith(prefix):
            continue
        cls = point.load()
        if not (isinstance(cls, type) and issubclass(cls, Extension)):
            raise TypeError(f"entry point {point.name} = {point.value} is not an Extension subclass")
        found[point.name[len(prefix) :]] = cls
    if not found:
        raise UnknownProduct(f"no product {product!r} is installed (entry points {ENTRY_POINT_GROUP!r})")
    return found


def installed_products() -> dict[str, list[str]]:
    """Every installed product and its extensions' names (for ``list_products``)."""
    products: dict[str, list[str]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        product, dot, extension = point.name.partition(".")
        if dot:
            products.setdefault(product, []).append(extension)
    return {k: sorted(v) for k, v in sorted(products.items())}


__all__ = [
    "ENTRY_POINT_GROUP",
    "Extension",
    "SessionApi",
    "UnknownProduct",
    "expose",
    "installed_products",
    "load_extensions",
]
