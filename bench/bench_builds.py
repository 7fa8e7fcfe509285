"""Benchmark 11: builds (issue 14): a cold build against the installer alone, starts of built apps.

Three figures, each with its reference measured in the same run on the same machine:

1. **Cold build.** A Python app with five common dependencies (``requirements.txt``:
   fastapi, sqlalchemy, httpx, click, requests, and the app's own server package), created
   with ``POST /create-process`` on a fresh ``herder agent`` (an empty data dir, so an
   empty package cache): the time from the POST until the process is ``running`` and
   answers on ``$PORT``, minus nothing. The reference is the installer alone on the same
   requirements with the same interpreter: ``uv venv`` then ``uv pip install -r
   requirements.txt``, with a fresh empty ``UV_CACHE_DIR``. Goal: ≤ 1.2x the installer.
   The warm figures (a new build of changed app content on the same agent, against the
   installer with a shared cache) are reported beside it.
2. **Start of a built app.** Create, ``running``, delete, N times, an app whose build is
   cached, against the same app without dependencies. Goal: ≤ 1.1x. ``running`` is the
   agent's ``started_at`` against the driver's clock before the POST, while the driver waits
   on the process's port: polling the status would add its own round trip to the figure.
3. **Pool cold start.** A pool (``min_instances`` 0, ``max_instances`` 1, a short
   ``idle_timeout``) of the built app, against a pool of the app without dependencies:
   once the pool has stopped its instance, the latency of the first request (a fresh
   connection to the pool's ``listen`` port). Goal: within 50 ms of the app without
   dependencies.

No network beyond loopback: the wheelhouse (written into a temporary directory once per
run, not timed) holds real wheels rebuilt from the distributions installed in ``.venv``
(``installed_wheels.py``): the five and their whole dependency closure, 20 wheels of
about 8.5 MiB, three with compiled extensions (SQLAlchemy, pydantic-core,
charset-normalizer), and a tiny ``benchweb`` wheel, the app's HTTP server with a console
script. The reference venv is checked to import the five (untimed). Both herder
(``[builds] find_links`` and ``no_index``) and the reference install with ``--no-index
--find-links``. Both apps serve with ``python3 -m benchweb`` (the same module: from the
venv for the built app, from the app's tree for the other; the same interpreter, the one
the venvs link to, put first on the bare app's PATH), so the figures differ only by what
herder adds. The driver waits on the process's port, not on the agent's status (polled
every ms, the status slowed the build it measured); see bench/README.md, issue 14.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import installed_wheels
from daemons import Herder, http_get
from harness import VENV_BIN, Deadline, Figure, median, percentile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for the tests' wheel writer
from tests.fixtures.builds import wheels

# Five common dependencies, as the goal says: rebuilt from this venv (their closure is 20
# distributions at the versions requirements.lock pins, two of them compiled).
COMMON = ("fastapi", "sqlalchemy", "httpx", "click", "requests")
SERVER_PACKAGE = "benchweb"  # the app's HTTP server, a tiny wheel of its own
IMPORT_CHECK = f"import {', '.join(COMMON)}"
INTERPRETER = VENV_BIN / "python"  # the agent's own: what its builds use unless an app asks
BUILD_TIMEOUT_S = 300.0
START_TIMEOUT_S = 30.0
POLL_S = 0.001
STATUS_POLL_S = 0.02
POOL_IDLE_S = 0.4
GOAL_BUILD_RATIO = 1.2
GOAL_START_RATIO = 1.1
GOAL_POOL_MS = 50.0

SERVER = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok\\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()


if __name__ == "__main__":
    main()
"""
SERVER_MAIN = "from benchweb import main\n\nmain()\n"


# -- the wheelhouse and the apps ----------------------------------------------------------


def write_server_wheel(folder: Path) -> Path:
    """``benchweb``: the app's server (``python -m benchweb``) and a console script, ``bench-serve``."""
    modules = {f"{SERVER_PACKAGE}/__init__.py": SERVER, f"{SERVER_PACKAGE}/__main__.py": SERVER_MAIN}
    return wheels.write_wheel(
        folder,
        SERVER_PACKAGE,
        "1.0",
        modules,
        {"bench-serve": f"{SERVER_PACKAGE}:main"},
        compression=zipfile.ZIP_DEFLATED,
        generator="herder-bench",
    )


