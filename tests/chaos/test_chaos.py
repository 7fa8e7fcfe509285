"""The chaos suite (#17): three managers on one PostgreSQL, six agents, faults under load.

Each test starts the fleet (``conftest.fleet``: namespaces, one fresh database, every
process by pid), puts it under load (tasks submitted and services registered round-robin
through all three managers) and injects faults one after the other:

* ``kill``: a manager SIGKILLed, then started again, in a loop;
* ``stall``: a manager SIGSTOPped past the agents' bound, then SIGCONTed;
* ``agent cut``: an agent partitioned from its manager (blackhole routes on both ends);
* ``database cut``: a manager's PostgreSQL connections silenced (no byte, no close);
* ``notify cut``: only a manager's LISTEN connection silenced (it misses the NOTIFYs).

After the faults heal, the checks (``check``): every task in the database ends, completed
or failed with a reason, within ``SETTLE_S`` (none lost: each acknowledged submission is
among them); no piece of work had two attempts alive at once (each attempt holds a
``flock`` on its item for its whole life and logs ``OVERLAP`` if it finds it held); every
acknowledged registration is found through every manager within ``REGISTRY_BOUND_S``;
no agent was without a manager longer than the bound of the fault that hit it.

``make test`` runs the short form (one fleet, every fault once: about a minute);
``make chaos`` (``HERDER_CHAOS=long``) the long one: two fleets, a dozen kills, each
partition three times, longer cuts, more load (a few minutes).
Each test prints its figures (``-s`` shows them); docs/operations.md, "Chaos suite".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.chaos.conftest import HEARTBEAT_S
from tests.chaos.fleet import (
    START_S,
    AgentNode,
    Fleet,
    Gap,
    Load,
    ManagerNode,
    all_tasks,
    attempts_log,
    overlaps,
    service_keys,
    until,
)

LONG = os.environ.get("HERDER_CHAOS") == "long"

# The bounds (docs/operations.md, "Several managers" and "Chaos suite"):
# a killed manager closes its links: its agents are linked to another within 3 s;
KILL_BOUND_S = 3.0
# one stalled or cut off keeps them open: an agent moves once a heartbeat's answer is
# overdue (one interval, 3 s at least, after it was sent, at most one interval after the
# fault), plus its registration at the next manager.
STALL_BOUND_S = HEARTBEAT_S + max(HEARTBEAT_S, 3.0) + 2.0
# A registration acknowledged by one manager is found through every manager within this
# once the faults healed (a LISTEN connection cut is probed every 2 s, its probe times out
# after 2 s, then it is opened again and the whole registry read).
REGISTRY_BOUND_S = 8.0
# Every task ends within this once the faults healed: a lease (4 intervals with the
# margin) lost with a manager or an agent, its requeue (one more margin), a new attempt.
SETTLE_S = 30.0

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(1200 if LONG else 180)]


@dataclass
class Plan:
    """How much of everything: the short form for ``make test``, the long one for ``make chaos``."""

    kills: int
    hold_s: float  # how long a cut or a stall lasts past the agents' move
    work_s: float  # one attempt's run
    task_every_s: float
    service_every_s: float
    rounds: int  # the partition faults, each manager in turn


PLAN = (
    Plan(kills=12, hold_s=8.0, work_s=1.5, task_every_s=0.25, service_every_s=0.1, rounds=3)
    if LONG
    else Plan(kills=2, hold_s=1.0, work_s=1.0, task_every_s=0.15, service_every_s=0.3, rounds=1)
)


@dataclass
class Run:
    """The fleet under load, and what the faults cost (printed at the end)."""

    fleet: Fleet
    load: Load
    gaps: list[Gap] = field(default_factory=list)
    figures: dict[str, list[float]] = field(default_factory=dict)

    def figure(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def hit(self, agents: list[AgentNode], fault: str, bound_s: float) -> float:
        """A fault on these agents' links, now: each is without a manager until relinked."""
        now = time.time()
        self.gaps.extend(Gap(a.name, fault, now, None, bound_s) for a in agents)
        return now

    async def relinked(self, agents: list[AgentNode], since: float, bound_s: float, fault: str) -> None:
        """Wait until every agent in ``agents`` linked again after ``since`` (to fail late,
        with the figures, the deadline is twice the bound: ``check`` holds the bound)."""
        await until(
            lambda: all(a.relinked_after(since) for a in agents), 2 * bound_s + 5, f"{fault}: relinked"
        )
        for gap in self.gaps:
            if gap.began == since:
                agent = next(a for a in agents if a.name == gap.agent)
                gap.ended = agent.relinked_after(since)
                self.figure(f"{fault}: without a manager (s)", gap.seconds)


@contextlib.asynccontextmanager
async def under_load(fleet: Fleet) -> AsyncIterator[Run]:
    """The load runs while the body injects faults; it stops (and is awaited) on exit."""
    load = Load(fleet, PLAN.work_s, PLAN.task_every_s, PLAN.service_every_s)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    run = Run(fleet, load)
    try:
        await until(lambda: len(load.acked_tasks) >= 3, 10, "the load started")
        yield run
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


