"""Benchmark 12 (issue 15): the dashboard's first useful paint with 1,000 workers and 100,000 tasks.

Real parts only: ``herder manager --port 0`` with keys on (``herder keys init``, an admin
key from ``herder keys issue``), Debian's chromium (``/usr/bin/chromium``) driven by
Playwright with the browser tests' flags (nothing downloaded, no ``playwright install``).

**Set-up, not timed.** The manager's database is migrated and filled through herder's own
store layer before the manager starts: 1,000 workers (``tables.Worker`` rows as a
registration writes them: hostname, system, slots, tags, agent URL, the figures an agent
sends) and 100,000 tasks with one work item each (``store.submissions.insert_tasks``, the
submissions' own statement, 5,000 a statement), most of them completed, some failed,
canceled or queued, spread over 30 days. Once the manager runs, each worker heartbeats
``--beats`` times through the pull path (``PATCH /workers/{id}`` with its figures and an
admin's token, 16 at once): what fills the sparklines' history, which the manager keeps in
memory only. Before every load, ``last_seen`` of every worker is set to now (one
``UPDATE``): the workers are online (heartbeats every 5 s, offline after 15 s, the
defaults) without a thousand live links loading the machine during the loads. The
reference (the floor) is the same page on a second manager whose database holds one
worker and one task, set up the same way.

**Timed.** Each load is a fresh browser context (a fresh profile: no cache, no storage)
of one chromium process, opening ``/ui/`` (the fleet) or ``/ui/#tasks`` (the task list).
The page is signed in as it keeps a session: the token an admin's key bought (``POST
/auth/token``, set-up) is in ``sessionStorage`` before the page's first script runs (an
init script). A third kind of load signs in as a user does: the form, the key pasted,
*Sign in* clicked (herder.js loaded, a token bought, one call, then the views); timed
from the click.

**First useful paint**, by the browser's own clock (``performance.now()``, from the
navigation's start): the first *row of data* of the view painted, the fleet's first worker
row (``#workers tbody tr[data-worker]``) or the task list's first task row (``#tasks
tbody tr[data-task]``). An init script watches the DOM (a ``MutationObserver``), and when
the row exists, before it is painted, gives its text elements an ``elementtiming``
attribute: the browser's Element Timing API then reports the frame that painted them
(``renderTime``). The first contentful paint (``paint`` entries) is reported beside it.
The breakdown comes from the same clock: the HTML, the page's modules (Resource Timing),
the feed's socket opened and its first message (the snapshot) received (the page's
``WebSocket`` is wrapped by the init script to note the times; the page is not changed),
the row in the DOM, and for the task list ``GET /tasks?limit=25``.

Loads go in turns (the big farm's fleet, its tasks, the floor's fleet and tasks, a
sign-in), ``--loads`` of each (15; 5 with ``--quick``), at least 1.5 s apart on one
manager, so that each snapshot is read from the database afresh (the feed reuses a read
less than a second old). Median and p90 of each; goal: the fleet's and the task list's
first rows painted within 1 s (the median).

On SQLite (the manager's default), and on PostgreSQL with ``--postgres`` (a database of
its own next to ``--pg-url``'s, created and dropped). Every process is stopped by its pid
(the managers) or by Playwright (the browser); the temporary directory is removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
from bench_manager import PG_URL, ManagerProc, pg_create, pg_drop
from harness import REPO, VENV_BIN, Figure, median, percentile

sys.path.insert(0, str(REPO))  # the repo, for the browser tests' chromium and its flags
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS

WORKERS = 1000
TASKS = 100_000
LOADS, LOADS_QUICK = 15, 5
BEATS, BEATS_QUICK = 10, 3  # heartbeats per worker in the set-up: the sparklines' points
BEAT_CONCURRENCY = 64
INSERT_BATCH = 5000
GOAL_S = 1.0
LOAD_GAP_S = 1.5  # between two loads of one manager: the feed reuses a worker read < 1 s old
LOAD_TIMEOUT_MS = 15_000  # a load that shows no row by then is counted as failed, with what it showed
VIEWS = {"fleet": "#workers tbody tr[data-worker]", "tasks": "#tasks tbody tr[data-task]"}
TASK_MIX = (("completed", 93), ("failed", 3), ("canceled", 2), ("queued", 2))  # per 100 tasks

# Runs in the page before its own scripts: the token (if any), the feed's socket times,
# the first row of data marked for Element Timing. Nothing of the page is changed.
INIT_JS = """
(() => {
  const token = __TOKEN__, selector = __SELECTOR__;
  if (token) sessionStorage.setItem("herder.token", token);
  const b = { marks: {}, paint: null, snapshotBytes: 0, messages: [], long: [], done: false };
  window.__bench = b;
  const mark = (name) => { if (!(name in b.marks)) b.marks[name] = performance.now(); };
  b.mark = mark;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      if (!String(args[0]).includes("/events")) return; // the feed's, not herder.js's /rpc link
      mark("socket");
      this.addEventListener("open", () => mark("socket open"));
      this.addEventListener("message", (m) => {
        b.messages.push(performance.now());
        if ("snapshot" in b.marks) return;
        b.snapshotBytes = typeof m.data === "string" ? m.data.length : 0;
        mark("snapshot");
      });
    }
  };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) b.long.push([entry.startTime, entry.duration]);
  }).observe({ type: "longtask", buffered: true });
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (entry.identifier === "first-row" && b.paint === null) {
        b.paint = entry.renderTime || entry.loadTime;
        b.done = true;
      }
    }
  }).observe({ type: "element", buffered: true });
  const seen = new MutationObserver(() => {
    const row = document.querySelector(selector);
    if (!row) return;
    seen.disconnect();
    mark("row in DOM");
    for (const el of [row, ...row.querySelectorAll("*")]) {
      const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (text) el.setAttribute("elementtiming", "first-row");
    }
    requestAnimationFrame(() => setTimeout(() => {
      mark("frame after");
      setTimeout(() => { b.done = true; }, 2000); // no Element Timing entry: the frame is the figure
    }));
  });
  seen.observe(document, { childList: true, subtree: true });
})();
"""

CLICK_JS = "() => { window.__bench.mark('click'); document.querySelector('#signin button').click(); }"

RESULT_JS = """
() => {
  const b = window.__bench;
  const nav = performance.getEntriesByType("navigation")[0];
  const fcp = performance.getEntriesByName("first-contentful-paint")[0];
  const resources = performance.getEntriesByType("resource").map((r) => ({
    name: new URL(r.name).pathname + new URL(r.name).search, type: r.initiatorType,
    start: r.startTime, end: r.responseEnd, bytes: r.encodedBodySize,
  }));
  return { marks: b.marks, paint: b.paint, snapshotBytes: b.snapshotBytes, fcp: fcp ? fcp.startTime : null,
           messages: b.messages, long: b.long,
           html: nav ? nav.responseEnd : null, resources };
}
"""


# -- the farm -----------------------------------------------------------------------------


def worker_rows(count: int, now: float, rng: random.Random) -> list[dict[str, Any]]:
    """Workers as a registration writes them, with the figures an agent sends."""
    rows = []
    for i in range(count):
        cpus = rng.choice((8, 16, 32, 64))
        load = round(rng.uniform(0, cpus), 2)
        rows.append(
            {
                "hostname": f"render-{i:04d}",
                "system": "Linux 6.1.0-28-amd64 x86_64",
                "ip_address": f"10.1.{i // 250}.{i % 250 + 1}",
                "port": 8021,
                "agent_url": f"http://10.1.{i // 250}.{i % 250 + 1}:8021",
                "slots": 4,
                "tags": ["linux", f"rack-{i % 20:02d}", *(["gpu"] if i % 4 == 0 else [])],
                "status": "enabled",
                "activity": "available",
                "update_frequent": frequent(load, cpus, rng),
                "update_less_frequent": {
                    "worker_architecture": "x86_64",
                    "worker_num_cpus": cpus,
                    "worker_mem_percent": round(rng.uniform(10, 90), 1),
                    "worker_disk_percent": round(rng.uniform(10, 90), 1),
                },
                "registered_at": now - 86_400,
                "last_seen": now,
            }
        )
    return rows


def frequent(load: float, cpus: int, rng: random.Random) -> dict[str, Any]:
    return {
        "load_average": {"1min": load, "5min": round(load * 0.9, 2), "15min": round(load * 0.8, 2)},
        "worker_cpu_percent": round(min(100.0, 100 * load / cpus + rng.uniform(0, 5)), 1),
    }


def new_tasks(first: int, count: int, workers: int, now: float, rng: random.Random) -> list[Any]:
    """``count`` frames tasks (one work item each) as ``insert_tasks`` takes them."""
    from herder.manager.store.submissions import NewTask

    mix = [status for status, share in TASK_MIX for _ in range(share)]
    out = []
    for n in range(first, first + count):
        status = mix[n % len(mix)] if n < TASKS - 50 else rng.choice(("queued", "completed"))
        created = now - 30 * 86_400 * (1 - n / TASKS)
        ended = status in ("completed", "failed", "canceled")
        worker_id = rng.randrange(1, workers + 1) if status in ("completed", "failed") else None
        start, end = 10 * (n % 10) + 1, 10 * (n % 10) + 10
        argv = ["blender", "-b", f"shot-{n}.blend", "-f", "{frame}"]
        task = {
            "owner": "bench",
            "type": "frames",
            "parser": "frames",
            "settings": {"argv": argv, "frame_start": start, "frame_end": end, "chunk": 10},
            "priority": n % 3,
            "tags": ["gpu"] if n % 7 == 0 else [],
            "status": status,
            "frame_start": start,
            "frame_end": end,
            "frame_current": end if status == "completed" else None,
            "worker_id": worker_id,
            "error": "exit status 1" if status == "failed" else None,
            "created_at": created,
            "updated_at": created + (60.0 if ended else 0.0),
        }
        item = {
            "index": 0,
            "argv": argv,
            "label": f"frames {start}-{end}",
            "frame_start": start,
            "frame_end": end,
            "frame_current": task["frame_current"],
            "status": status,
            "priority": task["priority"],
            "tags": task["tags"],
            "worker_id": worker_id,
            "attempt": 1 if worker_id else 0,
            "exit_code": {"completed": 0, "failed": 1}.get(status),
            "created_at": created,
            "started_at": created + 1 if worker_id else None,
            "finished_at": created + 60 if ended else None,
        }
        out.append(NewTask(task=task, items=[item]))
    return out


async def fill(db_url: str, workers: int, tasks: int) -> float:
    """Migrate the database at ``db_url`` and write the farm into it; the seconds it took."""
    from sqlalchemy import insert

    from herder.manager.store.db import create_engine, migrate
    from herder.manager.store.submissions import insert_tasks
    from herder.manager.store.tables import Worker

    t0 = time.perf_counter()
    rng = random.Random(15)
    now = time.time()
    engine = create_engine(db_url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(insert(Worker), worker_rows(workers, now, rng))
        for first in range(0, tasks, INSERT_BATCH):
            batch = new_tasks(first, min(INSERT_BATCH, tasks - first), workers, now, rng)
            async with engine.begin() as conn:
                await conn.run_sync(lambda c, b=batch: insert_tasks(c, b))
    finally:
        await engine.dispose()
    return time.perf_counter() - t0


async def mark_online(db_url: str) -> None:
    """Every worker seen now: online for the next 15 s (5 s heartbeats, 3 missed)."""
    from sqlalchemy import update

    from herder.manager.store.db import create_engine
    from herder.manager.store.tables import Worker

    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(update(Worker).values(last_seen=time.time()))
    finally:
        await engine.dispose()


def herder_cli(*args: str | Path) -> str:
    done = subprocess.run(
        [str(VENV_BIN / "herder"), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"herder {' '.join(map(str, args))}: {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class Farm:
    """A manager with keys on over a filled database, and an admin's key and token."""

    name: str
    manager: ManagerProc
    db_url: str
    key: str = ""
    token: str = ""
    fill_s: float = 0.0
    beats_s: float = 0.0
    last_load: float = 0.0
    loads: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


