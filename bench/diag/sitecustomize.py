"""Diagnostic timers for benchmark 9, loaded into the manager and the agents it starts.

    HERDER_BENCH_DIAG=/tmp/diag PYTHONPATH=bench/diag .venv/bin/python bench/bench_manager.py --part tasks

Python imports ``sitecustomize`` at start-up from ``PYTHONPATH``; with ``HERDER_BENCH_DIAG``
set, this one wraps a few functions of the real binaries with timers and, when the
process exits, writes one line of medians to ``$HERDER_BENCH_DIAG/<role>.<pid>.txt``:

* ``herder manager``: how long a round of writes takes, and how many requests it serves
  (``Writes._write_round``); how much of it is its transaction (``Writes._in_transaction``);
  and per SQL statement (its first words) the count, total and median time, from the driver's
  call to its answer (SQLAlchemy's cursor events), the 14 costliest after the first line;
* ``herder agent``: the spawn itself (``_posixsubprocess.fork_exec``), and per attempt the
  time from ``assign`` to the spawn, the process's life, and from its exit to the
  ``finished`` report sent.

With ``HERDER_BENCH_PROFILE`` set to a directory instead (or as well), each manager and
agent runs under cProfile and writes ``<role>.<pid>.prof`` there when it exits; read one
with ``python -m pstats FILE`` (``sort tottime``, ``stats 30``).

It measures the figures quoted in bench/README.md §Issue 6 ("why it stops there"); the
benchmark's own figures are taken without it.
"""

from __future__ import annotations

import atexit
import os
import sys
import time

OUT = os.environ.get("HERDER_BENCH_DIAG")
ROLE = sys.argv[1] if len(sys.argv) > 1 else ""


def _median_ms(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] * 1000 if values else float("nan")


def _write(line: str) -> None:
    assert OUT is not None
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, f"{ROLE}.{os.getpid()}.txt"), "w") as fh:
        fh.write(line + "\n")


def _manager() -> None:
    from herder.manager import writes

    durations: list[float] = []
    sizes: list[int] = []
    original = writes.Writes._write_round

    async def timed(self: writes.Writes, requests: list[writes.Request]) -> object:
        started = time.perf_counter()
        try:
            return await original(self, requests)
        finally:
            durations.append(time.perf_counter() - started)
            sizes.append(len(requests))

    writes.Writes._write_round = timed  # type: ignore[method-assign]
    transactions: list[float] = []
    in_transaction = writes.Writes._in_transaction

    async def timed_transaction(self: writes.Writes, *args: object) -> object:
        started = time.perf_counter()
        try:
            return await in_transaction(self, *args)  # type: ignore[arg-type]
        finally:
            transactions.append(time.perf_counter() - started)

    writes.Writes._in_transaction = timed_transaction  # type: ignore[method-assign,assignment]
    statements = _time_statements()
    atexit.register(
        lambda: _write(
            f"rounds {len(durations)}, {sum(sizes) / max(1, len(sizes)):.1f} requests each, "
            f"p50 {_median_ms(durations):.1f} ms, busy {sum(durations):.1f} s; their transactions "
            f"p50 {_median_ms(transactions):.1f} ms, busy {sum(transactions):.1f} s; statements:\n"
            + _statements_summary(statements)
        )
    )


