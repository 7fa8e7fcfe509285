"""Benchmark 5: output throughput: a child prints 1,000,000 lines; lines/s until all are logged.

How: ``child_writer.py`` writes 1,000,000 lines of 28 bytes to stdout, either one
``write`` per line (``line``: run with ``python -u``, one system call per line, like a
program that flushes every line) or in blocks of 4096 lines (``bulk``). It notes on
stderr when it began writing (``time.monotonic()``, one clock for all processes) and how
long its writes took. The clock runs from the child's first write until the driver,
polling every 2 ms (0.2 ms for bulk), sees the daemon's log file end with the last
line; interpreter start-up and spawning are left out, so only the output path is
timed. Afterwards the log files (rotated ones included) must hold exactly the
28,000,000 bytes written. The three daemons run side by side (idle but for the run
at hand) and take turns, round after round.

* herder: ``POST /create-process`` with ``restart: never``; its log is
  ``<data dir>/logs/bench.<name>.out.log`` (rotated at 10 MiB by default, kept).
* supervisord: a program with ``stdout_logfile``, ``autorestart=false``, started with
  ``startProcess``. It copies bytes to the file without looking for lines.
* Circus: a watcher with ``stdout_stream.class = FileStream``, ``respawn = False``.

The limit is the same child writing straight to a file (``stdout`` redirected), timed
from its own first to last write. Goals: a line-by-line child is never slowed (herder
≥ 90% of that limit), and a bulk writer gets ≥ 40% of supervisord's rate. The child's
own rate under each daemon is in the notes: if it drops, the daemon held it back.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import child_writer
import harness
from daemons import Circus, CircusBridge, Herder, Program, Supervisord
from harness import BENCH_DIR, Deadline, Figure, median

LINES = 1_000_000
LINE_BYTES = len(child_writer.line_text(0))
TOTAL_BYTES = LINES * LINE_BYTES
LAST_LINE = child_writer.line_text(LINES - 1).encode()
MODES = ("line", "bulk")
# How often the log file is looked at: rarely enough that the watcher does not steal
# CPU from a line-by-line child on a 2-core machine (the error is half the interval on
# ~0.7 s), often enough to time a bulk run of ~0.1 s.
POLL_S = {"line": 0.002, "bulk": 0.0002}
TIMEOUT_S = 120.0
LINE_GOAL = 0.9
BULK_GOAL = 0.4
# One run: (lines/s until all are in the log, the child's own lines/s).
Run = tuple[float, float]
# Per mode ("line", "bulk"): one Run per round.
Runs = dict[str, list[Run]]
_CHILD_STAT = re.compile(r"child-start ([0-9.]+)\s+child-elapsed ([0-9.]+)")


def child_argv(mode: str) -> list[str]:
    return [sys.executable, "-I", "-S", "-u", str(BENCH_DIR / "child_writer.py"), mode, str(LINES)]


def wait_last_line(path: Path, deadline: Deadline, interval_s: float) -> float:
    """Poll until ``path`` ends with the last line; return ``time.monotonic()`` then."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            pass
        else:
            try:
                size = os.fstat(fd).st_size
                if (
                    size >= len(LAST_LINE)
                    and os.pread(fd, len(LAST_LINE), size - len(LAST_LINE)) == LAST_LINE
                ):
                    return time.monotonic()
            finally:
                os.close(fd)
        deadline.check()
        time.sleep(interval_s)


def child_stats(err_path: Path, deadline: Deadline) -> tuple[float, float]:
    """The child's (start, elapsed) from its stderr log, once it is there."""
    while True:
        with open(err_path, "a+") as fh:  # "a+": a missing log is simply not there yet
            fh.seek(0)
            match = _CHILD_STAT.search(fh.read())
        if match:
            return float(match.group(1)), float(match.group(2))
        deadline.check()
        time.sleep(0.005)


def rotated(path: Path) -> list[Path]:
    """``path`` and its rotated predecessors (``path.1``, ``path.2``...) that exist."""
    found = [path] if path.exists() else []
    n = 1
    while (older := path.with_name(f"{path.name}.{n}")).exists():
        found.append(older)
        n += 1
    return found


def logged_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in rotated(path))


def remove_logs(*paths: Path) -> None:
    """Delete a run's logs once checked: 28 MB a run would otherwise pile up in the page cache."""
    for path in paths:
        for p in rotated(path):
            p.unlink()


def one_run(name: str, mode: str, start_child: Callable[[], object], out: Path, err: Path) -> Run:
    """Start a child through a daemon; return (lines/s to the log, the child's own lines/s)."""
    # Start each run with no dirty pages pending (the previous runs' files are deleted
    # and closed, so this is quick), so that no run pays for another's writeback.
    os.sync()
    deadline = Deadline(TIMEOUT_S, f"{name}: {LINES} lines")
    start_child()
    done = wait_last_line(out, deadline, POLL_S[mode])
    start, elapsed = child_stats(err, deadline)
    if (size := logged_bytes(out)) != TOTAL_BYTES:
        raise RuntimeError(f"{name}: {size} bytes logged in {out}, expected {TOTAL_BYTES}")
    return LINES / (done - start), LINES / elapsed