class LoadFailed(RuntimeError):
    """A load that showed no row in time: counted and reported, the others still measured."""


async def set_up(work: Path, name: str, db_url: str | None, workers: int, tasks: int, beats: int) -> Farm:
    """Keys, the database filled, the manager started, a token bought, the heartbeats sent."""
    import httpx

    data_dir = work / name
    url = db_url or f"sqlite:///{data_dir / 'manager.db'}"
    db_args: list[str | Path] = ["--data-dir", data_dir, *(["--db", db_url] if db_url else [])]
    herder_cli("keys", "init", "--data-dir", data_dir)
    key = herder_cli("keys", "issue", "--user", "bench", "--role", "admin", "--ttl", "1d", *db_args)
    farm = Farm(name, ManagerProc(work, name, db_url, heartbeat_interval_s=5.0), url, key=key)
    farm.fill_s = await fill(url, workers, tasks)
    harness.progress(f"ui: {name}: {workers} workers, {tasks} tasks written in {farm.fill_s:.1f} s")
    farm.manager.start()
    async with httpx.AsyncClient(base_url=farm.manager.url, timeout=60.0) as client:
        answer = await client.post("/auth/token", headers={"Authorization": f"Bearer {key}"})
        answer.raise_for_status()
        farm.token = answer.json()["token"]
        farm.beats_s = await heartbeats(client, farm.token, workers, beats)
    harness.progress(f"ui: {name}: {beats} heartbeats of each worker in {farm.beats_s:.1f} s")
    return farm


