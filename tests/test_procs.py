"""The sweep that finds escaped descendants, against real processes caught at any moment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from herder.agent.processes import descendants, procs
from tests.helpers import pid_alive, poll, wait_dead

ESCAPER = "setsid sleep 100 & echo $!; exit 0"


def marked_env(tag: str) -> dict[str, str]:
    return {**os.environ, procs.UNIT_MARKER: tag}


async def spawn_escaper(tag: str, tmp_path: Path) -> tuple[procs.Child, int]:
    """A main process that leaves a sleeper in a session of its own and exits at once."""
    child = procs.spawn(["/bin/sh", "-c", ESCAPER], env=marked_env(tag), cwd=str(tmp_path))
    await procs.wait_exit(child)
    return child, int(procs.drain(child.stdout_fd))


def close(child: procs.Child) -> None:
    os.close(child.stdout_fd)
    os.close(child.stderr_fd)


async def test_every_escaped_sleeper_of_a_short_main_process_is_killed(tmp_path: Path) -> None:
    """The sweep runs the moment the main process is gone, while its leftover is still
    being exec()ed from sh into setsid into sleep: the environment it shows then is empty
    for an instant (CI once lost this race). Repeated, so the instant is met often."""
    survivors: list[int] = []
    for i in range(60):
        tag = f"escaper-{os.getpid()}-{i}"
        child, sleeper = await spawn_escaper(tag, tmp_path)
        await procs.sweep_async(procs.UNIT_MARKER, tag, since=child)
        close(child)
        try:
            await wait_dead([sleeper], timeout_s=2)  # SIGKILL takes effect when it runs
        except AssertionError:
            survivors.append(sleeper)
            procs.sweep(procs.UNIT_MARKER, tag)  # leave nothing behind, then fail
    assert survivors == []


async def test_a_process_with_no_environment_is_looked_at_a_bounded_number_of_times(tmp_path: Path) -> None:
    """``env -i`` gives a process no environment for good: the sweep must not wait on it
    forever, nor kill it (it carries no marker)."""
    stranger = subprocess.Popen(["env", "-i", "sleep", "100"], cwd=tmp_path)
    tag = f"nobody-{os.getpid()}"  # no process carries it: the sweep looks at every pid
    try:
        marker, window = f"{procs.UNIT_MARKER}={tag}".encode(), (stranger.pid, stranger.pid)
        await poll(lambda: procs._scan_marked(marker, window).blank == [stranger.pid])
        sweeper = procs._Sweep(procs.UNIT_MARKER, tag, since=None)
        pauses = 0
        while sweeper.step() is not None:
            pauses += 1
            assert pauses <= procs.EXEC_SETTLE_WAITS
        assert sweeper.killed == 0
        assert pid_alive(stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


async def test_zombies_are_not_taken_for_processes_inside_exec(tmp_path: Path) -> None:
    zombie = subprocess.Popen(["true"], cwd=tmp_path)
    try:
        await poll(lambda: not pid_alive(zombie.pid))  # exited, not yet reaped
        assert procs._never_has_environment(zombie.pid)
        assert not procs._never_has_environment(os.getpid())
    finally:
        zombie.wait()
    assert procs._never_has_environment(zombie.pid)  # reaped: gone


async def test_a_sweep_without_a_window_still_finds_a_leftover(tmp_path: Path) -> None:
    tag = f"late-{os.getpid()}"
    child, sleeper = await spawn_escaper(tag, tmp_path)
    close(child)
    marker = f"{procs.UNIT_MARKER}={tag}".encode()
    await poll(lambda: procs._scan_marked(marker).marked == [sleeper])
    assert procs.sweep(procs.UNIT_MARKER, tag) >= 1
    await wait_dead([sleeper], timeout_s=5)


# -- the process tree (descendants) --------------------------------------------------------

HIDER = "env -i setsid sh -c 'trap \"\" TERM; echo $$; exec sleep 100' & wait"


def tree_env(unit: str) -> dict[str, str]:
    return {**os.environ, procs.AGENT_MARKER: "tree-test", procs.UNIT_MARKER: f"tree-test:{unit}"}


async def test_a_recorded_hider_is_killed_by_its_units_sweep_after_its_parent_died(tmp_path: Path) -> None:
    """Out of group, session and environment: the walk that recorded it finds it."""
    out = tmp_path / "hider"
    command = HIDER.replace("echo $$", f"echo $$ > {out}")
    child = procs.spawn(["/bin/sh", "-c", command], env=tree_env("a"), cwd=str(tmp_path))
    try:
        await poll(lambda: out.exists() and out.read_text().strip() != "")
        hider = int(out.read_text())
        procs.record("tree-test:a")  # what the supervisor does before it stops a unit
        assert (hider, descendants.start_time(hider)) in descendants.TRACKER.known
        child.popen.kill()
        await procs.wait_exit(child)  # its parent is gone: the hider went to init
        assert pid_alive(hider)
        assert procs.sweep(procs.UNIT_MARKER, "tree-test:a") == 1  # the hider (exec sleep)
        await wait_dead([hider])
    finally:
        close(child)


async def test_kill_trees_spares_a_reused_pid_and_takes_what_a_process_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 100 & wait"], start_new_session=True)
    try:
        await poll(lambda: descendants.children(proc.pid) != [])
        [sleeper] = descendants.children(proc.pid)
        start = descendants.start_time(proc.pid)
        assert start is not None
        assert descendants.kill_trees([(proc.pid, start + 1)]) == 0  # another process's start: spared
        assert pid_alive(proc.pid)
        ledger = tmp_path / "ledger"
        descendants.write_ledger(ledger, [f"{proc.pid} {start} -"])
        assert descendants.read_ledger(ledger) == [((proc.pid, start), False)]
        assert descendants.kill_ledger(ledger) == 2
        await wait_dead([sleeper])
        assert proc.wait(timeout=5) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_leased_work_is_in_the_ledger_at_once_and_the_rewrite_keeps_it(tmp_path: Path) -> None:
    """The watchdog goes by the ledger alone: a leased root is appended as it is registered
    (no batched rewrite needed), and the next rewrite, which compacts, still names it."""
    tracker = descendants.Tracker()
    ledger = tmp_path / "ledger"
    proc = subprocess.Popen(["sleep", "100"])
    try:
        tracker.set_ledger("agent-x", ledger)
        tracker.flush()
        assert descendants.read_ledger(ledger) == []
        env = {
            descendants.UNIT_MARKER: "agent-x:work",
            descendants.AGENT_MARKER: "agent-x",
            descendants.LEASED_MARKER: "agent-x",
        }
        tracker.add_root(proc.pid, env)
        start = descendants.start_time(proc.pid)
        assert start is not None
        assert descendants.read_ledger(ledger) == [((proc.pid, start), True)]
        tracker.flush()
        assert descendants.read_ledger(ledger) == [((proc.pid, start), True)]
    finally:
        proc.kill()
        proc.wait(timeout=5)


def test_a_spawned_root_is_appended_to_the_ledger_and_a_release_compacts_it(tmp_path: Path) -> None:
    """A burst of spawns appends their lines (the file is not replaced); once a unit ends,
    the rewrite leaves its line out."""
    tracker = descendants.Tracker()
    ledger = tmp_path / "ledger"
    procs_ = [subprocess.Popen(["sleep", "100"]) for _ in range(2)]
    try:
        tracker.set_ledger("agent-x", ledger)
        tracker.flush()
        assert descendants.read_ledger(ledger) == []
        inode = ledger.stat().st_ino
        idents = []
        for n, proc in enumerate(procs_):
            env = {descendants.UNIT_MARKER: f"agent-x:u{n}", descendants.AGENT_MARKER: "agent-x"}
            tracker.add_root(proc.pid, env)
            start = descendants.start_time(proc.pid)
            assert start is not None
            idents.append(((proc.pid, start), False))
        assert descendants.read_ledger(ledger) == []  # written at the flush, as before
        tracker.flush()
        assert descendants.read_ledger(ledger) == idents
        assert ledger.stat().st_ino == inode  # appended, not replaced
        assert tracker.release("agent-x:u0") == 1
        tracker.flush()
        assert descendants.read_ledger(ledger) == idents[1:]
    finally:
        for proc in procs_:
            proc.kill()
            proc.wait(timeout=5)