# -- the faults ---------------------------------------------------------------------------------


async def kill_loop(run: Run, times: int) -> None:
    """SIGKILL a manager with agents linked, watch them move, start it again; ``times`` times."""
    for i in range(times):
        fleet = run.fleet
        m = max(fleet.managers, key=lambda node: (len(fleet.linked_to(node)), -i))  # the busiest
        linked = fleet.linked_to(m)
        since = run.hit(linked, "kill", KILL_BOUND_S)  # before: its agents may relink in milliseconds
        m.daemon.kill()
        began = time.monotonic()
        await asyncio.to_thread(m.start)
        run.figure("kill: manager back (s)", time.monotonic() - began)
        await run.relinked(linked, since, KILL_BOUND_S, "kill")


async def stall(run: Run, m: ManagerNode) -> None:
    """SIGSTOP ``m`` until its agents moved (and ``hold_s`` more), then SIGCONT."""
    linked = run.fleet.linked_to(m)
    since = run.hit(linked, "stall", STALL_BOUND_S)
    m.daemon.signal(signal.SIGSTOP)
    try:
        await run.relinked(linked, since, STALL_BOUND_S, "stall")
        await hold(run)
    finally:
        m.daemon.signal(signal.SIGCONT)
    await answering(run, m, "stall")


async def cut_agent(run: Run, agent: AgentNode) -> None:
    """Partition ``agent`` from the manager it is linked to, until it moved, and a while."""
    url = agent.manager()
    assert url is not None
    m = run.fleet.manager_of(url)
    since = run.hit([agent], "agent cut", STALL_BOUND_S)
    run.fleet.net.cut(agent.host, m.name)
    try:
        await run.relinked([agent], since, STALL_BOUND_S, "agent cut")
        await hold(run)
    finally:
        run.fleet.net.heal(agent.host, m.name)


async def cut_database(run: Run, m: ManagerNode) -> None:
    """Silence every connection of ``m`` to PostgreSQL until its agents moved, and a while."""
    linked = run.fleet.linked_to(m)
    since = run.hit(linked, "database cut", STALL_BOUND_S)
    m.pg.cut()
    try:
        await run.relinked(linked, since, STALL_BOUND_S, "database cut")
        await hold(run)
    finally:
        m.pg.heal()
    await answering(run, m, "database cut")


async def cut_notify(run: Run, m: ManagerNode) -> None:
    """Silence ``m``'s LISTEN connection while registrations go on through the others;
    after the heal, time until ``m`` finds them all."""
    m.pg.cut_listen()
    try:
        await hold(run, at_least_s=max(PLAN.hold_s, 2.0))  # registrations go on meanwhile
        async with run.fleet.client(m) as client:
            unseen = set(run.load.acked_services) - await service_keys(client)
        run.figure("notify cut: registrations not seen by the cut manager at the heal", len(unseen))
    finally:
        m.pg.heal()
    healed = time.monotonic()
    wanted = set(run.load.acked_services)
    async with run.fleet.client(m) as client:
        await until(lambda: _finds(client, wanted), REGISTRY_BOUND_S, f"{m.name} finds the registrations")
    run.figure("notify cut: registrations found after the heal (s)", time.monotonic() - healed)


async def _finds(client: object, keys: set[str]) -> bool:
    try:
        return keys <= await service_keys(client)  # type: ignore[arg-type]
    except Exception:
        return False


async def hold(run: Run, at_least_s: float | None = None) -> None:
    """Let the load run on through a fault (a time the test chooses, not a wait for state)."""
    await asyncio.sleep(at_least_s if at_least_s is not None else PLAN.hold_s)


async def answering(run: Run, m: ManagerNode, fault: str) -> None:
    """``m`` answers again after a fault healed (a read of its database); the time it took."""
    began = time.monotonic()
    async with run.fleet.client(m) as client:

        async def ok() -> bool:
            try:
                return (await client.get("/tasks/counts")).status_code == 200
            except Exception:
                return False

        await until(ok, START_S, f"{m.name} answers after the {fault}")
    run.figure(f"{fault}: manager answers after the heal (s)", time.monotonic() - began)


# -- the checks ---------------------------------------------------------------------------------