async def heartbeats(client: Any, token: str, workers: int, rounds: int) -> float:
    """``rounds`` heartbeats of every worker, by the pull path: their sparklines' points."""
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {token}"}
    queue = [(r, w) for r in range(rounds) for w in range(1, workers + 1)]
    queue.reverse()

    async def sender() -> None:
        while queue:
            _, worker_id = queue.pop()
            body = {"update_frequent": frequent(round(rng.uniform(0, 16), 2), 16, rng)}
            answer = await client.patch(f"/workers/{worker_id}", json=body, headers=headers)
            if answer.status_code != 200:
                raise RuntimeError(f"PATCH /workers/{worker_id}: {answer.status_code} {answer.text[:200]}")

    t0 = time.perf_counter()
    async with asyncio.timeout(600):
        await asyncio.gather(*(sender() for _ in range(BEAT_CONCURRENCY)))
    return time.perf_counter() - t0


# -- the loads ----------------------------------------------------------------------------


async def one_load(browser: Any, farm: Farm, view: str, sign_in: bool) -> dict[str, Any]:
    """One cold load in a fresh context; the page's own timings."""
    await mark_online(farm.db_url)
    wait = farm.last_load + LOAD_GAP_S - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)  # pacing, not a wait for a condition: see LOAD_GAP_S
    script = INIT_JS.replace("__TOKEN__", json.dumps(None if sign_in else farm.token))
    script = script.replace("__SELECTOR__", json.dumps(VIEWS[view]))
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        context.set_default_timeout(LOAD_TIMEOUT_MS)
        await context.add_init_script(script=script)
        page = await context.new_page()
        await page.goto(f"{farm.manager.url}/ui/{'#tasks' if view == 'tasks' else ''}", wait_until="commit")
        try:
            if sign_in:
                await page.fill("#key", farm.key)
                await page.evaluate(CLICK_JS)
            await page.wait_for_function("() => window.__bench && window.__bench.done", polling=50)
        except Exception as exc:
            seen = await page.evaluate(
                "() => [window.__bench?.marks, document.body.innerText.slice(0, 300),"
                " performance.getEntriesByType('resource').map((r) => [r.name, r.responseEnd])]"
            )
            raise LoadFailed(f"{farm.name} {kind_name(view, sign_in)}: no first row: {seen}") from exc
        result: dict[str, Any] = await page.evaluate(RESULT_JS)
    finally:
        await context.close()
        farm.last_load = time.monotonic()
    painted = result["paint"]
    result["first_useful"] = painted if painted is not None else result["marks"]["frame after"]
    return result


