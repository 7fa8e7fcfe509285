"""How long the agent's spawn of ``true`` takes on a quiet machine, for comparison with
what ``bench/diag/sitecustomize.py`` sees inside agents under load.

    .venv/bin/python bench/diag/spawn_idle.py
"""

from __future__ import annotations

import os
import time

from herder.agent.processes import procs

SPAWNS = 300


def main() -> None:
    env = dict(os.environ)
    took = []
    for _ in range(SPAWNS):
        started = time.perf_counter()
        child = procs.spawn(["true"], env=env, cwd="/tmp")
        took.append(time.perf_counter() - started)
        os.waitpid(child.pid, 0)  # each child reaped by its pid before the next
        for fd in (child.pidfd, child.stdout_fd, child.stderr_fd):
            os.close(fd)
    took.sort()
    print(
        f"procs.spawn of true, {SPAWNS} times: p50 {took[SPAWNS // 2] * 1000:.2f} ms, "
        f"p90 {took[SPAWNS * 9 // 10] * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