def write_wheelhouse(folder: Path) -> list[Path]:
    """The five common packages with their dependencies, and the server: real wheels, offline."""
    return [*installed_wheels.write_wheelhouse(folder, COMMON), write_server_wheel(folder)]


def write_app(root: Path, built: bool, marker: str = "") -> Path:
    """The app: ``requirements.txt`` naming the five packages and the server, or the server in its tree."""
    root.mkdir(parents=True)
    (root / "Procfile").write_text("web: exec python3 -m benchweb\n")
    (root / "VERSION").write_text(marker + "\n")  # another marker: other content, another build
    if built:
        (root / "requirements.txt").write_text("".join(f"{n}\n" for n in (*COMMON, SERVER_PACKAGE)))
    else:
        (root / SERVER_PACKAGE).mkdir()
        (root / SERVER_PACKAGE / "__init__.py").write_text(SERVER)
        (root / SERVER_PACKAGE / "__main__.py").write_text(SERVER_MAIN)
    return root


def agent_config(wheelhouse: Path) -> str:
    """The wheelhouse as the only index (the agent's defaults otherwise)."""
    return f'[builds]\nfind_links = ["{wheelhouse}"]\nno_index = true\n'


@contextmanager
def agent(workdir: Path, wheelhouse: Path) -> Iterator[Herder]:
    workdir.mkdir(parents=True, exist_ok=True)
    daemon = Herder(workdir, agent_config(wheelhouse))
    try:
        daemon.start()
        # The driver's HTTP client, made before any clock starts: its import and TLS context
        # (~0.3 s the first time, ~60 ms each) were counted in each cold build until now.
        _ = daemon.client
        yield daemon
    finally:
        daemon.stop()


# -- herder: processes --------------------------------------------------------------------


def bare_env(app: str) -> dict[str, str]:
    """The bare app's ``python3``: the interpreter the venvs link to, first on PATH.

    Without it, ``python3`` may be a shim (pyenv's is a shell script that costs some 80 ms
    a start), and the reference would be slower than the built app for no reason of herder's.
    """
    if not app.endswith("bare"):
        return {}
    return {"PATH": f"{Path(os.path.realpath(INTERPRETER)).parent}:{os.environ.get('PATH', '')}"}


def create(daemon: Herder, app: str, node: str, source: Path) -> dict[str, Any]:
    """``POST /create-process``; its status document."""
    body = {
        "app": app,
        "node": node,
        "source_url": source.as_uri(),
        "process_type": "web",
        "env": bare_env(app),
    }
    resp = daemon.client.post("/create-process", json=body)
    if resp.status_code != 201:
        raise RuntimeError(f"create {app}.{node}: {resp.status_code} {resp.text}")
    doc: dict[str, Any] = resp.json()
    return doc


def status(daemon: Herder, slug: str) -> dict[str, Any]:
    """The process's status; a ``failed`` process raises with its error."""
    doc: dict[str, Any] = daemon.client.get(f"/process-status/{slug}").json()
    if doc.get("state") == "failed":
        raise RuntimeError(f"{slug} failed: {doc.get('error')}")
    return doc


def wait_running(daemon: Herder, slug: str, timeout_s: float, poll_s: float = POLL_S) -> dict[str, Any]:
    """Poll the status until ``running``: each poll is a request the agent serves while it works."""
    deadline = Deadline(timeout_s, f"{slug} running")
    while (doc := status(daemon, slug)).get("state") != "running":
        deadline.check()
        time.sleep(poll_s)
    return doc


def _answers(port: int) -> bool:
    try:
        return http_get("127.0.0.1", port, "/", timeout_s=5.0)[0] == 200
    except OSError:
        return False


