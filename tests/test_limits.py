"""Per-process limits and identity (issue 16), against a real agent and real children.

Each child reports what the kernel says of it (``/proc/self/limits``, ``os.getuid()``,
``os.umask``, ``os.getcwd()``) on its stdout; the test waits for that line in the ring.
A limit is also *hit*: a child with ``nofile: 16`` fails to open 32 files.
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from herder.agent import Agent, cgroups, limits
from herder.agent.limits import ChildSetup
from herder.agent.processes import procs
from tests.helpers import wait_http, wait_unit

APP = "lim"
NEEDS_ROOT = "switching users needs a root agent (CI runs the tests as root)"


async def run_reporting(
    agent: Agent, client: httpx.AsyncClient, node: str, script: str, **fields: object
) -> str:
    """Create a process running ``script`` (restart never) and return its first stdout line."""
    body = {"app": APP, "node": node, "command": [sys.executable, "-c", script], "restart": "never", **fields}
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    unit = agent.supervisor.units[f"{APP}.{node}"]
    await wait_unit(unit, lambda u: any(s == "stdout" for s, _ in u.output.ring) or u.state == "failed")
    lines = [line.decode() for stream, line in unit.output.ring if stream == "stdout"]
    assert lines, [line for _, line in unit.output.ring]
    return lines[0]


LIMITS_SCRIPT = (
    "import json\n"
    "rows = {}\n"
    "for line in open('/proc/self/limits').read().splitlines()[1:]:\n"
    "    name, soft, hard = line[:26].strip(), *line[26:].split()[:2]\n"
    "    rows[name] = [soft, hard]\n"
    "print(json.dumps(rows), flush=True)\n"
)


async def test_rlimits_are_the_childs_own_from_its_first_instruction(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    limits = {"nofile": 64, "nproc": 500, "as_bytes": 1 << 32, "cpu_s": 30}
    seen = json.loads(await run_reporting(agent, client, "report.0", LIMITS_SCRIPT, limits=limits))
    assert seen["Max open files"] == ["64", "64"]
    assert seen["Max processes"] == ["500", "500"]
    assert seen["Max address space"] == [str(1 << 32), str(1 << 32)]
    assert seen["Max cpu time"] == ["30", "30"]
    # The agent keeps its own.
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] != 64


async def test_a_nofile_limit_is_hit(agent: Agent, client: httpx.AsyncClient) -> None:
    script = (
        "import errno\n"
        "held = []\n"
        "try:\n"
        "    for _ in range(32):\n"
        "        held.append(open('/dev/null'))\n"
        "    print('opened all 32', flush=True)\n"
        "except OSError as exc:\n"
        "    print('refused after', len(held), errno.errorcode[exc.errno], flush=True)\n"
    )
    line = await run_reporting(agent, client, "files.0", script, limits={"nofile": 16})
    assert line.startswith("refused after "), line
    assert line.endswith(" EMFILE"), line
    assert int(line.split()[2]) < 16  # stdin, stdout, stderr and the interpreter's own count too


async def test_a_cpu_limit_is_hit(agent: Agent, client: httpx.AsyncClient) -> None:
    """One CPU second, soft and hard: the kernel's hard limit is a SIGKILL."""
    spin = ["/bin/sh", "-c", "while :; do :; done"]
    body = {"app": APP, "node": "spin.0", "command": spin, "restart": "never", "limits": {"cpu_s": 1}}
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    # Bounded by the CPU second (plus a loaded machine's wait for it), not by a sleep.
    doc = await wait_http(client, created.json()["details"], lambda d: d["state"] == "exited", timeout_s=60)
    assert doc["exit_code"] == -signal.SIGKILL


async def test_without_limits_nothing_changes(agent: Agent, client: httpx.AsyncClient) -> None:
    seen = json.loads(await run_reporting(agent, client, "plain.0", LIMITS_SCRIPT))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert seen["Max open files"] == [str(soft), str(hard)]


