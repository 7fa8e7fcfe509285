"""Plumbing shared by every benchmark: the peers' venv, processes, /proc, figures, the table.

Why a module of its own: each ``bench_*.py`` must run alone and from ``run_all.py``,
and all of them must start, watch and stop processes the same way, so that a figure
for herder and the same figure for supervisord or Circus differ only by the daemon.

Rules kept here for every benchmark:

* every process a benchmark starts is registered and stopped by its pid (``stop``),
  and an ``atexit`` hook stops whatever a crashed benchmark left;
* every wait has a deadline (``Deadline``);
* processes are watched through ``/proc`` (children of a daemon and their ``argv[0]``),
  which costs the daemon nothing and is the same for the three daemons.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
VENV_BIN = REPO / ".venv" / "bin"
PEER_VENV = REPO / ".bench-venv"
PEER_BIN = PEER_VENV / "bin"
RESULTS_DIR = BENCH_DIR / "results"
# The versions ../shared/ANCHORS.md was measured with; pinned so figures compare.
PEER_REQUIREMENTS = ("supervisor==4.3.0", "circus==0.19.0")
SLEEP = shutil.which("sleep") or "/bin/sleep"
PEERS = ("supervisord", "circus")


# -- waiting ------------------------------------------------------------------------------


class Deadline:
    """A point in time after which a wait gives up, so that no loop can hang the suite."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds = seconds
        self.what = what
        self._end = time.monotonic() + seconds

    @property
    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self) -> None:
        """Raise ``TimeoutError`` once the deadline has passed."""
        if self.expired():
            raise TimeoutError(f"{self.what}: not done within {self.seconds:g} s")


# -- the peers' venv ----------------------------------------------------------------------


