"""A network of namespaces on this host, built and torn down by one test run (#17).

Why namespaces: the chaos suite must cut links between real processes (an agent from its
manager) without touching the host's own network, and this machine has ``ip netns`` and
veth pairs but neither iptables nor nft. So each host of the fleet is a network namespace
with one veth into a bridge held by a "switch" namespace, all on one /24 that exists only
inside these namespaces (the root namespace never gets an address on it, so parallel runs
can all use it: only the names differ). A partition is a ``blackhole`` route on both
ends; the bridge itself is never touched.

Names are ``hrdc<pid>-<host>``: a run sweeps the namespaces of runs whose pid is gone
(a SIGKILLed pytest cleans nothing), and its own at the end, failures included.

Sockets in a namespace: Python 3.11 has no ``os.setns``, so ``in_namespace`` runs a
function on a short-lived thread that entered the namespace with libc's ``setns`` (a
thread may change its own network namespace); a socket created there stays in that
namespace, whatever thread uses it afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tests.helpers import pid_alive

T = TypeVar("T")

PREFIX = "hrdc"
NETNS_DIR = Path("/var/run/netns")
SUBNET = "10.213.77"  # a /24 that lives only inside the run's namespaces
CLONE_NEWNET = 0x40000000
IP_TIMEOUT_S = 10.0

_libc = ctypes.CDLL(None, use_errno=True)  # the C library this Python runs on (setns)


def available() -> str | None:
    """Why the suite cannot build its network here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    probe = f"{PREFIX}{os.getpid()}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=IP_TIMEOUT_S)
    return None


def ip(*args: str, ns: str | None = None) -> str:
    """Run ``ip`` (in namespace ``ns``); its stdout. Raises with its stderr on failure."""
    command = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def in_namespace(ns: str | None, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
    """``fn()`` run in network namespace ``ns`` (None: here), on a thread that entered it."""
    if ns is None:
        return fn()
    results: list[T] = []
    errors: list[BaseException] = []

    def enter_and_run() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {ns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            results.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=enter_and_run, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if errors:
        raise errors[0]
    if not results:
        raise TimeoutError(f"nothing done in namespace {ns} within {timeout_s} s")
    return results[0]


def namespace_pids(ns: str) -> list[int]:
    """The processes in namespace ``ns`` (``ip netns pids``)."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    return [int(p) for p in done.stdout.split()]


def _delete(ns: str) -> None:
    """Kill what still runs in ``ns`` (by pid: the run's own processes) and delete it."""
    for pid in namespace_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=IP_TIMEOUT_S)


def sweep_stale() -> list[str]:
    """Delete the namespaces of runs whose pytest is gone; their names."""
    swept = []
    if not NETNS_DIR.is_dir():
        return swept
    for entry in NETNS_DIR.iterdir():
        match = re.fullmatch(rf"{PREFIX}(\d+)-.+", entry.name)
        if match and not pid_alive(int(match.group(1))):
            _delete(entry.name)
            swept.append(entry.name)
    return swept


class Network:
    """A switch namespace with a bridge, and hosts plugged into it, one address each.

    Use it as a context manager: every namespace it made is deleted on exit (with what
    still runs in it), whatever happened.
    """

    def __init__(self) -> None:
        self.run = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.run}-sw"
        self.hosts: dict[str, str] = {}  # host name -> its address
        self._made: list[str] = []
        self._ports = 0

    def ns(self, host: str) -> str:
        """The namespace of ``host``."""
        return f"{self.run}-{host}"

    def __enter__(self) -> Network:
        sweep_stale()
        for name in list(self._own_leftovers()):  # a previous test of this very pytest
            _delete(name)
        self._add_namespace(self.switch)
        ip("link", "add", "br0", "type", "bridge", ns=self.switch)
        ip("link", "set", "br0", "up", ns=self.switch)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in reversed(self._made):
            _delete(name)
        self._made.clear()

    def _own_leftovers(self) -> list[str]:
        if not NETNS_DIR.is_dir():
            return []
        return [e.name for e in NETNS_DIR.iterdir() if e.name.startswith(f"{self.run}-")]

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)
        ip("link", "set", "lo", "up", ns=name)

    def add_host(self, host: str) -> str:
        """A namespace for ``host`` with a veth into the bridge; its address."""
        self._ports += 1
        number = self._ports
        if number > 200:
            raise ValueError("a /24 holds 200 hosts here")
        address = f"{SUBNET}.{10 + number}"
        ns = self.ns(host)
        self._add_namespace(ns)
        port = f"p{number}"
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, ns=self.switch)
        ip("link", "set", port, "master", "br0", ns=self.switch)
        ip("link", "set", port, "up", ns=self.switch)
        ip("addr", "add", f"{address}/24", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        self.hosts[host] = address
        return address

    def cut(self, a: str, b: str) -> None:
        """Partition hosts ``a`` and ``b``: each drops what it sends to the other."""
        ip("route", "add", "blackhole", f"{self.hosts[b]}/32", ns=self.ns(a))
        ip("route", "add", "blackhole", f"{self.hosts[a]}/32", ns=self.ns(b))

    def heal(self, a: str, b: str) -> None:
        """Undo ``cut(a, b)``."""
        ip("route", "del", "blackhole", f"{self.hosts[b]}/32", ns=self.ns(a))
        ip("route", "del", "blackhole", f"{self.hosts[a]}/32", ns=self.ns(b))

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run in ``host``'s namespace (``ip netns exec`` execs: one pid)."""
        return ["ip", "netns", "exec", self.ns(host), *argv]


__all__ = ["Network", "available", "in_namespace", "ip", "namespace_pids", "sweep_stale"]
