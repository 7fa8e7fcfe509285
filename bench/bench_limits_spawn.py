"""What a process's limits and identity cost at spawn (issue 16; docs/limits.md).

How: ``procs.spawn(["/bin/true"])`` then its exit, ``COUNT`` times for each kind of
start, the kinds interleaved round by round in one process so that a change of load on
the machine hits them all alike. Printed: the median time until ``spawn()`` returns (the
agent's own cost: the event loop is blocked meanwhile) and until the child has exited
(what the start rate of issue 19 feels), per kind. Run as root for the ``user`` kinds.

    .venv/bin/python bench/bench_limits_spawn.py [COUNT]
"""

from __future__ import annotations

import asyncio
import os
import pwd
import resource
import statistics
import sys
import time
from collections.abc import Callable

from herder.agent import limits
from herder.agent.limits import ChildSetup, Identity
from herder.agent.processes import procs

COUNT = 300
ENV = {"PATH": os.defpath}
CWD = "/"


def kinds() -> dict[str, Callable[[], ChildSetup | None]]:
    """Each kind of start: a fresh setup per spawn, as the supervisor makes one."""
    found: dict[str, Callable[[], ChildSetup | None]] = {
        "no limits": lambda: None,
        "umask": lambda: ChildSetup(cwd=CWD, umask=0o027),
        "nofile (gated)": lambda: ChildSetup(cwd=CWD, rlimits=[(resource.RLIMIT_NOFILE, 64, "nofile")]),
    }
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        who = Identity(nobody.pw_uid, nobody.pw_gid, [nobody.pw_gid], "nobody", nobody.pw_dir)
        found["user (setpriv)"] = lambda: ChildSetup(cwd=CWD, identity=who)
        found["user (subprocess: fork)"] = lambda: ChildSetup(cwd=CWD, identity=who)
    return found


async def one(name: str, make: Callable[[], ChildSetup | None]) -> tuple[float, float]:
    setpriv = limits.SETPRIV
    if "fork" in name:
        limits.SETPRIV = None  # subprocess's own switch, as on a host without setpriv
    try:
        begin = time.perf_counter()
        child = procs.spawn(["/bin/true"], env=ENV, cwd=CWD, setup=make())
        spawned = time.perf_counter() - begin
    finally:
        limits.SETPRIV = setpriv
    await procs.wait_exit(child)
    ended = time.perf_counter() - begin
    os.close(child.stdout_fd)
    os.close(child.stderr_fd)
    return spawned, ended


async def main(count: int) -> None:
    measured = {name: ([], []) for name in kinds()}
    for _ in range(count):
        for name, make in kinds().items():
            spawned, ended = await one(name, make)
            measured[name][0].append(spawned)
            measured[name][1].append(ended)
    print(f"{count} spawns of /bin/true per kind, load {os.getloadavg()[0]:.2f}")
    for name, (spawned_s, ended_s) in measured.items():
        print(
            f"{name:26s} spawn() {statistics.median(spawned_s) * 1e3:6.3f} ms"
            f"   to exit {statistics.median(ended_s) * 1e3:6.3f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else COUNT))
