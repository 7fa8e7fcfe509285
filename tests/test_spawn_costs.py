"""What a start pays on the agent's loop, kept to one of each (issue 19, benchmark 2).

A spawn makes its output pipes itself and reads the child's ``/proc`` stat file once, for
the descendants tracker and the unit's first figures. Each keeps what it replaced: the
same directories, streams and figures, no descriptor left behind.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from herder.agent.apps.fetch import Fetcher
from herder.agent.apps.launch import Apps
from herder.agent.config import FetchConfig, UnpackConfig
from herder.agent.processes import descendants, procs
from herder.agent.processes.usage import Sampler


def make_apps(tmp_path: Path) -> Apps:
    return Apps(Fetcher(tmp_path / "cache", FetchConfig()), UnpackConfig(), tmp_path / "data" / "run")


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


async def test_a_spawn_has_its_streams_and_leaves_no_descriptor(tmp_path: Path) -> None:
    before = open_fds()
    child = procs.spawn(
        ["/bin/sh", "-c", "read x; echo out:$?; echo err >&2; ls -l /proc/$$/fd/0"],
        env={"PATH": os.defpath},
        cwd=str(tmp_path),
    )
    try:
        assert not os.get_blocking(child.stdout_fd)
        assert not os.get_blocking(child.stderr_fd)
        assert stat.S_ISFIFO(os.fstat(child.stdout_fd).st_mode)
        assert await procs.wait_exit(child) == 0
        out = procs.drain(child.stdout_fd).decode()
        assert out.startswith("out:1\n")  # stdin is /dev/null: read finds its end at once
        assert out.rstrip().endswith("/dev/null")
        assert procs.drain(child.stderr_fd) == b"err\n"
    finally:
        os.close(child.stdout_fd)
        os.close(child.stderr_fd)
    # /dev/null stays open for the next child, once for all of them.
    assert open_fds() - before <= {procs._devnull()}


def test_a_spawn_that_cannot_exec_leaves_no_descriptor(tmp_path: Path) -> None:
    procs._devnull()
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        procs.spawn([str(tmp_path / "missing")], env={}, cwd=str(tmp_path))
    assert open_fds() == before


async def test_one_stat_read_gives_the_tracker_its_start_and_the_unit_its_figures(tmp_path: Path) -> None:
    child = procs.spawn(["sleep", "30"], env={"PATH": os.defpath}, cwd=str(tmp_path))
    try:
        assert child.first_usage is not None
        cpu_s, rss = child.first_usage
        assert cpu_s >= 0
        assert rss >= 0  # a child read inside its exec() may have no pages yet
        root = descendants.TRACKER.roots[child.pid]
        assert root.ident == (child.pid, descendants.start_time(child.pid))
        sampler = Sampler()
        sampler.seed(child.pid, 100.0, cpu_s, rss)
        # Within MAX_AGE_S the seeded figures are the document's, as a sample's would be.
        assert sampler.sample(child.pid, 100.0, 100.5).rss_bytes == rss
        assert sampler.sample(child.pid, 100.0, 100.5).cpu_percent == 0.0
        assert sampler.sample(child.pid, 100.0, 101.5).rss_bytes is not None  # read again
    finally:
        child.popen.kill()
        await procs.wait_exit(child)
        os.close(child.stdout_fd)
        os.close(child.stderr_fd)
