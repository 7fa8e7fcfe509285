"""Per-process limits and identity: what a create request may ask of the child's kernel.

The request's fields (``limits``, ``user``, ``group``, ``umask``, ``cwd``, ``logs``) are
defined here, checked twice:

* at create (``check_host``): what this host allows, so that a client learns at once
  (a 422 naming the field) that a limit is above the agent's own hard limit, that the
  user is unknown, that the agent may not switch users, or that cgroup v2 is not
  delegated to the agent;
* at each start (``child_setup``): the same lookups again (a user may have gone since a
  record was written), raising ``SetupError`` (an ``OSError``: the unit fails with its
  message, as for a missing program).

How the child gets them (see ``procs.spawn``): ``umask`` is applied by
``subprocess``'s own C code between fork and exec (no ``preexec_fn``, which is slow and
unsafe in a threaded process); ``user`` and ``group`` by util-linux's ``setpriv`` run
in front of the program (or by subprocess's C code where there is no setpriv: slower,
it forks instead of vforking). rlimits and the cgroup need the child's pid:
a child with any of them starts *gated*, as ``/bin/sh`` waiting on its stdin; the agent
sets its rlimits (``prlimit``) and moves it into its cgroup, then opens the gate (a
word on that stdin) and the shell execs the program. Nothing the program runs can
start before its limits. docs/limits.md has the choices, and what they cost.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import resource
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from herder.agent import cgroups
from herder.apierrors import FieldError

if TYPE_CHECKING:
    from herder.agent.models import CreateRequest

__all__ = [
    "ChildSetup",
    "Limits",
    "LogsMode",
    "SetupError",
    "check_host",
    "child_setup",
]

# Bounds that catch typos (a byte count given in KiB, a mask in decimal) without
# refusing anything a real process needs; the host's own hard limits bound them further.
MAX_NOFILE = 1 << 24
MAX_NPROC = 1 << 22
MIN_AS_BYTES = 16 * 1024 * 1024  # below this, no interpreter even starts
MIN_MEMORY_MAX_BYTES = 4 * 1024 * 1024
MAX_CPU_S = 10 * 365 * 24 * 3600
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$|^[0-9]{1,10}$"
UMASK_PATTERN = r"^0?[0-7]{3}$"
MAX_CWD_CHARS = 4096

# util-linux's setpriv, by absolute path only (never looked up in a PATH): it switches
# the child's user after a vfork()+exec, far cheaper than Popen's fork() for ``user``.
SETPRIV = next((p for p in ("/usr/bin/setpriv", "/bin/setpriv") if os.access(p, os.X_OK)), None)


class LogsMode(enum.StrEnum):
    """Where a process's output goes besides the attach ring (which it always reaches)."""

    FILES = "files"  # rotating <slug>.out.log / <slug>.err.log in the log dir
    DISCARD = "discard"  # nowhere: the seed's default, for chatty or secret output


