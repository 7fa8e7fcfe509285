"""Safe unpacking of ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` archives.

The format is recognised from the content, not the URL (a download link need not end
in ``.tgz``). Every member is checked before anything is written for it:

* its path is relative, has no ``..`` part, no NUL and no backslash trick, and stays
  under the target directory once resolved;
* it is a regular file or a directory: devices, FIFOs and hard links are refused;
  symbolic links are refused unless ``allow_links`` is set, and then only if their
  target stays inside the app;
* the running totals stay within the file count, the unpacked size and the
  unpacked/archive size ratio (a zip bomb stops at the limit, not at the disk's end).

Sizes declared in headers are not trusted: bytes are counted as they are written.
Files are created with ``O_EXCL | O_NOFOLLOW`` and keep only the owner's executable
bit as permission information; owners and times are not restored.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from herder.agent.config import UnpackConfig
from herder.agent.errors import UnsafeArchive

_COPY_CHUNK = 1024 * 1024
# Small archives compress text very well; the ratio only counts once past this size.
RATIO_FLOOR_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class _Budget:
    config: UnpackConfig
    archive_bytes: int
    files: int = 0
    written: int = 0

    def add_file(self, name: str) -> None:
        self.files += 1
        if self.files > self.config.max_files:
            raise UnsafeArchive(f"unsafe archive: more than {self.config.max_files} entries (at {name!r})")

    def add_bytes(self, name: str, count: int) -> None:
        self.written += count
        if self.written > self.config.max_bytes:
            raise UnsafeArchive(
                f"unsafe archive: unpacks to more than {self.config.max_bytes} bytes (at {name!r})"
            )
        ratio_base = max(self.archive_bytes, 1)
        if self.written > RATIO_FLOOR_BYTES and self.written / ratio_base > self.config.max_ratio:
            raise UnsafeArchive(
                f"unsafe archive: expands more than {self.config.max_ratio:g} times "
                f"(at {name!r}): a compression bomb?"
            )


def safe_member_path(name: str) -> str:
    """Normalise an archive member's name, or raise if it could land outside the target.

    Returns the relative POSIX path ('' for the root itself).
    """
    if "\0" in name:
        raise UnsafeArchive(f"unsafe archive: member name with a NUL byte: {name!r}")
    if "\\" in name:
        raise UnsafeArchive(f"unsafe archive: member name with a backslash: {name!r}")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"unsafe archive: absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"unsafe archive: member {name!r} escapes the app directory")
    return "/".join(parts)


def _link_stays_inside(member: str, target: str) -> bool:
    if target.startswith("/"):
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(member), target))
    return not (joined == ".." or joined.startswith("../"))


def _write_file(dest: Path, source: IO[bytes], name: str, budget: _Budget, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    perm = 0o755 if mode & stat.S_IXUSR else 0o644
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perm)
    with os.fdopen(fd, "wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            budget.add_bytes(name, len(chunk))
            out.write(chunk)


def _check_parents(target: Path, relpath: str) -> Path:
    """The destination of ``relpath`` under ``target``; no parent may be a symlink."""
    dest = target / relpath
    for parent in dest.relative_to(target).parents:
        if parent != Path(".") and (target / parent).is_symlink():
            raise UnsafeArchive(f"unsafe archive: {relpath!r} would be written through a link")
    return dest


def _unpack_tar(archive: Path, target: Path, config: UnpackConfig, budget: _Budget) -> None:
    with tarfile.open(archive, mode="r:*") as tar:
        for member in _iter_tar(tar):
            rel = safe_member_path(member.name)
            budget.add_file(member.name)
            if not rel:
                continue
            dest = _check_parents(target, rel)
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
            elif member.isreg():
                source = tar.extractfile(member)
                assert source is not None  # regular members always have data
                with source:
                    _write_file(dest, source, member.name, budget, member.mode)
            elif member.issym():
                _make_link(dest, rel, member.linkname, config)
            elif member.islnk():
                raise UnsafeArchive(f"unsafe archive: hard link {member.name!r}")
            else:
                raise UnsafeArchive(
                    f"unsafe archive: {member.name!r} is a device, FIFO or other special file"
                )


def _iter_tar(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from tar
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"corrupt archive: {exc}") from exc


def _make_link(dest: Path, rel: str, link_target: str, config: UnpackConfig) -> None:
    if not config.allow_links:
        raise UnsafeArchive(
            f"unsafe archive: symbolic link {rel!r} (links are refused; "
            "set unpack.allow_links to allow those that stay inside the app)"
        )
    if not _link_stays_inside(rel, link_target):
        raise UnsafeArchive(f"unsafe archive: link {rel!r} -> {link_target!r} leaves the app")
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(link_target, dest)


def _unpack_zip(archive: Path, target: Path, config: UnpackConfig, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = safe_member_path(info.filename)
            budget.add_file(info.filename)
            if not rel:
                continue
            dest = _check_parents(target, rel)
            unix_mode = info.external_attr >> 16
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(unix_mode):
                _make_link(dest, rel, zf.read(info)[:4096].decode("utf-8", "replace"), config)
            elif unix_mode and not stat.S_ISREG(unix_mode):
                raise UnsafeArchive(f"unsafe archive: {info.filename!r} is a special file")
            else:
                with zf.open(info) as source:
                    _write_file(dest, source, info.filename, budget, unix_mode)


def unpack(archive: Path, target: Path, config: UnpackConfig) -> None:
    """Unpack ``archive`` into the empty or missing directory ``target``.

    On any error ``target`` is removed, so nothing half-unpacked stays behind.

    Raises:
        UnsafeArchive: not an archive we know, corrupt, or breaking a rule above.
    """
    budget = _Budget(config=config, archive_bytes=archive.stat().st_size)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            _unpack_zip(archive, target, config, budget)
        elif tarfile.is_tarfile(archive):
            _unpack_tar(archive, target, config, budget)
        else:
            raise UnsafeArchive("not an archive herder can unpack (.tar, .tar.gz, .tgz, .zip)")
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UnsafeArchive(f"corrupt archive: {exc}") from exc
    except UnsafeArchive:
        shutil.rmtree(target, ignore_errors=True)
        raise
