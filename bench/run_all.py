"""Run every benchmark (``make bench``) and print herder, supervisord and Circus side by side.

Benchmark 6 (issue 3's RPC round trips) has no daemon peers: its reference column is
a bare echo over the same transport, measured in the same run. Benchmark 7 (issue 4's
router) neither: its reference is nginx as a reverse proxy (and the backend alone),
measured with wrk; it needs ``wrk`` and ``nginx`` from the system and fails, naming
the ``apt-get`` command, when they are missing (the other benchmarks still run).
Benchmark 8 (issue 5's sessions) neither: its references are the agent answering
``meta.ping`` itself (no host hop), a Python start with a host's imports, and a local
copy of the same bytes in the same file system. Benchmark 9 (issue 6's manager) neither:
its reference is this machine's raw spawn rate of ``true``, measured in the same run;
it runs on SQLite and on PostgreSQL (``$HERDER_BENCH_PG_URL``, default
``postgresql://postgres@127.0.0.1:5432/test``; it fails, naming the URL, without one).
Benchmark 10 (issue 7's registry) neither: its goals are absolute (query p99, heartbeats
per second on one core), and its one reference is a bare Ed25519 signature check.
Benchmark 11 (issue 14's builds) neither: its references are uv alone on the same
requirements (from a wheelhouse the script writes) and the same app without dependencies.
Benchmark 12 (issue 15's dashboard) neither: its goal is absolute (first useful paint in
Debian's chromium ≤ 1 s with 1,000 workers and 100,000 tasks), its reference the same page
with one worker and one task; here on SQLite (``bench_ui.py --postgres`` adds PostgreSQL).
Benchmark 14 (issue 17's several managers) neither: its goals are a ratio (2 managers' tasks/s
over one's) and an absolute p99; it needs PostgreSQL as benchmark 9 does.

Each benchmark measures the three daemons in the same run on the same machine, so
the ratios hold even when absolute figures drift. A benchmark that fails is reported
and the others still run; the exit status is then 1. The table also goes to
``bench/results/latest.json`` and ``latest.md`` (git-ignored) for the README.

``--quick`` runs fewer rounds and trials (about a minute and a half instead of about
four): good for a smoke test, not for figures to publish.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import bench_builds
import bench_cli
import bench_manager
import bench_managers_scale
import bench_output
import bench_registry
import bench_respawn
import bench_router
import bench_rpc
import bench_sessions
import bench_spawn
import bench_start
import bench_status
import bench_ui
import harness
from harness import RESULTS_DIR, Figure

BENCHMARKS: tuple[tuple[str, Callable[..., list[Figure]]], ...] = (
    ("1 start and idle RSS", bench_start.run),
    ("2 start 200 processes", bench_spawn.run),
    ("3 crash-to-respawn latency", bench_respawn.run),
    ("4 status/list API requests/s", bench_status.run),
    ("5 output throughput", bench_output.run),
    ("6 RPC round trips (issue 3)", bench_rpc.run),
    ("7 HTTP router against nginx (issue 4)", bench_router.run),
    ("8 sessions: open, relayed calls, file transfer (issue 5)", bench_sessions.run),
    ("9 manager: tasks end to end, heartbeats (issue 6)", bench_manager.run),
    ("10 registry: queries, registrations, heartbeats, tokens (issue 7)", bench_registry.run),
    ("11 builds: cold build against uv alone, starts of built apps (issue 14)", bench_builds.run),
    ("12 dashboard: first useful paint, 1,000 workers and 100,000 tasks (issue 15)", bench_ui.run),
    ("13 CLI: start to answer against supervisorctl status (issue 16)", bench_cli.figures),
    ("14 several managers on one PostgreSQL, heartbeats over 3 (issue 17)", bench_managers_scale.run),
)


def main() -> int:
    args = harness.parse_args(__doc__ or "")
    harness.ensure_peer_venv()
    figures: list[Figure] = []
    failures: list[str] = []
    source = harness.source_state()
    t0 = time.monotonic()
    for name, run in BENCHMARKS:
        harness.progress(f"benchmark {name}")
        started = time.monotonic()
        try:
            figures += run(quick=args.quick)
        except Exception:
            failures.append(f"benchmark {name} failed:\n{traceback.format_exc()}")
            harness.progress(failures[-1])
        harness.progress(f"benchmark {name}: {time.monotonic() - started:.0f} s")
    total = time.monotonic() - t0
    mode = " --quick" if args.quick else ""
    print(f"herder benchmarks{mode}: {harness.machine_summary()}; {total:.0f} s in all")
    after = harness.source_state()
    print(harness.measured_line(source) + "\n")
    print(harness.format_table(figures))
    for failure in failures:
        print(f"\n{failure}")
    extra: dict[str, object] = {
        "quick": args.quick,
        "seconds": total,
        "source": source,
        "source_after": after,
        "failures": failures,
    }
    harness.write_json(args.json or RESULTS_DIR / "latest.json", figures, extra)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)  # --json may have written elsewhere
    (RESULTS_DIR / "latest.md").write_text(harness.format_markdown(figures) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
