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

Sizes declared in headers are not trusted: bytes are counted as they are written, and
tar headers (which tarfile reads whole) are capped in size.
Files are created with ``O_EXCL | O_NOFOLLOW`` and keep only the owner's executable
bit as permission information; owners and times are not restored.
"""

from __future__ import annotations

import io
import lzma
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
# tarfile reads a pax or GNU long-name header whole into memory: real ones are a few
# hundred bytes, so a bigger read is a memory bomb, not a header. (File data is read in
# _COPY_CHUNK pieces, well under this.)
MAX_TAR_READ_BYTES = 4 * 1024 * 1024
# Beyond its data, a tar member costs a 512-byte header, up to 511 bytes of padding and
# maybe a long-name or pax header: the decompressed stream may exceed the file data by
# this much per member.
TAR_OVERHEAD_PER_MEMBER_BYTES = 4096
# The longest symbolic link target read from a zip member (Linux's PATH_MAX).
MAX_LINK_TARGET_BYTES = 4096
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NOT_AN_ARCHIVE = "not an archive herder can unpack (.tar, .tar.gz, .tgz, .zip)"


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


class _BoundedStream:
    """The decompressed tar stream, read within limits that tarfile does not have.

    A single read is capped (tarfile reads headers whole) and the stream as a whole may
    not exceed the unpacked-size limit plus a per-member overhead, so a header bomb
    stops at a limit instead of at the end of the memory or the CPU.
    """

    def __init__(self, stream: io.BufferedIOBase, config: UnpackConfig) -> None:
        self._stream = stream
        self._cap = config.max_bytes + config.max_files * TAR_OVERHEAD_PER_MEMBER_BYTES
        self._limit = config.max_bytes

    def _reach(self, position: int) -> None:
        if position > self._cap:
            raise UnsafeArchive(f"unsafe archive: unpacks to more than {self._limit} bytes")

    def read(self, size: int = -1, /) -> bytes:
        if size < 0 or size > MAX_TAR_READ_BYTES:
            raise UnsafeArchive(f"unsafe archive: a tar header larger than {MAX_TAR_READ_BYTES} bytes")
        self._reach(self._stream.tell() + size)
        return self._stream.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        if whence == os.SEEK_SET:
            self._reach(offset)
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("read-only")

    def close(self) -> None:
        """The caller closes the underlying stream."""


def _decompressed(raw: io.BufferedReader) -> io.BufferedIOBase:
    """``raw`` decompressed if its first bytes say gzip, bzip2 or xz; else ``raw``."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        import gzip

        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head.startswith(b"BZh"):
        import bz2

        return bz2.BZ2File(raw)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw)
    return raw


def _open_tar(raw: io.BufferedReader, stream: io.BufferedIOBase, config: UnpackConfig) -> tarfile.TarFile:
    try:
        return tarfile.TarFile(fileobj=_BoundedStream(stream, config), mode="r")
    except tarfile.ReadError as exc:
        if stream is raw:
            raise UnsafeArchive(f"{_NOT_AN_ARCHIVE}: {exc}") from exc
        raise UnsafeArchive(f"corrupt archive: {exc}") from exc


def _unpack_tar(archive: Path, target: Path, config: UnpackConfig, budget: _Budget) -> None:
    with open(archive, "rb") as raw, _decompressed(raw) as stream, _open_tar(raw, stream, config) as tar:
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


def _check_links_resolve_inside(target: Path) -> None:
    """Each link was checked alone; a chain of them (``x -> sub/..``, ``sub -> .``) may
    still lead out. Resolve every link once all exist."""
    root = os.path.realpath(target)
    for dirpath, dirnames, filenames in os.walk(target):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                resolved = os.path.realpath(path)
                if resolved != root and not resolved.startswith(root + os.sep):
                    rel = os.path.relpath(path, target)
                    raise UnsafeArchive(
                        f"unsafe archive: link {rel!r} leads out of the app through other links"
                    )


def _unpack_zip(archive: Path, target: Path, config: UnpackConfig, budget: _Budget) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = safe_member_path(info.filename)
            budget.add_file(info.filename)
            if not rel:
                continue
            dest = _check_parents(target, rel)
            unix_mode = info.external_attr >> 16
            if info.flag_bits & 0x1:
                raise UnsafeArchive(f"cannot unpack {info.filename!r}: it is encrypted")
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(unix_mode):
                with zf.open(info) as source:  # not zf.read(): the member may be a bomb
                    link_target = source.read(MAX_LINK_TARGET_BYTES)
                _make_link(dest, rel, link_target.decode("utf-8", "replace"), config)
            elif stat.S_IFMT(unix_mode) and not stat.S_ISREG(unix_mode):
                # Only the type bits tell: many tools store permissions alone (type 0).
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
        # By the leading bytes: a tar whose last member is a jar also ends like a zip.
        with open(archive, "rb") as fh:
            is_zip = fh.read(4) in _ZIP_MAGICS
        if is_zip:
            _unpack_zip(archive, target, config, budget)
        else:
            _unpack_tar(archive, target, config, budget)
        if config.allow_links:
            _check_links_resolve_inside(target)
    except (
        zipfile.BadZipFile,
        tarfile.TarError,
        zlib.error,
        lzma.LZMAError,
        EOFError,
        NotImplementedError,  # zipfile: a compression method it does not know
        OSError,
    ) as exc:
        shutil.rmtree(target, ignore_errors=True)
        raise UnsafeArchive(f"corrupt archive: {exc}") from exc
    except UnsafeArchive:
        shutil.rmtree(target, ignore_errors=True)
        raise