class Limits(BaseModel):
    """Kernel limits for one process (and what it starts). Each is off when null."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    nofile: int | None = Field(None, ge=1, le=MAX_NOFILE, description="RLIMIT_NOFILE: open descriptors.")
    nproc: int | None = Field(
        None,
        ge=1,
        le=MAX_NPROC,
        description="RLIMIT_NPROC: processes of the run-as user (root: not enforced).",
    )
    as_bytes: int | None = Field(
        None, ge=MIN_AS_BYTES, description="RLIMIT_AS: address space of each process, in bytes."
    )
    cpu_s: int | None = Field(
        None, ge=1, le=MAX_CPU_S, description="RLIMIT_CPU: CPU seconds of each process."
    )
    memory_max_bytes: int | None = Field(
        None,
        ge=MIN_MEMORY_MAX_BYTES,
        description="cgroup v2 memory.max of the process's cgroup (with what it starts); needs delegation.",
    )
    cpu_max: float | None = Field(
        None,
        gt=0,
        le=4096,
        description="cgroup v2 cpu.max as a number of CPUs (0.5: half a core); needs delegation.",
    )

    def rlimits(self) -> list[tuple[int, int, str]]:
        """(resource, value, field name) for each rlimit asked for; soft and hard alike."""
        pairs = (
            (resource.RLIMIT_NOFILE, self.nofile, "nofile"),
            (resource.RLIMIT_NPROC, self.nproc, "nproc"),
            (resource.RLIMIT_AS, self.as_bytes, "as_bytes"),
            (resource.RLIMIT_CPU, self.cpu_s, "cpu_s"),
        )
        return [(res, value, name) for res, value, name in pairs if value is not None]

    def wants_cgroup(self) -> bool:
        return self.memory_max_bytes is not None or self.cpu_max is not None


UserName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Umask = Annotated[str, StringConstraints(pattern=UMASK_PATTERN)]


def _check_cwd(cwd: str) -> str:
    if not os.path.isabs(cwd) and ".." in Path(cwd).parts:
        raise ValueError("a relative cwd stays inside the app's directory: no '..'")
    return cwd


# What _check_cwd takes, for the OpenAPI document (ECMA-262: the lookahead that
# pydantic's own regex engine lacks): absolute, or relative without a ".." component.
CWD_PATTERN = r"^(?:/[^\x00]*|(?!(?:[^\x00]*/)?\.\.(?:/|$))[^\x00]+)$"
Cwd = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_CWD_CHARS, pattern=r"^[^\x00]*$"),
    AfterValidator(_check_cwd),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_CWD_CHARS, "pattern": CWD_PATTERN}),
]


class SetupError(OSError):
    """What a process asks of the host cannot be given (now): the unit fails with it."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the child runs as, resolved from the passwd and group databases."""

    uid: int
    gid: int
    groups: list[int]
    name: str
    home: str


@dataclass(slots=True)
class ChildSetup:
    """Everything ``procs.spawn`` applies to one child beyond argv and env."""

    cwd: str
    identity: Identity | None = None
    umask: int = -1
    rlimits: list[tuple[int, int, str]] = field(default_factory=list)
    cgroup: cgroups.UnitCgroup | None = None
    # Leased work (the manager's) is gated even without limits: it runs only once it is
    # in the ledger its keeper goes by, or a hung agent's work could outlive its lease
    # unseen while the manager hands it to another worker (two attempts at once).
    hold: bool = False

    @property
    def gated(self) -> bool:
        """The child waits for the agent (rlimits, cgroup, a ledger) before it execs the program."""
        return bool(self.rlimits) or self.cgroup is not None or self.hold

    def argv(self, argv: list[str], gate: Sequence[str]) -> list[str]:
        """What to execute for ``argv``: behind the gate, then ``setpriv`` (a switch of user)."""
        # The gate comes first: its shell still runs as the agent's user, whose rlimits
        # the agent may set (another user's need CAP_SYS_RESOURCE); they survive setpriv.
        if self.identity is not None and SETPRIV is not None:
            argv = [*self._setpriv(self.identity), *argv]
        if self.gated:
            argv = [*gate, *argv]
        return argv

    @staticmethod
    def _setpriv(identity: Identity) -> list[str]:
        assert SETPRIV is not None
        groups = ",".join(str(g) for g in identity.groups) if identity.groups else None
        return [
            SETPRIV,
            f"--reuid={identity.uid}",
            f"--regid={identity.gid}",
            f"--groups={groups}" if groups else "--clear-groups",
            "--",
        ]

    def popen_kwargs(self) -> dict[str, Any]:
        """``subprocess.Popen`` arguments, applied in its C code between fork and exec.

        A switch of user is left to ``setpriv`` when the host has it: Popen switches
        with fork() instead of vfork(), which copies the agent's page tables (a spawn
        took 3.2 ms instead of 0.7 here, and more as the agent grows).
        """
        kwargs: dict[str, Any] = {}
        if self.identity is not None and SETPRIV is None:
            kwargs.update(user=self.identity.uid, group=self.identity.gid, extra_groups=self.identity.groups)
        if self.umask >= 0:
            kwargs["umask"] = self.umask
        return kwargs

    def env(self, env: dict[str, str], requested: dict[str, str]) -> dict[str, str]:
        """``env`` with HOME, USER and LOGNAME of the run-as user, unless the request set them."""
        if self.identity is not None:
            for name, value in (("HOME", self.identity.home), ("USER", self.identity.name)):
                if name not in requested:
                    env[name] = value
            if "LOGNAME" not in requested:
                env["LOGNAME"] = self.identity.name
        return env

    def apply(self, pid: int) -> None:
        """Set the gated child's rlimits and cgroup (before it execs the program).

        Raises:
            SetupError: a limit could not be set (the caller kills the child).
        """
        for res, value, name in self.rlimits:
            try:
                resource.prlimit(pid, res, (value, value))
            except (OSError, ValueError) as exc:
                raise SetupError(f"cannot set limits.{name}={value}: {exc}") from exc
        if self.cgroup is not None:
            self.cgroup.add(pid)

    def release(self) -> None:
        """The child ended: its cgroup goes if it is empty (else at the next start)."""
        if self.cgroup is not None:
            self.cgroup.remove()