KINDS = (("fleet", False), ("tasks", False), ("fleet", True))


def kind_name(view: str, sign_in: bool) -> str:
    return f"{view}, signed in by the form" if sign_in else view


async def measure(farms: list[Farm], loads: int) -> None:
    """``loads`` of each kind on each farm, in turns; results into ``farm.loads``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            warm = await browser.new_context()  # the browser's own first-use costs, not a load's
            await (await warm.new_page()).goto(f"{farms[0].manager.url}/ui/about.json")
            await warm.close()
            for n in range(loads):
                for farm in farms:
                    for view, sign_in in KINDS:
                        name = kind_name(view, sign_in)
                        try:
                            farm.loads.setdefault(name, []).append(
                                await one_load(browser, farm, view, sign_in)
                            )
                        except LoadFailed as exc:
                            farm.failed[name] = farm.failed.get(name, 0) + 1
                            harness.progress(f"ui: a load failed: {exc}")
                harness.progress(f"ui: round {n + 1}/{loads} done")
        finally:
            await browser.close()


# -- figures ------------------------------------------------------------------------------


def breakdown(results: list[dict[str, Any]], view: str) -> dict[str, float]:
    """Medians (ms) of each step, from the navigation's start (sign-in: from the click)."""
    steps: dict[str, list[float]] = {}

    def add(name: str, value: float | None) -> None:
        if value is not None:
            steps.setdefault(name, []).append(value)

    for r in results:
        origin = r["marks"].get("click", 0.0)
        add("first contentful paint", r["fcp"])
        add("HTML", r["html"])
        dash = [x["end"] for x in r["resources"] if x["name"].startswith("/ui/dash/")]
        add("modules", max(dash) if dash else None)
        about = [x["end"] for x in r["resources"] if x["name"].startswith("/ui/about.json")]
        add("about.json", about[0] if about else None)
        for name in ("socket open", "snapshot"):
            add(name, r["marks"].get(name))
        add("snapshot KB", r["snapshotBytes"] / 1000)
        if view == "tasks":
            listed = [x for x in r["resources"] if x["name"].startswith("/tasks?limit=")]
            add("GET /tasks", listed[0]["end"] if listed else None)
            add("GET /tasks KB", listed[0]["bytes"] / 1000 if listed else None)
        add("row in DOM", r["marks"]["row in DOM"])
        add("first row painted", r["first_useful"])
        add("long tasks before it", sum(d for t, d in r["long"] if t < r["first_useful"]))
        if origin:
            add("from the click: first row painted", r["first_useful"] - origin)
    return {k: median(v) for k, v in steps.items()}


