"""Benchmark 1: from launching the daemon until its control API answers, and its idle RSS.

How: each daemon is launched from scratch in a fresh temporary directory; the clock
starts before ``Popen`` and stops when the first control request is answered:
``GET /`` for herder (once it prints the URL of its ephemeral port) and for the bare
FastAPI app, ``supervisor.getState`` over supervisord's unix socket, a ``status`` call
over Circus's ZeroMQ endpoint (once its port accepts connections, since a ZeroMQ client
that connects too early only retries every 100 ms). Then the daemon idles for
``IDLE_S`` and its resident set size is read from ``/proc``.

herder's figure is the agent *plus* its keeper (a ``/bin/sh`` child that kills the
agent's descendants if the agent is SIGKILLed): that is what running herder costs.
The agent alone is in the note. supervisord and Circus have no helper process.

The four daemons take turns, round after round, after one untimed round that warms
the page cache and writes the bytecode caches, so that no daemon is favoured by the
order or by drifting background load. The figure is the median of the rounds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness
from daemons import BareFastAPI, Circus, CircusBridge, Daemon, Herder, Supervisord
from harness import Figure, median

IDLE_S = 0.5
GOAL_FACTOR = 1.25
MIB = 1024 * 1024


def one_start(make: Callable[[Path], Daemon]) -> tuple[float, dict[str, int]]:
    """Start one daemon in a fresh directory; return its start time (s) and idle RSS parts."""
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp:
        daemon = make(Path(tmp))
        try:
            seconds = daemon.start()
            time.sleep(IDLE_S)
            return seconds, daemon.rss_parts()
        finally:
            daemon.stop()


def run(quick: bool = False) -> list[Figure]:
    rounds = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp:
        bridge = CircusBridge(Path(tmp))
        try:
            makers: dict[str, Callable[[Path], Daemon]] = {
                "herder": lambda d: Herder(d),
                "fastapi": lambda d: BareFastAPI(d),
                "supervisord": lambda d: Supervisord(d, []),
                "circus": lambda d: Circus(d, [], bridge),
            }
            starts: dict[str, list[float]] = {k: [] for k in makers}
            rss: dict[str, list[dict[str, int]]] = {k: [] for k in makers}
            for round_no in range(rounds + 1):
                for name, make in makers.items():
                    seconds, parts = one_start(make)
                    if round_no == 0:
                        continue  # the warm-up round
                    starts[name].append(seconds)
                    rss[name].append(parts)
                harness.progress(f"start: round {round_no}/{rounds} done")
        finally:
            bridge.close()
    return figures(starts, rss)


def figures(starts: dict[str, list[float]], rss: dict[str, list[dict[str, int]]]) -> list[Figure]:
    ms = {k: median(v) * 1000 for k, v in starts.items()}
    mib = {k: median([sum(p.values()) for p in v]) / MIB for k, v in rss.items()}
    agent_alone = median([p["agent"] for p in rss["herder"]]) / MIB
    keeper = median([p["keeper"] for p in rss["herder"]]) / MIB
    ref = "bare FastAPI on uvicorn"
    start_fig = Figure(
        bench="1",
        label="daemon start until its control API answers",
        unit="ms",
        higher_is_better=False,
        herder=ms["herder"],
        supervisord=ms["supervisord"],
        circus=ms["circus"],
        reference=ms["fastapi"],
        reference_label=ref,
        goal=f"≤ {GOAL_FACTOR}x the bare FastAPI app",
        met=ms["herder"] <= GOAL_FACTOR * ms["fastapi"],
        note=(
            f"herder ÷ bare FastAPI = {ms['herder'] / ms['fastapi']:.2f}x; "
            f"median of {len(starts['fastapi'])} runs each"
        ),
    )
    rss_fig = Figure(
        bench="1",
        label="idle RSS (herder: agent + keeper)",
        unit="MiB",
        higher_is_better=False,
        herder=mib["herder"],
        supervisord=mib["supervisord"],
        circus=mib["circus"],
        reference=mib["fastapi"],
        reference_label=ref,
        goal=f"≤ {GOAL_FACTOR}x the bare FastAPI app",
        met=mib["herder"] <= GOAL_FACTOR * mib["fastapi"],
        note=(
            f"herder ÷ bare FastAPI = {mib['herder'] / mib['fastapi']:.2f}x; agent alone "
            f"{agent_alone:.1f} MiB, keeper {keeper:.1f} MiB; measured {IDLE_S} s after the API answered"
        ),
    )
    return [start_fig, rss_fig]


if __name__ == "__main__":
    harness.main_for(__doc__ or "", run)