def _resolve_user(user: str | None, group: str | None) -> Identity | None:
    """The identity for ``user``/``group``, or None for the agent's own.

    Raises:
        FieldError: unknown user or group, or a switch the agent may not make.
    """
    if user is None and group is None:
        return None
    try:
        pw = pwd.getpwuid(int(user)) if user is not None and user.isdigit() else None
        if pw is None:
            pw = pwd.getpwnam(user) if user is not None else pwd.getpwuid(os.geteuid())
    except (KeyError, OverflowError):
        raise FieldError("user", f"no such user {user!r} on this host") from None
    gid = pw.pw_gid
    if group is not None:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            grp.getgrgid(gid)
        except (KeyError, OverflowError):
            raise FieldError("group", f"no such group {group!r} on this host") from None
    if os.geteuid() != 0:
        # Without root, a process may take neither another uid nor another gid.
        if pw.pw_uid != os.geteuid():
            raise FieldError("user", f"the agent does not run as root: it cannot run a process as {user!r}")
        if gid != os.getegid():
            raise FieldError("group", f"the agent does not run as root: it cannot use group {group!r}")
        return None
    if pw.pw_uid == os.geteuid() and gid == os.getegid():
        return None  # the agent's own: nothing to switch
    groups = os.getgrouplist(pw.pw_name, gid)
    return Identity(pw.pw_uid, gid, groups, pw.pw_name, pw.pw_dir)


def _may_enter(path: str, identity: Identity | None, below: str | None = None) -> bool:
    """Whether ``identity`` (None: the agent) may search every directory down to ``path``.

    ``below``: only the directories under it count (the agent enters it for the child,
    before the switch of user, as it does the app's directory).
    """
    if identity is None or identity.uid == 0:
        return os.path.isdir(path) and os.access(path, os.X_OK)
    if not os.path.isdir(path):
        return False
    current = Path(path)
    chain = [current, *current.parents]
    if below is not None:
        chain = [p for p in chain if p.is_relative_to(below) and str(p) != below]
    for part in chain:
        try:
            st = os.stat(part)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        if st.st_uid == identity.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == identity.gid or st.st_gid in identity.groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _check_rlimits(limits: Limits) -> None:
    """Refuse a limit above the agent's own hard limit.

    A root agent could raise its child's hard limit past its own, but a limit the agent
    itself lives under is the operator's ceiling for what it runs: asking for more is
    refused rather than granted silently (raise the agent's own limit to allow it).
    """
    for res, value, name in limits.rlimits():
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and value > hard:
            raise FieldError(f"limits.{name}", f"{value} is above the agent's own hard limit ({hard})")