def wait_answers(daemon: Herder, doc: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Until the process answers on its port; its status once it does.

    The process's own signal, which costs the agent nothing: its port is tried every
    ``POLL_S`` (a refused connection is a few µs of the kernel's). The agent is asked only
    while the port is not known yet (a build under way: every ``STATUS_POLL_S``, far less
    than the app's own start, so the answer is not seen later for it) and, as rarely, to
    notice a failure.
    """
    slug, port = doc["slug"], doc["port"]
    deadline = Deadline(timeout_s, f"{slug} answers on its port")
    next_status = time.monotonic() + STATUS_POLL_S
    while port is None or not _answers(port):
        if port is None or time.monotonic() >= next_status:
            port = status(daemon, slug)["port"]
            next_status = time.monotonic() + STATUS_POLL_S
        deadline.check()
        time.sleep(POLL_S if port is not None else STATUS_POLL_S)
    return status(daemon, slug)


def spawned_s(doc: dict[str, Any], t0_wall: float) -> float:
    """From ``t0_wall`` (``time.time()`` before the POST) to the spawn, by the agent's ``started_at``.

    ``started_at`` is the agent's clock (this machine's) when the process got its pid, the
    moment it turns ``running``; its milliseconds are truncated, so half of one is added back.
    """
    started = datetime.datetime.fromisoformat(doc["started_at"]).timestamp()
    return started + 0.0005 - t0_wall


def delete(daemon: Herder, slug: str) -> None:
    daemon.client.post(f"/delete-process/{slug}", json={}).raise_for_status()


def herder_build_s(daemon: Herder, app_dir: Path, node: str) -> tuple[float, float]:
    """POST /create-process until the process answers: the build, then the start; and until its spawn."""
    t0_wall, t0 = time.time(), time.perf_counter()
    doc = wait_answers(daemon, create(daemon, "bench", node, app_dir), BUILD_TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    delete(daemon, doc["slug"])
    return elapsed, spawned_s(doc, t0_wall)


# -- the reference: the installer alone ---------------------------------------------------


def installer_s(workdir: Path, wheelhouse: Path, requirements: Path, cache: Path) -> float:
    """``uv venv`` and ``uv pip install -r``, as herder's build runs them, timed alone."""
    uv = str(VENV_BIN / "uv") if (VENV_BIN / "uv").exists() else shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not installed (.venv/bin/uv or on PATH)")
    venv = workdir / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "UV_PYTHON_DOWNLOADS": "never", "VIRTUAL_ENV": str(venv)}
    index = ["--no-index", "--find-links", str(wheelhouse)]
    t0 = time.perf_counter()
    for argv in (
        [uv, "venv", "--quiet", "--python", str(INTERPRETER), str(venv)],
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), *index, "-r", str(requirements)],
    ):
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=BUILD_TIMEOUT_S)
    return time.perf_counter() - t0