STEPS = (
    "first contentful paint",
    "HTML",
    "modules",
    "about.json",
    "socket open",
    "snapshot",
    "snapshot KB",
    "GET /tasks",
    "GET /tasks KB",
    "row in DOM",
    "first row painted",
    "long tasks before it",
    "from the click: first row painted",
)


def seconds(results: list[dict[str, Any]]) -> list[float]:
    """Each load's first useful paint in seconds: from navigation, or from the click."""
    return [(r["first_useful"] - r["marks"].get("click", 0.0)) / 1000 for r in results]


def detail_rows(farm: Farm, db: str) -> list[tuple[str, ...]]:
    """One row per kind of load: the medians of each step."""
    rows = []
    for view, sign_in in KINDS:
        steps = breakdown(farm.loads[kind_name(view, sign_in)], view)
        size = "1,000 workers" if farm.name.endswith("big") else "floor"
        label = f"{db}, {size}: {kind_name(view, sign_in)}"
        rows.append((label, *(f"{steps[s]:.0f}" if s in steps else "" for s in STEPS)))
    return rows


def figures_of(big: Farm, floor: Farm, db: str) -> list[Figure]:
    out = []
    for view, sign_in in KINDS:
        name = kind_name(view, sign_in)
        values, refs = seconds(big.loads[name]), seconds(floor.loads[name])
        painted_by = sum(r["paint"] is not None for r in big.loads[name])
        what = "the first worker row" if view == "fleet" else "the first task row"
        since = "from the Sign in click" if sign_in else "from navigation, signed in (token held)"
        out.append(
            Figure(
                bench="12",
                label=f"{db}: {what} painted, {since}, median",
                unit="s",
                higher_is_better=False,
                herder=median(values),
                supervisord=None,
                circus=None,
                reference=median(refs),
                reference_label="1 worker, 1 task",
                goal=f"≤ {GOAL_S:g} s" if not sign_in else "",
                met=median(values) <= GOAL_S if not sign_in else None,
                note=(
                    f"p90 {percentile(values, 90):.2f} s (floor p90 {percentile(refs, 90):.2f} s); "
                    f"{len(values)} cold loads ({big.failed.get(name, 0)} failed, "
                    f"floor: {floor.failed.get(name, 0)}); "
                    f"Element Timing gave {painted_by}/{len(values)} of the paints"
                ),
            )
        )
    return out


