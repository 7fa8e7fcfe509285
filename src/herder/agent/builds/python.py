"""The Python builder: a venv per build, the app's dependencies installed into it.

Detected by ``requirements.txt``, ``pyproject.toml``, ``Pipfile.lock`` or ``setup.py``.
What is installed, by the first rule that applies (Heroku's order):

* ``requirements.txt``: ``uv pip install -r requirements.txt``;
* ``pyproject.toml`` with ``uv.lock``: ``uv sync --frozen --no-dev --no-editable`` into
  the venv (``UV_PROJECT_ENVIRONMENT``);
* ``Pipfile.lock``: its ``default`` packages, pinned as locked;
* ``pyproject.toml`` without ``[build-system]`` (not a package, as uv sees it): its
  ``dependencies``, ``uv pip install -r pyproject.toml``; the app runs from its tree;
* ``pyproject.toml`` or ``setup.py``: the project itself, ``uv pip install .``.

uv (next to the agent's interpreter or on PATH) creates the venv and installs, with its
cache shared by every Python build (``UV_CACHE_DIR``; hard links from it make a second
app with the same dependencies quick). Without uv, ``python -m venv`` and pip do the
same, more slowly. A Django app (``manage.py`` and Django installed) gets
``manage.py collectstatic --noinput`` unless ``DISABLE_COLLECTSTATIC=1``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from herder.agent.builds.builder import BuildContext, BuildError, BuiltEnv
from herder.agent.builds.envfile import read_env_file
from herder.agent.builds.interpreters import find, find_uv

MARKERS = ("requirements.txt", "pyproject.toml", "Pipfile.lock", "setup.py")
# Bumped when what a build makes changes, so that old builds are not reused.
BUILD_FORMAT = "1"


class PythonBuilder:
    """``herder.builders`` entry point ``python``."""

    name = "python"

    def detect(self, app_root: Path) -> bool:
        return any((app_root / marker).is_file() for marker in MARKERS)

    def key(self, app_root: Path) -> str:
        uv = find_uv()
        interp = find(app_root, uv)
        # The interpreter's path and version, and the installer: a build made with
        # another interpreter (an upgrade of the host's) must not be reused.
        installer = "uv" if uv else "pip"
        return f"{BUILD_FORMAT} {interp.path} {interp.label} {installer}"

    async def build(self, ctx: BuildContext) -> BuiltEnv:
        uv = _installer(ctx)
        interp = find(ctx.app_root, uv)
        venv = ctx.build_dir / "venv"
        python = str(venv / "bin" / "python")
        ctx.note(f"Python {interp.label} ({interp.path}), installing with {'uv' if uv else 'pip'}")
        env = {
            "UV_CACHE_DIR": str(ctx.cache_dir / "uv"),
            "PIP_CACHE_DIR": str(ctx.cache_dir / "pip"),
            "UV_PYTHON_DOWNLOADS": "never",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "VIRTUAL_ENV": str(venv),
        }
        if uv:
            await ctx.run([uv, "venv", "--quiet", "--python", interp.path, str(venv)], env=env)
        else:
            await ctx.run([interp.path, "-m", "venv", str(venv)], env=env)
        await self._install(ctx, uv, python, env)
        await self._collectstatic(ctx, venv, python, env)
        return BuiltEnv(path=(str(venv / "bin"),), env={"VIRTUAL_ENV": str(venv)})

    async def _install(self, ctx: BuildContext, uv: str | None, python: str, env: dict[str, str]) -> None:
        root = ctx.app_root
        index = _index_args(ctx)
        if uv:
            install = [uv, "pip", "install", "--python", python, *index]
        else:
            install = [python, "-m", "pip", "install", "--no-input", *index]
        if (root / "requirements.txt").is_file():
            await ctx.run([*install, "-r", "requirements.txt"], env=env)
        elif (root / "pyproject.toml").is_file() and (root / "uv.lock").is_file():
            if not uv:
                raise BuildError("the app has a uv.lock, and uv is not installed on this host")
            sync = [uv, "sync", "--frozen", "--no-dev", "--no-editable", "--python", python, *index]
            await ctx.run(sync, env={**env, "UV_PROJECT_ENVIRONMENT": str(ctx.build_dir / "venv")})
        elif (root / "Pipfile.lock").is_file():
            pinned = ctx.build_dir / "Pipfile.lock.txt"
            pinned.write_text(_pipfile_requirements(root / "Pipfile.lock"))
            await ctx.run([*install, "-r", str(pinned)], env=env)
        elif uv and _is_virtual_project(root):
            # Dependencies declared, nothing to build: install them, the app runs from its tree.
            await ctx.run([*install, "-r", "pyproject.toml"], env=env)
        else:
            await ctx.run([*install, "."], env=env)

    async def _collectstatic(self, ctx: BuildContext, venv: Path, python: str, env: dict[str, str]) -> None:
        if not (ctx.app_root / "manage.py").is_file():
            return
        if not _has_django(venv):
            return
        app_env = {**ctx.env, **read_env_file(ctx.app_root)}
        if app_env.get("DISABLE_COLLECTSTATIC", "") not in ("", "0"):
            ctx.note("DISABLE_COLLECTSTATIC is set: collectstatic skipped")
            return
        await ctx.run([python, "manage.py", "collectstatic", "--noinput"], env={**app_env, **env})


def _installer(ctx: BuildContext) -> str | None:
    """uv's path, or None to use pip, as ``[builds] python_installer`` says."""
    wanted = ctx.options.get("python_installer", "auto")
    if wanted == "pip":
        return None
    uv = find_uv()
    if uv is None and wanted == "uv":
        raise BuildError("[builds] python_installer is 'uv', and uv is not installed on this host")
    return uv


def _is_virtual_project(root: Path) -> bool:
    """A ``pyproject.toml`` without ``[build-system]`` (uv's "virtual project"): not a package."""
    try:
        data = tomllib.loads((root / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return "build-system" not in data and not (root / "setup.py").is_file()


def _has_django(venv: Path) -> bool:
    return any(venv.glob("lib/python*/site-packages/django/__init__.py"))


def _index_args(ctx: BuildContext) -> list[str]:
    """The installers' flags for ``[builds]`` ``find_links``, ``index_url``, ``no_index``."""
    args: list[str] = []
    for link in ctx.index.find_links:
        args += ["--find-links", link]
    if ctx.index.index_url:
        args += ["--index-url", ctx.index.index_url]
    if ctx.index.no_index:
        args.append("--no-index")
    return args


def _pipfile_requirements(lock: Path) -> str:
    """Requirement lines for a ``Pipfile.lock``'s ``default`` section (pinned as locked)."""
    try:
        data = json.loads(lock.read_text())
    except (OSError, ValueError) as exc:
        raise BuildError(f"Pipfile.lock cannot be read: {exc}") from None
    lines = []
    for name, entry in sorted((data.get("default") or {}).items()):
        version = entry.get("version", "") if isinstance(entry, dict) else ""
        lines.append(f"{name}{version}")
    return "\n".join(lines) + "\n"