def _time_statements() -> dict[str, list[float]]:
    """Per SQL statement (its first words): how long each execution took, from the driver's
    call to its answer; with an executemany counted once."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    timings: dict[str, list[float]] = {}

    def before(conn: object, cursor: object, statement: str, *rest: object) -> None:
        conn.info["diag_started"] = time.perf_counter()  # type: ignore[attr-defined]

    def after(conn: object, cursor: object, statement: str, *rest: object) -> None:
        started = conn.info.pop("diag_started", None)  # type: ignore[attr-defined]
        if started is not None:
            key = " ".join(statement.split())[:48]
            timings.setdefault(key, []).append(time.perf_counter() - started)

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    return timings


def _statements_summary(timings: dict[str, list[float]]) -> str:
    rows = sorted(timings.items(), key=lambda kv: -sum(kv[1]))[:14]
    return "\n".join(f"  {sum(v):6.2f} s  n {len(v):6d}  p50 {_median_ms(v):6.2f} ms  {k}" for k, v in rows)


def _time_spawns() -> list[float]:
    """Durations of every spawn (the ``vfork`` and ``exec`` of ``_posixsubprocess``)."""
    import _posixsubprocess
    import subprocess

    spawns: list[float] = []

    def fork_exec(*args: object) -> object:
        started = time.perf_counter()
        try:
            return _posixsubprocess.fork_exec(*args)
        finally:
            spawns.append(time.perf_counter() - started)

    subprocess._fork_exec = fork_exec  # type: ignore[attr-defined]
    return spawns


def _attempt_of(unit: object) -> tuple[int, int] | None:
    slug: str = getattr(unit, "slug", "")
    if not slug.startswith("@task."):
        return None
    _, item, attempt = slug.split(".")
    return int(item), int(attempt)


def _time_attempts() -> list[dict[str, float]]:
    """Per finished attempt: when it was assigned, spawned, exited and reported."""
    from herder.agent.link import worker
    from herder.agent.processes import supervisor

    marks: dict[tuple[int, int], dict[str, float]] = {}
    done: list[dict[str, float]] = []

    def mark(key: tuple[int, int] | None, name: str) -> None:
        if key is not None and key in marks:
            marks[key][name] = time.perf_counter()

    assign, report = worker.WorkerLink._assign, worker.WorkerLink._report
    spawned, after_exit = supervisor.Unit._on_spawned, supervisor.Unit._after_exit

    def on_assign(self: worker.WorkerLink, call: worker.Assign) -> None:
        marks[(call.item.id, call.item.attempt)] = {"assign": time.perf_counter()}
        assign(self, call)

    def on_spawned(self: supervisor.Unit, child: object) -> None:
        spawned(self, child)  # type: ignore[arg-type]
        mark(_attempt_of(self), "spawned")

    async def on_exit(self: supervisor.Unit, child: object, code: int) -> None:
        mark(_attempt_of(self), "exited")
        await after_exit(self, child, code)  # type: ignore[arg-type]

    async def on_report(self: worker.WorkerLink, method: str, args: list[object]) -> None:
        key = (int(args[0]), int(args[1]))  # type: ignore[call-overload]
        if method == "finished":
            mark(key, "reported")
            done.append(marks.pop(key, {}))
        await report(self, method, args)

    worker.WorkerLink._assign = on_assign  # type: ignore[method-assign]
    supervisor.Unit._on_spawned = on_spawned  # type: ignore[method-assign]
    supervisor.Unit._after_exit = on_exit  # type: ignore[method-assign]
    worker.WorkerLink._report = on_report  # type: ignore[method-assign]
    return done


def _agent() -> None:
    spawns = _time_spawns()
    done = _time_attempts()

    def summary() -> None:
        full = [m for m in done if {"assign", "spawned", "exited", "reported"} <= m.keys()]

        def gap(a: str, b: str) -> float:
            return _median_ms([m[b] - m[a] for m in full])

        _write(
            f"attempts {len(full)}, spawn p50 {_median_ms(spawns):.2f} ms; medians: assign to spawned "
            f"{gap('assign', 'spawned'):.2f} ms, life {gap('spawned', 'exited'):.2f} ms, "
            f"exit to finished sent {gap('exited', 'reported'):.2f} ms"
        )

    atexit.register(summary)


def _profile(directory: str) -> None:
    import cProfile

    profile = cProfile.Profile()
    profile.enable()

    def dump() -> None:
        profile.disable()
        os.makedirs(directory, exist_ok=True)
        profile.dump_stats(os.path.join(directory, f"{ROLE}.{os.getpid()}.prof"))

    atexit.register(dump)


PROFILE = os.environ.get("HERDER_BENCH_PROFILE")
if PROFILE and ROLE in ("manager", "agent"):
    _profile(PROFILE)
if OUT:
    if ROLE == "manager":
        _manager()
    elif ROLE == "agent":
        _agent()
