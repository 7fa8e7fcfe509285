"""Finding a Python interpreter on the host for the version an app asks for.

An app asks through ``.python-version`` (``3.11`` or ``3.11.7``), ``runtime.txt``
(``python-3.11.7``, Heroku's form) or ``pyproject.toml``'s ``requires-python``
(``>=3.10,<3.13``), in that order. Interpreters are looked for where they live on
developer and server hosts alike: pyenv's ``~/.pyenv/versions/*`` (named by their
version, so no process is started to learn it), ``pythonX.Y`` on PATH, and the ones uv
manages (``uv python find``). An app that asks nothing gets the agent's own interpreter.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from herder.agent.builds.builder import BuildError, run_for_output

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")
_ON_PATH = re.compile(r"^python(\d+)\.(\d+)$")
_CLAUSE = re.compile(r"^\s*(~=|==|!=|<=|>=|<|>)\s*([\d.]+)(\.\*)?\s*$")

Version = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Interpreter:
    path: str
    version: Version  # (3, 11) when only the minor is known, (3, 11, 7) otherwise

    @property
    def label(self) -> str:
        return ".".join(map(str, self.version))


def parse_version(text: str) -> Version | None:
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def requested(app_root: Path) -> str | None:
    """What the app asks for: a version (``3.11``) or a specifier (``>=3.10``); None if nothing."""
    for name in (".python-version", "runtime.txt"):
        try:
            text = (app_root / name).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            continue
        first = text.splitlines()[0].strip() if text else ""
        first = first.removeprefix("python-").removeprefix("python")
        if first:
            return first
    try:
        project = tomllib.loads((app_root / "pyproject.toml").read_text()).get("project", {})
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return None
    spec = project.get("requires-python") if isinstance(project, dict) else None
    return spec.strip() if isinstance(spec, str) and spec.strip() else None


def satisfies(version: Version, wanted: str) -> bool:
    """Whether ``version`` meets ``wanted``: a version prefix (``3.11``) or PEP 440 clauses."""
    exact = parse_version(wanted)
    if exact is not None and wanted.strip()[0].isdigit():
        return version[: len(exact)] == exact
    return all(_clause(version, clause) for clause in wanted.split(",") if clause.strip())


def _clause(version: Version, clause: str) -> bool:
    match = _CLAUSE.match(clause)
    if match is None:
        return False
    op, text, _star = match.groups()
    bound = tuple(int(p) for p in text.split(".") if p)
    # Compare on the bound's length, as ``>=3.10`` means 3.10.anything.
    mine = version[: len(bound)] + (0,) * max(0, len(bound) - len(version))
    if op == "==":
        return mine == bound
    if op == "!=":
        return mine != bound
    if op == "~=":
        return mine >= bound and version[: len(bound) - 1] == bound[:-1]
    return {">=": mine >= bound, "<=": mine <= bound, ">": mine > bound, "<": mine < bound}[op]


def candidates() -> list[Interpreter]:
    """The interpreters found on the host without running any (pyenv's, then PATH's)."""
    found: list[Interpreter] = []
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        for entry in sorted(pyenv.iterdir(), reverse=True):
            version = parse_version(entry.name)
            binary = entry / "bin" / "python"
            if version is not None and binary.exists():
                found.append(Interpreter(str(binary), version))
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            names = sorted(os.listdir(folder or "."), reverse=True)
        except OSError:
            continue
        for name in names:
            match = _ON_PATH.match(name)
            if match and os.access(os.path.join(folder, name), os.X_OK):
                found.append(Interpreter(os.path.join(folder, name), (int(match[1]), int(match[2]))))
    return found


def find(app_root: Path, uv: str | None) -> Interpreter:
    """The interpreter for the app.

    Raises:
        BuildError: the app asks for a version this host does not have; the message
            names it and the versions found.
    """
    wanted = requested(app_root)
    own = Interpreter(sys.executable, tuple(sys.version_info[:3]))
    if wanted is None or satisfies(own.version, wanted):
        return own
    found = candidates()
    for interp in found:
        if satisfies(interp.version, wanted) and _full_match(interp, wanted):
            return interp
    if uv is not None:
        located = _uv_find(uv, wanted)
        if located is not None:
            return located
    labels = sorted({i.label for i in [own, *found]}, key=lambda s: parse_version(s) or (), reverse=True)
    raise BuildError(
        f"Python {wanted} was asked for (by the app's .python-version, runtime.txt or requires-python) "
        f"and this host has none; found: {', '.join(labels) or 'none'}"
    )


def _full_match(interp: Interpreter, wanted: str) -> bool:
    """A ``pythonX.Y`` on PATH whose micro version the request names: ask it."""
    exact = parse_version(wanted)
    if exact is None or len(exact) < 3 or len(interp.version) >= 3:
        return True
    return _version_of(interp.path) == exact


def _version_of(path: str) -> Version | None:
    """The interpreter's version, asked once per binary (by path and mtime)."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _asked_version(path, stamp)


@functools.lru_cache(maxsize=64)
def _asked_version(path: str, _stamp: int) -> Version | None:
    try:
        out = run_for_output([path, "-c", "import sys; print('.'.join(map(str, sys.version_info[:3])))"], 10)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(out)


def _uv_find(uv: str, wanted: str) -> Interpreter | None:
    try:
        out = run_for_output([uv, "python", "find", "--no-python-downloads", wanted], 30).strip()
    except (OSError, subprocess.SubprocessError):
        return None
    version = _version_of(out) if out else None
    return Interpreter(out, version) if version is not None and satisfies(version, wanted) else None


def find_uv() -> str | None:
    """uv next to the agent's interpreter (installed with herder) or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("uv")
