"""The sweep that finds escaped descendants, against real processes caught at any moment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from herder.agent import procs
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
