"""Memory and CPU limits through cgroup v2, where the agent's cgroup is delegated to it.

Layout, under the agent's own cgroup ``C`` (``0::`` in ``/proc/self/cgroup``, under the
cgroup2 mount found in ``/proc/self/mountinfo``):

* ``C/cgroup.subtree_control`` gets ``+memory +cpu`` so that children can be limited;
  cgroup v2 allows that only in a cgroup without processes of its own (the root
  excepted), so if the agent is alone in ``C`` it first moves itself into the leaf
  ``C/herder-agent`` (as systemd asks of a service with ``Delegate=yes``);
* each process with a limit runs in ``C/herder-<slug>``, whose ``memory.max`` and
  ``cpu.max`` hold its limits; made at its start, removed when it ended empty.

Delegation is probed once, at the first request that needs it; ``unavailable()`` says in
one sentence why it cannot work (no cgroup2, a controller bound to cgroup v1, a
read-only tree, other processes in ``C``), and that sentence is the create's 422.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HOST", "CgroupHost", "UnitCgroup"]

CONTROLLERS = ("memory", "cpu")
# cpu.max's period: the kernel's default, 100 ms. A quota is a fraction of it per CPU.
CPU_PERIOD_US = 100_000
AGENT_LEAF = "herder-agent"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass(slots=True)
class UnitCgroup:
    """One process's cgroup: made with its limits, joined by its pid, removed after."""

    path: Path

    def add(self, pid: int) -> None:
        """Move ``pid`` (gated, not yet running its program) into this cgroup.

        Raises:
            OSError: the kernel refused (the caller kills the child).
        """
        (self.path / "cgroup.procs").write_text(f"{pid}\n")

    def remove(self) -> None:
        """Remove the cgroup if it is empty; a leftover process keeps it until the next start."""
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


class CgroupHost:
    """The agent's place in cgroup v2: ``mount`` (the cgroup2 mount) + ``path`` (its cgroup)."""

    def __init__(self, mount: Path | None = None, path: str | None = None, *, own: bool = False) -> None:
        """``own``: find mount and path from /proc/self at first use (not at import: the
        agent's start reads nothing it may never need)."""
        self.mount = mount
        self.path = path
        self._own = own
        self._problem: str | None = None
        self._probed = False

    @property
    def base(self) -> Path | None:
        """The agent's cgroup directory (before it moved itself into its leaf)."""
        if self._own:
            self.mount, self.path, self._own = _cgroup2_mount(), _own_cgroup(), False
        if self.mount is None or self.path is None:
            return None
        return self.mount / self.path.lstrip("/")

    def unavailable(self) -> str | None:
        """Why memory and CPU limits cannot be had here, or None when they can."""
        if not self._probed:
            self._problem = self._probe()
            self._probed = True
        return self._problem

    def _probe(self) -> str | None:
        base = self.base
        if base is None:
            return "cgroup v2 is not mounted, or the agent is in none (no '0::' line in /proc/self/cgroup)"
        try:
            offered = (base / "cgroup.controllers").read_text().split()
        except OSError as exc:
            return f"cannot read {base}/cgroup.controllers: {exc.strerror or exc}"
        missing = [c for c in CONTROLLERS if c not in offered]
        if missing:
            return (
                f"the agent's cgroup v2 ({base}) is not offered the {' and '.join(missing)} controller "
                f"(offered: {' '.join(offered) or 'none'}); on a hybrid host they belong to cgroup v1"
            )
        return self._enable(base)

    def _enable(self, base: Path) -> str | None:
        """Turn the controllers on for the agent's children (moving the agent into a leaf if needed)."""
        control = base / "cgroup.subtree_control"
        try:
            if all(c in control.read_text().split() for c in CONTROLLERS):
                return None
        except OSError as exc:
            return f"cannot read {control}: {exc.strerror or exc}"
        wanted = " ".join(f"+{c}" for c in CONTROLLERS)
        try:
            control.write_text(wanted)
            return None
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                return (
                    f"the agent's cgroup ({base}) is not delegated to it: writing {control}: {exc.strerror}"
                )
        # EBUSY: processes live in the agent's cgroup; if they are only the agent, it moves.
        try:
            others = [p for p in (base / "cgroup.procs").read_text().split() if int(p) != os.getpid()]
        except OSError as exc:
            return f"cannot read {base}/cgroup.procs: {exc.strerror or exc}"
        if others:
            return (
                f"the agent's cgroup ({base}) holds other processes ({len(others)}): cgroup v2 lets only an "
                "empty cgroup limit its children; start the agent in a cgroup of its own"
            )
        try:
            leaf = base / AGENT_LEAF
            leaf.mkdir(exist_ok=True)
            (leaf / "cgroup.procs").write_text(f"{os.getpid()}\n")
            control.write_text(wanted)
        except OSError as exc:
            return f"cannot prepare the agent's cgroup ({base}) for limits: {exc.strerror or exc}"
        return None

    def unit(self, name: str, memory_max_bytes: int | None, cpu_max: float | None) -> UnitCgroup:
        """Make (or reuse) the cgroup of process ``name`` with its limits.

        Raises:
            OSError: delegation is unavailable (the message says why) or the kernel refused.
        """
        problem = self.unavailable()
        if problem is not None:
            raise OSError(errno.EPERM, problem)
        assert self.base is not None
        path = self.base / f"herder-{_UNSAFE.sub('_', name)}"
        path.mkdir(exist_ok=True)
        (path / "memory.max").write_text(f"{memory_max_bytes}\n" if memory_max_bytes is not None else "max\n")
        quota = (
            f"{max(1000, round(cpu_max * CPU_PERIOD_US))} {CPU_PERIOD_US}" if cpu_max is not None else "max"
        )
        (path / "cpu.max").write_text(f"{quota}\n")
        return UnitCgroup(path)


def _own_cgroup() -> str | None:
    """The agent's cgroup v2 path, from the ``0::`` line of /proc/self/cgroup."""
    try:
        with open("/proc/self/cgroup") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _cgroup2_mount() -> Path | None:
    """Where cgroup2 is mounted (``/sys/fs/cgroup``, or ``.../unified`` on a hybrid host)."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                dash = fields.index("-") if "-" in fields else -1
                if dash > 0 and fields[dash + 1] == "cgroup2":
                    return Path(fields[4])
    except OSError:
        pass
    return None


# The agent's one view of its cgroup, probed at the first request that needs it.
HOST = CgroupHost(own=True)
