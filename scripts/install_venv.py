"""Install herder and its locked dependencies into a venv: with uv when it can, else pip.

Why: on a fresh clone, ``pip install -c requirements.lock -e '.[dev]'`` spends about a
minute of CPU resolving and unpacking ~120 wheels, a tenth of CI's ten-minute budget;
uv installs the same locked set in a few seconds. uv does not read pip's settings, so this
script hands it pip's: the index, extra indexes, find-links, constraints and certificate
bundle from ``pip config list`` and the ``PIP_*`` environment (a machine whose wheels come
from a local mirror or through a TLS-inspecting proxy installs the same way with both).
uv itself is installed by pip, at the version the lock pins. Any failure of the uv path
falls back to pip, as before, so this never makes an install fail that pip would pass.

Usage: ``python scripts/install_venv.py VENV_PYTHON LOCK_FILE REQUIREMENT...``
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

# pip's setting (config key or PIP_ variable, lower-case, dashes) -> uv's option.
LIST_OPTIONS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings(python: str) -> dict[str, list[str]]:
    """pip's effective list settings: config files first, then ``PIP_*`` variables (which win)."""
    settings: dict[str, list[str]] = {}
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    for line in listed.splitlines():
        match = re.fullmatch(r"(?:global|install|:env:)\.([a-z-]+)='(.*)'", line.strip())
        if match:
            settings[match.group(1)] = match.group(2).split()
    for name, value in os.environ.items():
        if name.startswith("PIP_"):
            settings[name[4:].lower().replace("_", "-")] = value.split()
    return settings


def uv_command(python: str, lock: str, requirements: list[str], settings: dict[str, list[str]]) -> list[str]:
    uv = str(Path(python).parent / "uv")
    # --compile-bytecode: pip writes every module's .pyc at install and uv does not; where
    # PYTHONDONTWRITEBYTECODE is set (CI machines), every Python start would otherwise
    # compile fastapi, pydantic and the rest from source again (a suite of real processes
    # paid minutes of CPU for it, and the agent's start and RSS a third more).
    command = [uv, "pip", "install", "--quiet", "--compile-bytecode", "--python", python, "-c", lock]
    for key, option in LIST_OPTIONS.items():
        for value in settings.get(key, []):
            command += [option, value]
    # pip takes the best version over every index; uv by default only the first index's.
    command += ["--index-strategy", "unsafe-best-match"]
    return command + requirements


def locked_uv(lock: str) -> str | None:
    for line in Path(lock).read_text().splitlines():
        if line.startswith("uv=="):
            return line.strip()
    return None


def pip_install(python: str, lock: str, requirements: list[str]) -> int:
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", lock]
    return subprocess.run(command + requirements, check=False).returncode


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    python, lock, requirements = argv[0], argv[1], argv[2:]
    uv_pin = locked_uv(lock)
    if uv_pin is not None:
        quiet = ["--quiet", "--disable-pip-version-check"]
        if subprocess.run([python, "-m", "pip", "install", *quiet, uv_pin], check=False).returncode == 0:
            settings = pip_settings(python)
            env = dict(os.environ)
            cert = settings.get("cert")
            if cert and "SSL_CERT_FILE" not in env:
                env["SSL_CERT_FILE"] = cert[0]  # uv trusts what pip was told to trust
            command = uv_command(python, lock, requirements, settings)
            if subprocess.run(command, env=env, check=False).returncode == 0:
                return 0
            print(f"install_venv: uv failed ({shlex.join(command)}); installing with pip", file=sys.stderr)
    return pip_install(python, lock, requirements)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