def check_imports(venv: Path) -> None:
    """The installed venv imports the five (untimed): the wheelhouse is a working one."""
    python = str(venv / "bin" / "python")
    done = subprocess.run([python, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{IMPORT_CHECK!r} failed in {venv}: {done.stderr[-2000:]}")


# -- the three measures -------------------------------------------------------------------


def measure_builds(tmp: Path, wheelhouse: Path, cold: int, warm: int) -> dict[str, list[float]]:
    """Cold and warm builds, herder and the installer taking turns.

    Herder's: until the process answers (the figure), and until its spawn (``… spawn``).
    """
    out: dict[str, list[float]] = {k: [] for k in ("herder cold", "herder cold spawn", "uv cold")}
    out |= {k: [] for k in ("herder warm", "herder warm spawn", "uv warm")}
    for i in range(cold):
        app = write_app(tmp / f"app-cold-{i}", built=True, marker=f"cold {i}")
        with agent(tmp / f"agent-cold-{i}", wheelhouse) as daemon:
            answered, spawned = herder_build_s(daemon, app, f"cold.{i}")
        out["herder cold"].append(answered)
        out["herder cold spawn"].append(spawned)
        ref = tmp / f"uv-cold-{i}"
        out["uv cold"].append(installer_s(ref, wheelhouse, app / "requirements.txt", ref / "cache"))
        if i == 0:
            check_imports(ref / "venv")
        harness.progress(f"builds: cold {i + 1}/{cold}")
    shared = tmp / "uv-shared-cache"
    app = write_app(tmp / "app-warm-first", built=True, marker="warm first")
    installer_s(tmp / "uv-warm-first", wheelhouse, app / "requirements.txt", shared)  # fills the cache
    with agent(tmp / "agent-warm", wheelhouse) as daemon:
        herder_build_s(daemon, app, "warm.first")  # fills the agent's package cache
        for i in range(warm):
            app = write_app(tmp / f"app-warm-{i}", built=True, marker=f"warm {i}")
            answered, spawned = herder_build_s(daemon, app, f"warm.{i}")
            out["herder warm"].append(answered)
            out["herder warm spawn"].append(spawned)
            out["uv warm"].append(
                installer_s(tmp / f"uv-warm-{i}", wheelhouse, app / "requirements.txt", shared)
            )
    return out


def start_s(daemon: Herder, app: str, node: str, source: Path, poll_s: float | None) -> tuple[float, float]:
    """One create: POST to ``running`` (the figure) and POST to answering; then a delete.

    ``poll_s`` None (the figure's way): wait on the process's port (``wait_answers``) and
    take ``running`` from the agent's ``started_at``, so the wait costs the agent nothing.
    Otherwise the status is polled every ``poll_s`` and ``running`` is when a poll saw it.
    """
    t0_wall, t0 = time.time(), time.perf_counter()
    doc = create(daemon, app, node, source)
    if poll_s is not None:
        wait_running(daemon, doc["slug"], START_TIMEOUT_S, poll_s)
        running = time.perf_counter() - t0
    doc = wait_answers(daemon, doc, START_TIMEOUT_S)
    answered = time.perf_counter() - t0
    if poll_s is None:
        running = spawned_s(doc, t0_wall)
    delete(daemon, doc["slug"])
    return running, answered


def measure_starts(
    daemon: Herder, built: Path, bare: Path, count: int, poll_s: float | None = None
) -> dict[str, list[float]]:
    """Create, ``running`` (and answering), delete: the built app (build cached), the bare app, in turns."""
    doc = wait_answers(daemon, create(daemon, "built", "warmup", built), BUILD_TIMEOUT_S)
    delete(daemon, doc["slug"])  # built once, not timed
    out: dict[str, list[float]] = {k: [] for k in ("built", "bare", "built answers", "bare answers")}
    for i in range(count):
        for name, source in (("built", built), ("bare", bare)):
            running, answered = start_s(daemon, name, f"web.{i}", source, poll_s)
            out[name].append(running)
            out[f"{name} answers"].append(answered)
    return out


def create_pool(daemon: Herder, name: str, source: Path) -> dict[str, Any]:
    body = {
        "name": name,
        "source_url": source.as_uri(),
        "process_type": "web",
        "env": bare_env(name),
        "listen": "127.0.0.1:0",
        "min_instances": 0,
        "max_instances": 1,
        "idle_timeout": POOL_IDLE_S,
    }
    resp = daemon.client.post("/pools", json=body)
    if resp.status_code != 201:
        raise RuntimeError(f"create pool {name}: {resp.status_code} {resp.text}")
    doc: dict[str, Any] = resp.json()
    return doc


def wait_pool_idle(daemon: Herder, name: str) -> None:
    deadline = Deadline(START_TIMEOUT_S, f"pool {name} with no instance")
    while daemon.client.get(f"/pools/{name}").json()["instances"]:
        deadline.check()
        time.sleep(0.01)


def first_request_s(url: str) -> float:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    t0 = time.perf_counter()
    status, _ = http_get(host, int(port), "/", timeout_s=START_TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"pool at {url} answered {status}")
    return elapsed


def measure_pools(daemon: Herder, built: Path, bare: Path, count: int) -> dict[str, list[float]]:
    """First-request latency of a pool with no instance: the built app and the bare app in turns."""
    urls = {
        name: create_pool(daemon, f"pool-{name}", src)["url"]
        for name, src in (("built", built), ("bare", bare))
    }
    for url in urls.values():
        first_request_s(url)  # the pool's first request (the build is cached already)
    out: dict[str, list[float]] = {"built": [], "bare": []}
    for _ in range(count):
        for name, url in urls.items():
            wait_pool_idle(daemon, f"pool-{name}")
            out[name].append(first_request_s(url))
    return out


# -- figures ------------------------------------------------------------------------------


def _figure(label: str, unit: str, herder: float, ref: float, ref_label: str, **kw: Any) -> Figure:
    return Figure(
        bench="11",
        label=label,
        unit=unit,
        higher_is_better=False,
        herder=herder,
        supervisord=None,
        circus=None,
        reference=ref,
        reference_label=ref_label,
        **kw,
    )


def run(quick: bool = False) -> list[Figure]:
    cold, warm, starts, pools = (1, 2, 5, 3) if quick else (5, 5, 20, 10)
    with tempfile.TemporaryDirectory(prefix="herder-bench-") as tmp_name:
        tmp = Path(tmp_name)
        wheel_paths = write_wheelhouse(tmp / "wheelhouse")
        wheel_bytes = sum(p.stat().st_size for p in wheel_paths)
        builds = measure_builds(tmp, tmp / "wheelhouse", cold, warm)
        harness.progress("builds: cold and warm done")
        built = write_app(tmp / "app-built", built=True, marker="start")
        bare = write_app(tmp / "app-bare", built=False)
        with agent(tmp / "agent-start", tmp / "wheelhouse") as daemon:
            start_s = measure_starts(daemon, built, bare, starts)
            harness.progress("builds: starts done")
            pool_s = measure_pools(daemon, built, bare, pools)
            harness.progress("builds: pools done")
    ms: Callable[[list[float]], float] = lambda v: median(v) * 1000  # noqa: E731
    cold_h, cold_r = median(builds["herder cold"]), median(builds["uv cold"])
    warm_h, warm_r = median(builds["herder warm"]), median(builds["uv warm"])
    start_h, start_r = ms(start_s["built"]), ms(start_s["bare"])
    answer_h, answer_r = ms(start_s["built answers"]), ms(start_s["bare answers"])
    spawn_cold, spawn_warm = median(builds["herder cold spawn"]), median(builds["herder warm spawn"])
    pool_h, pool_r = ms(pool_s["built"]), ms(pool_s["bare"])
    pool_p90 = percentile(pool_s["built"], 90) * 1000
    return [
        _figure(
            "cold build, 5 deps: POST to running and answering, median",
            "s",
            cold_h,
            cold_r,
            "uv venv + uv pip install, empty cache",
            goal=f"≤ {GOAL_BUILD_RATIO:g}x the installer",
            met=cold_h <= GOAL_BUILD_RATIO * cold_r,
            note=(
                f"{cold_h / cold_r:.2f}x; POST to spawn {spawn_cold:.2f} s "
                f"({spawn_cold / cold_r:.2f}x); {cold} trial(s), each on a fresh agent; "
                f"{', '.join(COMMON)}: {len(wheel_paths)} wheels with their dependencies "
                f"and the server, {wheel_bytes / 2**20:.1f} MiB in all"
            ),
        ),
        _figure(
            "warm build (new content, shared cache), median",
            "s",
            warm_h,
            warm_r,
            "uv venv + uv pip install, warm cache",
            note=f"{warm_h / warm_r:.2f}x; POST to spawn {spawn_warm:.2f} s; {warm} trials on one agent",
        ),
        _figure(
            "start of a built app: POST to running (spawn), median",
            "ms",
            start_h,
            start_r,
            "app without dependencies",
            goal=f"≤ {GOAL_START_RATIO:g}x",
            met=start_h <= GOAL_START_RATIO * start_r,
            note=(
                f"{start_h / start_r:.2f}x; POST to answering {answer_h:.0f} ms against {answer_r:.0f} ms; "
                f"{starts} create/delete each, in turns"
            ),
        ),
        _figure(
            "pool cold start (0 instances), first request, median",
            "ms",
            pool_h,
            pool_r,
            "app without dependencies",
            goal=f"within {GOAL_POOL_MS:g} ms",
            met=pool_h - pool_r <= GOAL_POOL_MS,
            note=f"{pool_h - pool_r:+.1f} ms; p90 {pool_p90:.1f} ms; {pools} cold starts each, in turns",
        ),
    ]


def main() -> None:
    args = harness.report_parser(__doc__ or "", "fewer trials (about a minute): a smoke test").parse_args()
    figures = run(quick=args.quick)
    print(f"herder benchmark 11{' --quick' if args.quick else ''}: {harness.machine_summary()}")
    print(harness.format_markdown(figures) if args.markdown else harness.format_table(figures))
    if args.json:
        harness.write_json(args.json, figures, {"quick": args.quick})


if __name__ == "__main__":
    main()
