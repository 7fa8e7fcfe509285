"""Start and stop order: ``depends_on`` resolved, cycles refused, shutdown's order.

Rules (docs/health.md):

* a name in ``depends_on`` is the slug of a process of this agent or, failing that, a
  node of the same app (``db.0`` in app ``shop`` is ``shop.db.0``); it is stored
  resolved, as slugs. An unknown name, or one that closes a cycle (itself included),
  is refused at create: a 422 naming ``depends_on``.
* a process starts, and starts again after each exit, once each dependency is *ready*
  (``ready_for_dependants``): running and, with a health check, passing; without one,
  running for ``ready_after_s``; or exited 0 for good (a one-shot job, such as a
  migration, that did its work). A dependency that no longer exists holds nothing back.
* at the agent's shutdown a process is stopped once every process depending on it is
  (``stop_first``); the rest stop in parallel. A delete or an operator's stop of a
  depended-on process stops it alone: its dependants keep running.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from herder.apierrors import ApiError

FIELD = "depends_on"


class DependencyError(ApiError):
    """A ``depends_on`` that names no process here, or closes a cycle (HTTP 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(422, "invalid", message, FIELD)


def resolve(
    slug: str,
    app: str,
    names: Sequence[str],
    known: Mapping[str, Sequence[str]],
    visible: Callable[[str], bool] = lambda _: True,
) -> list[str]:
    """The slugs ``names`` mean for the process ``slug`` of ``app``, checked for cycles.

    ``known`` maps each existing process's slug to its (resolved) dependencies; a name
    resolves only to a slug ``visible`` says its creator may see (with auth on, a user's
    own processes), and one it may not is as unknown as a missing one: a 422 tells
    nobody what others run. Cycles are looked for through every process.

    Raises:
        DependencyError: a name is unknown, or the result would close a cycle.
    """
    resolved: list[str] = []
    for name in names:
        if name in known and visible(name):
            target = name  # an existing slug: never this one, which is being created
        elif slug in (name, f"{app}.{name}"):
            raise DependencyError(f"process {slug!r} cannot depend on itself")
        elif f"{app}.{name}" in known and visible(f"{app}.{name}"):
            target = f"{app}.{name}"
        else:
            raise DependencyError(
                f"no process {name!r} to depend on (neither a slug here nor a node of app {app!r})"
            )
        if target not in resolved:
            resolved.append(target)
    cycle = find_cycle(slug, {**known, slug: resolved})
    if cycle is not None:
        raise DependencyError("depends_on would close a cycle: " + " -> ".join(cycle))
    return resolved


def find_cycle(start: str, graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A path of dependencies from ``start`` back to ``start``, or None.

    Iterative (a long chain must not hit the recursion limit); each slug is visited once.
    """
    parent: dict[str, str] = {}
    stack = [start]
    seen = {start}
    while stack:
        here = stack.pop()
        for there in graph.get(here, ()):
            if there == start:
                chain = [here]
                while chain[-1] != start:
                    chain.append(parent[chain[-1]])
                return [*reversed(chain), start]
            if there not in seen:
                seen.add(there)
                parent[there] = here
                stack.append(there)
    return None


def stop_first(graph: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """For each slug of ``graph`` (slug -> its dependencies), the slugs to stop before it.

    Those are its dependants. Should the records hold a cycle (edited by hand), the
    processes on it and below it lose their order among themselves rather than wait on
    each other for ever: an order broken, never a shutdown hung.
    """
    dependants: dict[str, list[str]] = {slug: [] for slug in graph}
    for slug, deps in graph.items():
        for dep in deps:
            if dep in dependants and dep != slug:
                dependants[dep].append(slug)
    # Kahn's walk from the processes nobody depends on: what it never reaches is on or
    # below a cycle.
    waiting = {slug: len(ds) for slug, ds in dependants.items()}
    free = [slug for slug, n in waiting.items() if n == 0]
    reached: set[str] = set()
    while free:
        slug = free.pop()
        reached.add(slug)
        for dep in graph[slug]:
            if dep in waiting and dep != slug:
                waiting[dep] -= 1
                if waiting[dep] == 0:
                    free.append(dep)
    return {slug: [d for d in ds if d in reached] for slug, ds in dependants.items()}