async def test_umask_and_an_absolute_cwd_are_the_childs(
    agent: Agent, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    where = tmp_path / "elsewhere"
    where.mkdir()
    script = "import os\nmask = os.umask(0)\nprint(oct(mask), os.getcwd(), flush=True)\n"
    line = await run_reporting(agent, client, "mask.0", script, umask="027", cwd=str(where))
    assert line == f"0o27 {where}"


async def test_a_relative_cwd_is_inside_the_process_directory(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    # A command's directory is its own under the data dir: a relative cwd is found there.
    slug_dir = agent.config.data_dir / "run" / f"{APP}.sub.0"
    (slug_dir / "inner").mkdir(parents=True)
    line = await run_reporting(
        agent, client, "sub.0", "import os\nprint(os.getcwd(), flush=True)\n", cwd="inner"
    )
    assert line == str((slug_dir / "inner").resolve())


async def test_a_relative_cwd_through_a_link_out_of_the_directory_fails_the_start(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    slug_dir = agent.config.data_dir / "run" / f"{APP}.esc.0"
    slug_dir.mkdir(parents=True)
    (slug_dir / "out").symlink_to("/")
    body = {"app": APP, "node": "esc.0", "command": "pwd", "restart": "never", "cwd": "out"}
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    doc = await wait_http(client, created.json()["details"], lambda d: d["state"] == "failed")
    assert "leads outside the app's directory" in doc["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)
async def test_user_nobody_runs_as_nobody_with_its_home(agent: Agent, client: httpx.AsyncClient) -> None:
    nobody = pwd.getpwnam("nobody")
    # /bin/sh, not the test's interpreter: nobody may not reach a venv under /root.
    script = 'echo "$(id -u) $(id -g) $(id -G) $HOME $USER"; touch mine && echo wrote'
    body = {"app": APP, "node": "nobody.0", "command": script, "restart": "never", "user": "nobody"}
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    unit = agent.supervisor.units[f"{APP}.nobody.0"]
    await wait_unit(unit, lambda u: u.state in ("exited", "failed"))
    lines = [line.decode() for stream, line in unit.output.ring if stream == "stdout"]
    groups = " ".join(str(g) for g in sorted(set(os.getgrouplist("nobody", nobody.pw_gid))))
    # Not root's supplementary groups; its own directory is its to write in.
    assert lines == [f"{nobody.pw_uid} {nobody.pw_gid} {groups} {nobody.pw_dir} nobody", "wrote"]
    made = agent.config.data_dir / "run" / f"{APP}.nobody.0" / "mine"
    assert made.stat().st_uid == nobody.pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)
async def test_a_cwd_the_user_may_not_enter_is_refused(client: httpx.AsyncClient, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    body = {"app": APP, "node": "priv.0", "command": "pwd", "user": "nobody", "cwd": str(private)}
    answer = await client.post("/create-process", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == "cwd"
    assert "user 'nobody' may enter" in answer.json()["message"]


@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)
async def test_a_relative_cwd_as_nobody_counts_from_the_app_directory(
    agent: Agent, client: httpx.AsyncClient
) -> None:
    """The agent enters the app's directory for the child (under its 0700 data dir);
    below it, the user's own rights decide: an open directory is fine, a closed one fails."""
    slug_dir = agent.config.data_dir / "run" / f"{APP}.rel.0"
    (slug_dir / "open").mkdir(parents=True, mode=0o755)
    (slug_dir / "closed").mkdir(mode=0o700)
    body = {"app": APP, "node": "rel.0", "command": "pwd", "restart": "never", "user": "nobody"}
    body["cwd"] = "open"
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    unit = agent.supervisor.units[f"{APP}.rel.0"]
    await wait_unit(unit, lambda u: u.state in ("exited", "failed"))
    printed = [line for stream, line in unit.output.ring if stream == "stdout"]
    assert printed == [str(slug_dir / "open").encode()]
    body = {**body, "node": "rel.1", "cwd": "closed"}
    (agent.config.data_dir / "run" / f"{APP}.rel.1").mkdir()
    (agent.config.data_dir / "run" / f"{APP}.rel.1" / "closed").mkdir(mode=0o700)
    created = await client.post("/create-process", json=body)
    assert created.status_code == 201, created.text
    doc = await wait_http(client, created.json()["details"], lambda d: d["state"] == "failed")
    assert "is not a directory user 'nobody' may enter" in doc["error"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        (
            {"limits": {"nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[1] + 1}},
            "limits.nofile",
            "hard limit",
        ),
        ({"limits": {"nofile": 0}}, "limits.nofile", "greater than or equal"),
        ({"limits": {"as_bytes": 1024}}, "limits.as_bytes", "greater than or equal"),
        ({"limits": {"stack": 1}}, "limits.stack", "Extra inputs"),
        ({"user": "no-such-user-here"}, "user", "no such user"),
        ({"user": "root; rm"}, "user", "pattern"),
        ({"group": "no-such-group-here"}, "group", "no such group"),
        ({"group": "9999999999"}, "group", "no such group"),
        ({"user": "9999999999"}, "user", "no such user"),
        ({"umask": "0999"}, "umask", "pattern"),
        ({"umask": 18}, "umask", "string"),
        ({"cwd": "../up"}, "cwd", "no '..'"),
        ({"cwd": "/no/such/directory"}, "cwd", "may enter"),
        ({"logs": "syslog"}, "logs", "'files' or 'discard'"),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, fields: dict[str, object], field: str, words: str
) -> None:
    body = {"app": APP, "node": "bad.0", "command": "true", **fields}
    answer = await client.post("/create-process", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field
    assert words in answer.json()["message"]


@pytest.mark.skipif(os.geteuid() == 0, reason="a root agent may switch users")
async def test_a_non_root_agent_refuses_another_user(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        "/create-process", json={"app": APP, "node": "u.0", "command": "true", "user": "root"}
    )
    assert answer.status_code == 422
    assert answer.json()["field"] == "user"
    assert "does not run as root" in answer.json()["message"]


async def test_memory_and_cpu_limits_where_cgroup_v2_is_not_delegated_are_a_422(
    client: httpx.AsyncClient,
) -> None:
    problem = cgroups.HOST.unavailable()
    if problem is None:
        pytest.skip("cgroup v2 is delegated here: test_memory_limit_in_the_childs_cgroup covers it")
    body = {"app": APP, "node": "mem.0", "command": "true", "limits": {"memory_max_bytes": 64 << 20}}
    answer = await client.post("/create-process", json=body)
    assert answer.status_code == 422
    assert answer.json()["field"] == "limits.memory_max_bytes"
    assert answer.json()["message"].endswith(problem)
    body["limits"] = {"cpu_max": 0.5}
    assert (await client.post("/create-process", json=body)).json()["field"] == "limits.cpu_max"


async def test_memory_limit_in_the_childs_cgroup(agent: Agent, client: httpx.AsyncClient) -> None:
    problem = cgroups.HOST.unavailable()
    if problem is not None:
        pytest.skip(f"cgroup v2 is not delegated to the agent here: {problem}")
    script = (
        "cg = open('/proc/self/cgroup').read().split('0::', 1)[1].strip()\n"
        "base = open('/proc/self/mountinfo').read()\n"
        "mount = next(l.split()[4] for l in base.splitlines() if ' - cgroup2 ' in l)\n"
        "print(open(mount + cg + '/memory.max').read().strip(), open(mount + cg + '/cpu.max').read().strip(),"
        " flush=True)\n"
    )
    limits = {"memory_max_bytes": 64 << 20, "cpu_max": 0.5}
    line = await run_reporting(agent, client, "cg.0", script, limits=limits)
    assert line == f"{64 << 20} 50000 100000"


async def test_a_gated_child_joins_its_cgroup_before_its_program_runs(tmp_path: Path) -> None:
    """The gate's order, with a cgroup directory standing in for the kernel's (the
    cgroup files are plain files here: the kernel's refusal is tested above)."""
    fake = tmp_path / "cg"
    fake.mkdir()
    (fake / "cgroup.controllers").write_text("cpu memory\n")
    (fake / "cgroup.subtree_control").write_text("cpu memory\n")
    host = cgroups.CgroupHost(tmp_path, "/cg")
    assert host.unavailable() is None
    unit = host.unit("app.web.0", 32 << 20, 0.25)
    assert (unit.path / "memory.max").read_text() == f"{32 << 20}\n"
    assert (unit.path / "cpu.max").read_text() == "25000 100000\n"
    marker = unit.path / "cgroup.procs"
    setup = ChildSetup(cwd=str(tmp_path), cgroup=unit)
    # The program reads what the agent wrote before the gate opened: its own pid.
    child = procs.spawn(
        ["/bin/sh", "-c", f"cat {marker}; echo $$"], env={"PATH": os.defpath}, cwd=str(tmp_path), setup=setup
    )
    try:
        code = await procs.wait_exit(child)
        out = procs.drain(child.stdout_fd).decode().split()
    finally:
        os.close(child.stdout_fd)
        os.close(child.stderr_fd)
    assert code == 0
    assert out == [str(child.pid), str(child.pid)]  # the gate's shell execs: one pid


@pytest.mark.skipif(os.geteuid() != 0, reason=NEEDS_ROOT)
@pytest.mark.parametrize("switch", ["setpriv", "popen"])
async def test_both_ways_of_switching_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    """setpriv in front of the program (vfork), or subprocess's own switch (fork) where
    the host has no setpriv: the child is nobody either way, with nobody's groups only."""
    if switch == "popen":
        monkeypatch.setattr(limits, "SETPRIV", None)
    elif limits.SETPRIV is None:
        pytest.skip("no setpriv on this host")
    nobody = pwd.getpwnam("nobody")
    identity = limits.Identity(nobody.pw_uid, nobody.pw_gid, [nobody.pw_gid], "nobody", nobody.pw_dir)
    # With setpriv, rlimits too: the gate runs before the switch (without, check_host
    # refuses limits with a user).
    rlimits = [(resource.RLIMIT_NOFILE, 32, "nofile")] if switch == "setpriv" else []
    setup = ChildSetup(cwd=str(tmp_path), identity=identity, rlimits=rlimits)
    argv = ["/bin/sh", "-c", "echo $(id -u) $(id -g) $(id -G) $(ulimit -n)"]
    child = procs.spawn(argv, env={"PATH": os.defpath}, cwd=str(tmp_path), setup=setup)
    try:
        assert await procs.wait_exit(child) == 0
        out = procs.drain(child.stdout_fd).decode().split()
    finally:
        os.close(child.stdout_fd)
        os.close(child.stderr_fd)
    nofile = "32" if rlimits else str(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    assert out == [str(nobody.pw_uid), str(nobody.pw_gid), str(nobody.pw_gid), nofile]


def test_a_gate_closed_without_the_word_runs_nothing(tmp_path: Path) -> None:
    """If the agent dies before it set the limits, the program must not run unlimited."""
    ran = tmp_path / "ran"
    read_end, write_end = os.pipe()
    child = subprocess.Popen([*procs.GATE_ARGV, "/bin/sh", "-c", f"touch {ran}"], stdin=read_end)
    os.close(read_end)
    os.close(write_end)  # as the agent's death would
    try:
        assert child.wait(timeout=10) == 125
    finally:
        if child.returncode is None:
            child.kill()
            child.wait()
    assert not ran.exists()