def direct_run(workdir: Path, mode: str, name: str) -> Run:
    """The limit: the child with stdout redirected to a file, timed by itself."""
    out, err = workdir / f"direct-{name}.out", workdir / f"direct-{name}.err"
    os.sync()  # as in one_run
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(child_argv(mode), stdin=subprocess.DEVNULL, stdout=fo, stderr=fe)
    try:
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, elapsed = child_stats(err, Deadline(10, "direct child stats"))
    if (size := logged_bytes(out)) != TOTAL_BYTES:
        raise RuntimeError(f"direct {name}: {size} bytes written, expected {TOTAL_BYTES}")
    remove_logs(out, err)
    return LINES / elapsed, LINES / elapsed


def run_names(rounds: int) -> list[tuple[str, str]]:
    """Every run's (mode, name), the warm-up round included."""
    return [(mode, f"{mode}{r}") for r in range(rounds + 1) for mode in MODES]


def peer_programs(workdir: Path, rounds: int) -> list[Program]:
    return [
        Program(
            name,
            child_argv(mode),
            restart=False,
            stdout=workdir / f"{name}.out.log",
            stderr=workdir / f"{name}.err.log",
        )
        for mode, name in run_names(rounds)
    ]


def run(quick: bool = False) -> list[Figure]:
    rounds = 1 if quick else 5
    res: dict[str, Runs] = {k: {m: [] for m in MODES} for k in ("direct", "herder", "supervisord", "circus")}
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp:
        base = Path(tmp)
        dirs = {k: base / k for k in res}
        for d in dirs.values():
            d.mkdir()
        bridge = CircusBridge(base)
        herder = Herder(dirs["herder"])
        supervisord = Supervisord(dirs["supervisord"], peer_programs(dirs["supervisord"], rounds))
        circus = Circus(dirs["circus"], peer_programs(dirs["circus"], rounds), bridge)
        try:
            herder.start()
            supervisord.start()
            circus.start()
            rpc = supervisord.rpc()

            # After each run the daemon closes the run's files (herder: delete the process;
            # supervisord closes them when the process exits; Circus: remove the watcher)
            # and they are deleted.
            def through_herder(mode: str, name: str) -> Run:
                program = Program(name, child_argv(mode), restart=False)
                start = functools.partial(herder.create, program)
                out, err = herder.log_file(name, "out"), herder.log_file(name, "err")
                result = one_run(f"herder {name}", mode, start, out, err)
                herder.delete(name)
                remove_logs(out, err)
                return result

            def through_supervisord(mode: str, name: str) -> Run:
                start = functools.partial(rpc.supervisor.startProcess, name, False)
                out, err = dirs["supervisord"] / f"{name}.out.log", dirs["supervisord"] / f"{name}.err.log"
                result = one_run(f"supervisord {name}", mode, start, out, err)
                remove_logs(out, err)
                return result

            def through_circus(mode: str, name: str) -> Run:
                start = functools.partial(circus.call, "start", name=name, match="simple")
                out, err = dirs["circus"] / f"{name}.out.log", dirs["circus"] / f"{name}.err.log"
                result = one_run(f"circus {name}", mode, start, out, err)
                circus.call("rm", name=name, waiting=True)
                remove_logs(out, err)
                return result

            runners: dict[str, Callable[[str, str], Run]] = {
                "direct": lambda mode, name: direct_run(dirs["direct"], mode, name),
                "herder": through_herder,
                "supervisord": through_supervisord,
                "circus": through_circus,
            }
            # Round after round, each daemon in turn (the others idle), so that drifting
            # background load spreads over all of them.
            # Round 0 warms up (the first run of every daemon is slower) and is not kept.
            for r in range(rounds + 1):
                for mode in MODES:
                    for key, runner in runners.items():
                        result = runner(mode, f"{mode}{r}")
                        if r > 0:
                            res[key][mode].append(result)
                harness.progress(f"output: round {r}/{rounds} done")
        finally:
            for daemon in (herder, supervisord, circus):
                daemon.stop()
            bridge.close()
    return figures(res, rounds)


def figures(res: dict[str, Runs], rounds: int) -> list[Figure]:
    out = []
    for mode in MODES:
        rate = {k: median([r[0] for r in v[mode]]) for k, v in res.items()}
        own = {k: median([r[1] for r in v[mode]]) for k, v in res.items()}
        if mode == "line":
            label = f"{LINES:,} lines, one write per line: lines/s until all are in the log file"
            goal = f"≥ {LINE_GOAL:.0%} of the child's own rate writing to a file"
            met = rate["herder"] >= LINE_GOAL * rate["direct"]
        else:
            label = f"{LINES:,} lines, written in blocks of {child_writer.BLOCK_LINES} lines: lines/s"
            goal = f"≥ {BULK_GOAL:.0%} of supervisord"
            met = rate["herder"] >= BULK_GOAL * rate["supervisord"]
        out.append(
            Figure(
                bench="5",
                label=label,
                unit="lines/s",
                higher_is_better=True,
                herder=rate["herder"],
                supervisord=rate["supervisord"],
                circus=rate["circus"],
                reference=rate["direct"],
                reference_label="the child writing to a file",
                goal=goal,
                met=met,
                note=(
                    f"herder ÷ {'the file limit' if mode == 'line' else 'supervisord'} = "
                    f"{rate['herder'] / rate['direct' if mode == 'line' else 'supervisord']:.2f}; "
                    "the child's own rate (M lines/s): "
                    + ", ".join(f"{k} {v / 1e6:.2f}" for k, v in own.items())
                    + f"; median of {rounds}"
                ),
            )
        )
    return out


if __name__ == "__main__":
    harness.main_for(__doc__ or "", run)