async def run_db(
    work: Path, db: str, urls: dict[str, str | None], loads: int, beats: int
) -> tuple[list[Figure], list[tuple[str, ...]]]:
    """The big farm and the floor on one kind of database (``urls``: None for SQLite)."""
    farms: list[Farm] = []
    try:
        for name, workers, tasks in (("big", WORKERS, TASKS), ("floor", 1, 1)):
            farms.append(await set_up(work, f"{db.lower()}-{name}", urls[name], workers, tasks, beats))
        await measure(farms, loads)
        return figures_of(farms[0], farms[1], db), [r for f in farms for r in detail_rows(f, db)]
    finally:
        for farm in farms:
            if farm.manager.proc is not None:
                harness.stop(farm.manager.proc, signal.SIGTERM, timeout_s=30)


@contextmanager
def committed_tree(tmp: Path, worktree: bool) -> Iterator[str]:
    """The herder measured: HEAD's ``src/`` and ``clients/js`` (the page's herder.js), exported
    and first on ``PYTHONPATH`` for every process started; yields the commit's name.

    Other sessions commit to the dashboard while a run lasts, and a manager serves its files
    from its package directory as they are at each request: a page whose ``main.js`` was
    saved between two of its modules never starts. An export measures one commit whole.
    ``worktree``: the checkout as it is instead (uncommitted changes included).
    """
    if worktree:
        yield harness.source_state()
        return
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    tree = tmp / "tree"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD", "src", "clients/js"], capture_output=True, timeout=120
    )
    if archive.returncode != 0:
        raise RuntimeError(f"git archive HEAD: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True, timeout=120)
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree / "src")
    try:
        yield f"{head} (committed tree, exported)"
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def run(quick: bool = False) -> list[Figure]:
    """SQLite only (``run_all.py``)."""
    return run_detailed(quick)[0]


def run_detailed(
    quick: bool = False, postgres: bool = False, pg_url: str = PG_URL, worktree: bool = False
) -> tuple[list[Figure], list[tuple[str, ...]]]:
    """The figures, and the breakdown's rows (medians in ms of each step).

    PostgreSQL's databases are made and dropped outside the event loop (``bench_manager``'s
    helpers run their own).
    """
    if not CHROMIUM.exists():
        raise RuntimeError(f"benchmark 12 needs {CHROMIUM}: make chromium installs Debian's package")
    loads, beats = (LOADS_QUICK, BEATS_QUICK) if quick else (LOADS, BEATS)
    figures: list[Figure] = []
    rows: list[tuple[str, ...]] = []
    with (
        tempfile.TemporaryDirectory(prefix="herder-bench-ui-") as tmp,
        committed_tree(Path(tmp), worktree) as what,
    ):
        harness.progress(f"ui: measuring {what}")
        for db in ("SQLite", *(["PostgreSQL"] if postgres else [])):
            made: list[str] = []
            urls: dict[str, str | None] = {"big": None, "floor": None}
            try:
                if db == "PostgreSQL":
                    for name in urls:
                        db_name, urls[name] = pg_create(pg_url, f"ui_{name}")
                        made.append(db_name)
                more, detail = asyncio.run(run_db(Path(tmp), db, urls, loads, beats))
            finally:
                for db_name in made:
                    pg_drop(pg_url, db_name)
            figures, rows = figures + more, rows + detail
    return figures, rows


def main() -> None:
    parser = harness.report_parser(__doc__ or "", "5 loads of each kind instead of 15: a smoke test")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL (--pg-url)")
    parser.add_argument("--pg-url", default=PG_URL, help="an existing database to create ours next to")
    parser.add_argument(
        "--worktree", action="store_true", help="measure the checkout as it is, not HEAD's committed tree"
    )
    args = parser.parse_args()
    started, source = time.monotonic(), harness.source_state()
    figures, rows = run_detailed(args.quick, args.postgres, args.pg_url, args.worktree)
    header = ("medians, ms from navigation (sign-in: the click is noted)", *STEPS)
    text = "Where the time goes:\n" + harness.rows_table(header, rows, markdown=args.markdown)
    harness.print_report("herder benchmark 12", args, started, source, figures, text, rows)


if __name__ == "__main__":
    main()