async def check(run: Run) -> None:
    """What the suite promises, once every fault healed and the load stopped."""
    fleet, load = run.fleet, run.load
    assert load.refused == [], load.refused[:5]  # a manager answered, and said no
    began = time.monotonic()
    ended = ("completed", "failed", "canceled")
    tasks: list[dict[str, object]] = []
    async with fleet.client(fleet.managers[0]) as client:

        async def settled() -> bool:
            nonlocal tasks
            try:
                tasks = await all_tasks(client)
            except Exception:
                return False
            return all(t["status"] in ended for t in tasks)

        try:
            await until(settled, SETTLE_S, "every task ended")
        except AssertionError:
            stuck = [
                (t["id"], t["task_id"], t["status"], t["worker_id"])
                for t in tasks
                if t["status"] not in ended
            ]
            raise AssertionError(
                f"tasks not ended within {SETTLE_S} s (id, key, status, worker): {stuck[:20]}"
            ) from None
        finally:
            run.figure("tasks: all ended after the load stopped (s)", time.monotonic() - began)
            run.figure("tasks: in the database", len(tasks))
            run.figure("tasks: acknowledged", len(load.acked_tasks))
            print_figures(run, Counter(str(t["status"]) for t in tasks))
        by_id = {t["id"]: t for t in tasks}
        lost = [i for i in load.acked_tasks if i not in by_id]
        assert lost == [], f"acknowledged but not in the database: {lost}"
        failed = [t for t in tasks if t["status"] == "failed"]
        assert all(t["error"] for t in failed), [t for t in failed if not t["error"]]
        assert not [t for t in tasks if t["status"] == "canceled"]  # nobody cancels here

    rows = attempts_log(fleet)
    assert overlaps(rows) == [], overlaps(rows)
    ends = {key for word, key, _, _ in rows if word == "end"}
    done = [t for t in tasks if t["status"] == "completed"]
    unfinished = [t["id"] for t in done if f"t{t['task_id']}" not in ends]
    assert unfinished == [], f"completed without an attempt that ended: {unfinished}"

    wanted = set(load.acked_services)
    for m in fleet.managers:
        async with fleet.client(m) as client:
            if not await _finds(client, wanted):  # say which, if it never does
                missing = sorted(wanted - await service_keys(client))
                run.figure(f"registrations missing on {m.name} at first", len(missing))
                which = [(k, load.acked_via[k], load.acked_services[k]) for k in missing[:10]]
                print(f"  {m.name} misses {which}")
            await until(
                lambda c=client: _finds(c, wanted), REGISTRY_BOUND_S, f"{m.name} finds every registration"
            )

    late = [g for g in run.gaps if g.ended is None or g.seconds > g.bound_s]
    assert late == [], [f"{g.agent} ({g.fault}): {g.seconds:.2f} s > {g.bound_s} s" for g in late]
    assert all(a.manager() for a in fleet.agents), {a.name: a.manager() for a in fleet.agents}


def print_figures(run: Run, statuses: Counter[str]) -> None:
    """The run's figures, one line each (docs/operations.md quotes them), on stdout and in
    ``figures.txt`` of the fleet's directory (pytest-xdist keeps workers' stdout)."""
    form = "long" if LONG else "short"
    lines = [f"chaos ({form}): tasks {dict(statuses)}, services {len(run.load.acked_services)}"]
    for name, values in run.figures.items():
        if name.startswith("tasks:"):
            lines.append(f"  {name}: {values[-1]:.1f}")
        else:
            lines.append(
                f"  {name}: n={len(values)} max={max(values):.2f} mean={sum(values) / len(values):.2f}"
            )
    print("\n" + "\n".join(lines))
    with open(run.fleet.work / "figures.txt", "a") as out:
        out.write("\n".join(lines) + "\n")


async def faults(fleet: Fleet, *steps: Callable[[Run], Awaitable[None]]) -> None:
    async with under_load(fleet) as run:
        for step in steps:
            await step(run)
    await check(run)


# -- the tests ----------------------------------------------------------------------------------


async def kills_and_stalls(run: Run) -> None:
    """kill -9 in a loop, then a stall of the busiest manager, ``rounds`` times."""
    fleet = run.fleet
    await kill_loop(run, PLAN.kills)
    for r in range(PLAN.rounds):
        busiest = max(fleet.managers, key=lambda m: (len(fleet.linked_to(m)), m.name != f"m{r + 1}"))
        await stall(run, busiest)


async def partitions(run: Run) -> None:
    """An agent cut, the busiest manager cut from PostgreSQL, one cut from the NOTIFYs, ``rounds`` times."""
    fleet = run.fleet
    for r in range(PLAN.rounds):
        await cut_agent(run, fleet.agents[r % len(fleet.agents)])
        await cut_database(run, max(fleet.managers, key=lambda m: len(fleet.linked_to(m))))
        await cut_notify(run, fleet.managers[r % len(fleet.managers)])


# The short form runs every fault once on one fleet (one fleet's start is a third of its
# time, and `make test` has other tests to run on the same two cores); the long form
# gives each group a fleet of its own.
GROUPS = (
    {"kills-and-stalls": [kills_and_stalls], "partitions": [partitions]}
    if LONG
    else {"all-faults": [kills_and_stalls, partitions]}
)


@pytest.mark.parametrize("group", list(GROUPS))
async def test_faults_under_load_lose_nothing(fleet: Fleet, group: str) -> None:
    started = time.monotonic()
    await faults(fleet, *GROUPS[group])
    print(f"  fleet up in {fleet.timings['fleet_up_s']:.1f} s; test {time.monotonic() - started:.1f} s")
