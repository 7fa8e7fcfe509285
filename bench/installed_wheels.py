"""Real wheels rebuilt from distributions installed in this venv: a realistic wheelhouse offline.

Why: the build benchmark (``bench_builds.py``) must install *common* dependencies of
realistic size (compiled extensions, thousands of files), and benchmarks may not reach
the network. The distributions ``make install`` put in ``.venv`` are such packages, at
the versions ``requirements.lock`` pins; a wheel is their files as installed plus the
metadata they came with, so rebuilding one needs no build backend.

What a rebuilt wheel holds: every file the distribution's ``RECORD`` lists under
site-packages, except byte-code (``__pycache__``, ``*.pyc``: the installer's, not the
wheel's), files outside site-packages (``../../../bin`` scripts: the installer writes
them again from ``entry_points.txt``) and the marks of the install itself (``INSTALLER``,
``REQUESTED``, ``direct_url.json``); a fresh ``RECORD`` (sha256 and size of each file).
Its file name carries the tags of its ``WHEEL`` file (``cp311-cp311-manylinux_…`` for a
compiled one), so an installer picks it for this interpreter only.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from packaging.requirements import Requirement

# dist-info files written by the install, not part of the wheel (RECORD is written anew).
INSTALL_MARKS = frozenset({"INSTALLER", "REQUESTED", "direct_url.json", "RECORD", "uv_cache.json"})


def normalize(name: str) -> str:
    """A project name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, md.Distribution]:
    """The distributions this interpreter sees, by normalized name."""
    return {normalize(d.metadata["Name"]): d for d in md.distributions()}


def closure(names: Iterable[str], dists: dict[str, md.Distribution] | None = None) -> list[md.Distribution]:
    """``names`` and everything they require (``Requires-Dist``, markers evaluated, no extras).

    A requirement not installed here raises: the wheelhouse must hold all an install needs.
    """
    dists = installed() if dists is None else dists
    found: dict[str, md.Distribution] = {}
    todo = [normalize(n) for n in names]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        if name not in dists:
            raise LookupError(f"{name} is required but not installed in this venv")
        found[name] = dists[name]
        for line in found[name].requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(normalize(req.name))
    return sorted(found.values(), key=lambda d: normalize(d.metadata["Name"]))


def compressed_tag(wheel_file: str) -> str:
    """The ``python-abi-platform`` part of a wheel's name from its ``WHEEL`` file's ``Tag:`` lines.

    Several tags compress into dotted sets (``cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64``);
    tags that are not such a product of sets cannot be named by one file.
    """
    tags = [line.split(":", 1)[1].strip() for line in wheel_file.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise ValueError("WHEEL has no Tag line")
    parts: list[list[str]] = [[], [], []]
    for tag in tags:
        for i, part in enumerate(tag.split("-")):
            if part not in parts[i]:
                parts[i].append(part)
    if len(tags) != len(set(tags)) or len(set(tags)) != len(parts[0]) * len(parts[1]) * len(parts[2]):
        raise ValueError(f"tags {tags} do not compress into one wheel name")
    return "-".join(".".join(p) for p in parts)


def _kept(path: PurePosixPath) -> bool:
    if path.parts[0] == ".." or path.is_absolute() or "__pycache__" in path.parts or path.suffix == ".pyc":
        return False
    return not (path.parts[0].endswith(".dist-info") and len(path.parts) == 2 and path.name in INSTALL_MARKS)


def rebuild_wheel(dist: md.Distribution, folder: Path) -> Path:
    """The wheel ``dist`` was installed from, as near as its installed files allow, in ``folder``."""
    from tests.fixtures.builds.wheels import record_line  # the tests' RECORD writer

    name, version = dist.metadata["Name"], dist.version
    paths = [PurePosixPath(str(f)) for f in dist.files or []]
    kept = sorted((p for p in paths if _kept(p)), key=lambda p: (p.parts[0].endswith(".dist-info"), str(p)))
    dist_info = next(p.parts[0] for p in kept if p.parts[0].endswith(".dist-info") and p.name == "METADATA")
    wheel_meta = dist.read_text("WHEEL") or ""
    filename = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-{compressed_tag(wheel_meta)}.whl"
    out = folder / filename
    record: list[str] = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path in kept:
            data = Path(str(dist.locate_file(path))).read_bytes()
            wheel.writestr(str(path), data)
            record.append(record_line(str(path), data))
        record.append(f"{dist_info}/RECORD,,")
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return out


def write_wheelhouse(folder: Path, names: Iterable[str]) -> list[Path]:
    """``names`` and their dependency closure as wheels in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [rebuild_wheel(d, folder) for d in closure(names)]