def check_host(request: CreateRequest) -> None:
    """What this host allows of ``request``'s limits and identity (the create's 422s).

    Raises:
        FieldError: naming the field (``limits.nofile``, ``user``, ``cwd``...).
    """
    identity = _resolve_user(request.user, request.group)
    if identity is not None and SETPRIV is None and request.limits is not None:
        # subprocess switches user before exec: the gated child is no longer the agent's
        # to limit (unless the agent holds CAP_SYS_RESOURCE, which not every root does).
        raise FieldError("user", "limits with a user need util-linux's setpriv, which this host lacks")
    if request.limits is not None:
        _check_rlimits(request.limits)
        if request.limits.wants_cgroup():
            problem = cgroups.HOST.unavailable()
            if problem is not None:
                name = "memory_max_bytes" if request.limits.memory_max_bytes is not None else "cpu_max"
                raise FieldError(f"limits.{name}", problem)
    if request.cwd is not None and os.path.isabs(request.cwd) and not _may_enter(request.cwd, identity):
        who = f"user {identity.name!r}" if identity is not None else "the agent"
        raise FieldError("cwd", f"{request.cwd!r} is not a directory {who} may enter")


def _resolve_cwd(requested: str | None, app_dir: Path, identity: Identity | None) -> str:
    """The directory the child starts in: ``app_dir``, or ``requested`` checked.

    A relative ``requested`` must stay inside ``app_dir`` once symbolic links are
    followed (an app's archive may hold a link to ``/``).
    """
    if requested is None:
        return str(app_dir)  # entered before the switch of user, as always
    if os.path.isabs(requested):
        path = requested
    else:
        base = os.path.realpath(app_dir)
        path = os.path.realpath(os.path.join(base, requested))
        if os.path.commonpath([base, path]) != base:
            raise SetupError(f"cwd {requested!r} leads outside the app's directory")
    below = None if os.path.isabs(requested) else os.path.realpath(app_dir)
    if not _may_enter(path, identity, below):
        who = f"user {identity.name!r}" if identity is not None else "the agent"
        raise SetupError(f"cwd {requested!r} is not a directory {who} may enter")
    return path


def child_setup(spec: CreateRequest, app_dir: Path, unit: str) -> ChildSetup:
    """Resolve ``spec``'s fields for one start of its process, whose directory is ``app_dir``.

    ``unit`` names the process's cgroup (if it has cgroup limits).

    Raises:
        SetupError: the user, group, cwd or cgroup cannot be had now.
    """
    if spec.limits is None and spec.user is spec.group is spec.umask is spec.cwd is None:
        return ChildSetup(cwd=str(app_dir))  # the common case, on the start's hot path
    try:
        identity = _resolve_user(spec.user, spec.group)
    except FieldError as exc:
        raise SetupError(str(exc)) from None
    setup = ChildSetup(cwd=_resolve_cwd(spec.cwd, app_dir, identity), identity=identity)
    if spec.umask is not None:
        setup.umask = int(spec.umask, 8)
    if spec.limits is not None:
        setup.rlimits = spec.limits.rlimits()
        if spec.limits.wants_cgroup():
            setup.cgroup = cgroups.HOST.unit(unit, spec.limits.memory_max_bytes, spec.limits.cpu_max)
    if identity is not None and spec.command is not None:
        _hand_over(app_dir, unit, identity)
    return setup


def _hand_over(app_dir: Path, unit: str, identity: Identity) -> None:
    """Give the run-as user a command's own directory (``<data>/run/<unit>``), itself only.

    The agent made it for this process alone; handed over, the process can write there
    as it could as the agent's user. Only that one directory, never a tree: a recursive
    chown as root walks paths the user could swap for links meanwhile. An app's
    unpacked tree stays the agent's (readable, not writable, by the user): the agent
    unpacks there again, and a directory the user owned would let it plant a link where
    root then writes. Nothing else is widened (docs/limits.md says what that means).
    """
    if app_dir.name != unit or os.geteuid() != 0:
        return
    try:
        if os.stat(app_dir, follow_symlinks=False).st_uid != identity.uid:
            os.chown(app_dir, identity.uid, identity.gid, follow_symlinks=False)
    except OSError:
        return