def ensure_peer_venv() -> None:
    """Create ``.bench-venv`` with supervisord and Circus on first use.

    The peers live apart from ``.venv`` so that the project's locked dependencies stay
    exactly what ``make install`` made them.
    """
    stamp = PEER_VENV / ".bench-stamp"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == wanted and (PEER_BIN / "circusd").exists():
        return
    print(f"bench: installing {', '.join(PEER_REQUIREMENTS)} into {PEER_VENV}", file=sys.stderr)
    if not (PEER_BIN / "python").exists():
        subprocess.run(["python3", "-m", "venv", str(PEER_VENV)], check=True, timeout=300)
    done = subprocess.run(
        [str(PEER_BIN / "pip"), "install", "--disable-pip-version-check", "-q", *PEER_REQUIREMENTS],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot install the peers ({' '.join(PEER_REQUIREMENTS)}):\n{done.stderr}")
    stamp.write_text(wanted)


# -- processes ----------------------------------------------------------------------------

_started: dict[int, subprocess.Popen[bytes]] = {}


def start(
    argv: Sequence[str | Path],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    pipes: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output in ``log_path``; it is stopped at exit at the latest.

    Output goes to a file rather than a pipe so that a chatty daemon never blocks on a
    pipe nobody drains while a benchmark is busy elsewhere. With ``pipes``, stdin and
    stdout are pipes for a request/response helper, and only stderr goes to the file.
    """
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else log,
            stderr=log if pipes else subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )
    _started[proc.pid] = proc
    return proc


def stop(
    proc: subprocess.Popen[bytes],
    sig: int = signal.SIGTERM,
    timeout_s: float = 30.0,
    repeat_every_s: float | None = None,
) -> int | None:
    """Send ``sig`` to ``proc`` by its pid, wait ``timeout_s``, then SIGKILL; return its status.

    ``repeat_every_s`` sends ``sig`` again at that interval, for a daemon known to drop
    a signal that arrives while it is busy (circusd does).
    """
    deadline = Deadline(timeout_s, f"stop pid {proc.pid}")
    try:
        while proc.poll() is None and not deadline.expired():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(deadline.remaining, repeat_every_s or timeout_s))
        if proc.poll() is None:
            print(f"bench: pid {proc.pid} ignored signal {sig} for {timeout_s} s: SIGKILL", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        return proc.returncode
    finally:
        _started.pop(proc.pid, None)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_started.values()):
        stop(proc, signal.SIGKILL, timeout_s=5)


def kill_leftovers(pids: Iterable[int], name: str) -> int:
    """SIGKILL those of ``pids`` still running ``name`` (checked, since pids get reused)."""
    killed = 0
    for pid in pids:
        if argv0(pid) == name:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_connectable(
    address: tuple[str, int] | str, deadline: Deadline, proc: subprocess.Popen[bytes]
) -> None:
    """Poll every millisecond until something accepts connections on ``address``.

    ``address`` is ``(host, port)`` for TCP or a path for a unix socket. Raises if
    ``proc`` (the daemon expected to listen) exits first.
    """
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(address)
                return
            except (ConnectionRefusedError, FileNotFoundError):
                pass
        if proc.poll() is not None:
            raise RuntimeError(f"pid {proc.pid} exited with {proc.returncode} before listening on {address}")
        deadline.check()
        time.sleep(0.001)


# -- /proc --------------------------------------------------------------------------------


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (every thread's), from ``/proc/PID/task/*/children``."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                found.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return found


def argv0(pid: int) -> str | None:
    """The base name of ``argv[0]`` of ``pid``; None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            first = fh.read(4096).split(b"\0", 1)[0]
    except OSError:
        return None
    return os.path.basename(first.decode(errors="replace")) if first else None


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (``VmRSS``), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def schedstat_seconds(pid: int, field: int = 0) -> float:
    """A ``/proc/PID/task/*/schedstat`` field summed over every thread of ``pid``, in seconds
    (0: time on a CPU; 1: time ready to run but waiting for one); gone: 0."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[field])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread of ``pid`` so far; gone: 0."""
    return schedstat_seconds(pid, 0)


def machine_busy_seconds() -> float:
    """CPU time all CPUs spent running programs so far (``/proc/stat``: user, nice, system, steal).

    Interrupt and softirq time are left out (the loopback traffic's own, charged to nobody).
    """
    with open("/proc/stat") as fh:
        fields = fh.readline().split()
    user, nice, system, steal = (int(fields[i]) for i in (1, 2, 3, 8))
    return (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` in the tree."""
    out: list[int] = []
    todo = child_pids(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(child_pids(child))
    return out


class ChildWatcher:
    """The children of one daemon that have exec'd ``name``: what "running" means here.

    A forked child that has not exec'd yet still shows the daemon's own ``argv[0]``,
    so matching on ``name`` times the moment the program really runs. Pids already
    seen running are cached so that a scan over 200 children stays cheap.
    """

    def __init__(self, daemon_pid: int, name: str) -> None:
        self.daemon_pid = daemon_pid
        self.name = name
        self._running: set[int] = set()
        self.ever: set[int] = set()

    def scan(self) -> set[int]:
        now = set(child_pids(self.daemon_pid))
        self._running &= now
        for pid in now - self._running:
            if argv0(pid) == self.name:
                self._running.add(pid)
        self.ever |= self._running
        return set(self._running)

    def wait_count(self, count: int, deadline: Deadline, interval_s: float = 0.001) -> set[int]:
        """Wait until exactly ``count`` children run ``name``; return their pids."""
        while True:
            pids = self.scan()
            if len(pids) == count:
                return pids
            deadline.check()
            time.sleep(interval_s)

    def cleanup(self) -> int:
        """Kill any child this watcher ever saw that still runs (the daemon should have)."""
        return kill_leftovers(self.ever, self.name)


# -- statistics ---------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct`` percentile by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- figures and the table ----------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure for the three daemons, with its goal and whether herder meets it."""

    bench: str
    label: str
    unit: str
    higher_is_better: bool
    herder: float | None
    supervisord: float | None
    circus: float | None
    reference: float | None = None
    reference_label: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def advantage(self, peer: str) -> float | None:
        """How many times better herder is than ``peer`` (above 1: better), whatever the unit."""
        mine = self.herder
        theirs: float | None = getattr(self, peer)
        if mine is None or theirs is None or mine <= 0 or theirs <= 0:
            return None
        return mine / theirs if self.higher_is_better else theirs / mine


def fmt(value: float | None) -> str:
    """A figure with as many digits as are worth reading."""
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def verdict(fig: Figure) -> str:
    if not fig.goal:
        return ""
    state = {True: "MET", False: "MISSED", None: "?"}[fig.met]
    return f"{state}: {fig.goal}"


TABLE_HEADER = (
    "#",
    "figure",
    "unit",
    "herder",
    "supervisord",
    "circus",
    "reference",
    "vs supervisord",
    "vs circus",
    "goal",
)


def table_rows(figures: Sequence[Figure]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for f in figures:
        better = "higher" if f.higher_is_better else "lower"
        ref = f"{fmt(f.reference)} ({f.reference_label})" if f.reference is not None else ""
        rows.append(
            (
                f.bench,
                f.label,
                f"{f.unit}, {better} is better",
                fmt(f.herder),
                fmt(f.supervisord),
                fmt(f.circus),
                ref,
                fmt_ratio(f.advantage("supervisord")),
                fmt_ratio(f.advantage("circus")),
                verdict(f),
            )
        )
    return rows


def rows_table(header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False) -> str:
    """``rows`` under ``header``: aligned plain text, or a Markdown table for bench/README.md."""
    table = [tuple(header), *(tuple(r) for r in rows)]
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in table]
        lines.insert(1, "|" + "---|" * len(header))
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(figures: Sequence[Figure]) -> str:
    """A plain-text table; the ratios say how many times better herder is (above 1x: better)."""
    lines = [rows_table(TABLE_HEADER, table_rows(figures))]
    notes = [f"  [{f.bench}] {f.label}: {f.note}" for f in figures if f.note]
    footer = ["", "Ratios: how many times better herder is than the peer (above 1x: herder is better)."]
    return "\n".join(lines + footer + (["Notes:", *notes] if notes else []))


def format_markdown(figures: Sequence[Figure]) -> str:
    """The same table in Markdown, for bench/README.md."""
    rows = table_rows(figures)
    out = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    out += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in rows]
    return "\n".join(out)


def machine_summary() -> str:
    return (
        f"{platform.node()}: {os.cpu_count()} cpus, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )


def source_state() -> str:
    """The herder commit measured, and whether ``src/`` differs from it (figures name it)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head or 'unknown'}{' with uncommitted changes in src/' if dirty else ''}"


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and shorter runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args()


def report_parser(description: str, quick_help: str) -> argparse.ArgumentParser:
    """The options of a benchmark with detail tables: ``--quick``, ``--json``, ``--markdown``
    (a script adds its own)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--markdown", action="store_true", help="print the tables in Markdown (for README.md)"
    )
    return parser


def measured_line(source: str) -> str:
    """Which herder was measured, and whether ``src/`` changed while it was (``source``: the
    ``source_state()`` taken when the run began)."""
    after = source_state()
    changed = "" if after == source else f" (src/ changed during the run: now {after})"
    return f"herder measured: {source}{changed}"


def print_report(
    title: str,
    args: argparse.Namespace,
    started: float,
    source: str,
    figures: Sequence[Figure],
    detail_text: str,
    detail: object,
    **extra: object,
) -> None:
    """What a benchmark with detail tables prints (and writes with ``--json``)."""
    mode = " --quick" if args.quick else ""
    print(f"{title}{mode}: {machine_summary()}; {time.monotonic() - started:.0f} s")
    print(measured_line(source) + "\n")
    print(format_markdown(figures) if args.markdown else format_table(figures))
    print()
    print(detail_text)
    if args.json:
        write_json(args.json, figures, {"quick": args.quick, "source": source, "detail": detail, **extra})


def write_json(path: Path, figures: Sequence[Figure], extra: dict[str, object] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine_summary(), "figures": [asdict(f) for f in figures], **(extra or {})}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def progress(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the table."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def main_for(description: str, run: Callable[..., list[Figure]]) -> None:
    """The ``__main__`` of one benchmark: parse ``--quick``, run it, print its table."""
    args = parse_args(description)
    ensure_peer_venv()
    figures = run(quick=args.quick)
    print(format_table(figures))
    if args.json:
        write_json(args.json, figures)
