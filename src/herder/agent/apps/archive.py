"""Safe unpacking of ``.tar``, ``.tar.gz``/``.tgz`` and ``.zip`` archives.

The format is recognised from the content, not the URL (a download link need not end
in ``.tgz``). Every member is checked before anything is written at all: a zip's central
directory lists its members up front, and a tar's headers are read ahead (through the
archive once, decompressing it but writing nothing), so an archive that breaks a rule
below costs no disk and no more I/O than reading it:

* its path is relative, has no ``..`` part, no NUL and no backslash trick, and stays
  under the target directory once resolved;
* it is a regular file or a directory: devices, FIFOs and hard links are refused;
  symbolic links are refused unless ``allow_links`` is set, and then only if their
  target stays inside the app;
* the running totals stay within the file count, the unpacked size and the
  unpacked/archive size ratio (a zip bomb stops at the limit, not at the disk's end).

The limits apply first to the counts and sizes the archive declares, and once more to
the bytes as they are written (sizes declared in headers are not trusted alone); tar
headers (which tarfile reads whole) are capped in size.
Files are created with ``O_EXCL | O_NOFOLLOW`` and keep only the owner's executable
bit as permission information; owners and times are not restored.
"""

from __future__ import annotations

import collections
import io
import lzma
import os
import posixpath
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from herder.agent.apps import zipdir
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
# Tar archives already read ahead within the limits (see _vetted_before).
VETTED_KEPT = 256
_vetted: collections.OrderedDict[tuple[Any, ...], None] = collections.OrderedDict()
_vetted_lock = threading.Lock()
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
_NOT_AN_ARCHIVE = "not an archive herder can unpack (.tar, .tar.gz, .tgz, .zip)"


@dataclass(slots=True)
class _Budget:
    """Running totals against the ``unpack`` limits: of what the archive declares (its
    directory or headers, before writing), or of the bytes actually written."""

    config: UnpackConfig
    archive_bytes: int
    files: int = 0
    written: int = 0

    def add_file(self, name: str, listed: int | None = None) -> None:
        """One more entry; ``listed``: how many the archive's directory says it holds."""
        self.files += 1
        if self.files > self.config.max_files:
            raise _too_many_entries(self.config, name, listed)

    def add_bytes(self, name: str, count: int) -> None:
        self.written += count
        if self.written > self.config.max_bytes:
            raise UnsafeArchive(
                f"unsafe archive: unpacks to more than {self.config.max_bytes} bytes (at {name!r}); "
                "the limit is unpack.max_bytes"
            )
        ratio_base = max(self.archive_bytes, 1)
        if self.written > RATIO_FLOOR_BYTES and self.written / ratio_base > self.config.max_ratio:
            raise UnsafeArchive(
                f"unsafe archive: expands more than {self.config.max_ratio:g} times "
                f"(at {name!r}): a compression bomb? The limit is unpack.max_ratio"
            )


def _too_many_entries(config: UnpackConfig, name: str, listed: int | None) -> UnsafeArchive:
    lists = f": its directory lists {listed}" if listed is not None else ""
    return UnsafeArchive(
        f"unsafe archive: more than {config.max_files} entries (at {name!r}){lists}; "
        "the limit is unpack.max_files"
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
            raise UnsafeArchive(
                f"unsafe archive: unpacks to more than {self._limit} bytes; the limit is unpack.max_bytes"
            )

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
        members: Iterable[tarfile.TarInfo] = _iter_tar(tar)
        if not _vetted_before(archive, config):
            members = _read_tar_ahead(tar, config, budget.archive_bytes)
            _remember_vetted(archive, config)
        for member in members:
            rel = _check_tar_member(member, config, budget)
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
            else:
                _make_link(dest, rel, member.linkname, config)


def _check_tar_member(member: tarfile.TarInfo, config: UnpackConfig, budget: _Budget) -> str:
    """Count ``member`` and check its name and type; its relative path ('' for the root)."""
    rel = safe_member_path(member.name)
    budget.add_file(member.name)
    if member.issym():
        _check_link_allowed(rel or member.name, member.linkname, config)
    elif member.islnk():
        raise UnsafeArchive(f"unsafe archive: hard link {member.name!r}")
    elif not (member.isreg() or member.isdir()):
        raise UnsafeArchive(f"unsafe archive: {member.name!r} is a device, FIFO or other special file")
    return rel


def _read_tar_ahead(tar: tarfile.TarFile, config: UnpackConfig, archive_bytes: int) -> list[tarfile.TarInfo]:
    """Every member's header, read ahead and checked before anything is written.

    A tar has no directory: its headers are spread through it. Reading them all first
    costs one more pass through the (decompressed) stream, file data skipped, and no
    disk: an archive with too many members, too large or breaking a rule is refused
    before its first file is written, not after the limit's worth of them (100,000 tiny
    files took ~400 MB of disk and ~100 s to refuse; reading them ahead takes a few
    seconds and no disk). tarfile keeps the list; the members are unpacked from it.
    """
    declared = _Budget(config=config, archive_bytes=archive_bytes)
    for member in _iter_tar(tar):
        _check_tar_member(member, config, declared)
        if member.isreg():
            declared.add_bytes(member.name, member.size)
    return tar.getmembers()


def _archive_key(archive: Path, config: UnpackConfig) -> tuple[Any, ...]:
    st = archive.stat()
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, config.model_dump_json())


def _vetted_before(archive: Path, config: UnpackConfig) -> bool:
    """This very file was read ahead before and kept the limits: no need to read it twice.

    The agent unpacks the same cached archive (stored once by its digest, never
    rewritten) for every process of an app; the read-ahead of a compressed tar costs a
    whole decompression, so it is paid once per archive, not once per process. The
    members are checked again as they are unpacked all the same.
    """
    with _vetted_lock:
        return _archive_key(archive, config) in _vetted


def _remember_vetted(archive: Path, config: UnpackConfig) -> None:
    with _vetted_lock:
        _vetted[_archive_key(archive, config)] = None
        while len(_vetted) > VETTED_KEPT:
            _vetted.popitem(last=False)


def _iter_tar(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from tar
    except tarfile.TarError as exc:
        raise UnsafeArchive(f"corrupt archive: {exc}") from exc


def _check_link_allowed(rel: str, link_target: str | None, config: UnpackConfig) -> None:
    """A symbolic link may be unpacked: links are allowed, and this one stays inside.

    ``link_target`` None: not known yet (a zip keeps it in the member's data).
    """
    if not config.allow_links:
        raise UnsafeArchive(
            f"unsafe archive: symbolic link {rel!r} (links are refused; "
            "set unpack.allow_links to allow those that stay inside the app)"
        )
    if link_target is not None and not _link_stays_inside(rel, link_target):
        raise UnsafeArchive(f"unsafe archive: link {rel!r} -> {link_target!r} leaves the app")


def _make_link(dest: Path, rel: str, link_target: str, config: UnpackConfig) -> None:
    _check_link_allowed(rel, link_target, config)
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
    _check_zip_end_record(archive, config)
    with zipfile.ZipFile(archive) as zf:
        infos = _check_zip_directory(zf, config, budget.archive_bytes)
        for info in infos:
            rel = safe_member_path(info.filename)
            if not rel:
                continue
            dest = _check_parents(target, rel)
            unix_mode = info.external_attr >> 16
            if info.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            elif stat.S_ISLNK(unix_mode):
                with zf.open(info) as source:  # not zf.read(): the member may be a bomb
                    link_target = source.read(MAX_LINK_TARGET_BYTES)
                _make_link(dest, rel, link_target.decode("utf-8", "replace"), config)
            else:
                with zf.open(info) as source:
                    _write_file(dest, source, info.filename, budget, unix_mode)


def _check_zip_end_record(archive: Path, config: UnpackConfig) -> None:
    """Refuse a zip whose end record lists too many entries, before zipfile parses them
    all into memory (see ``zipdir``)."""
    listing = zipdir.read_listing(archive)
    if listing is not None and listing.entries > config.max_files:
        name = zipdir.name_at(archive, listing, config.max_files)
        where = name if name is not None else f"entry {config.max_files + 1}"
        raise _too_many_entries(config, where, listing.entries)


def _check_zip_directory(
    zf: zipfile.ZipFile, config: UnpackConfig, archive_bytes: int
) -> list[zipfile.ZipInfo]:
    """The central directory, checked whole before anything is written.

    It gives every member's name, type and uncompressed size up front: too many
    members, too many bytes, a bomb's ratio, an unsafe name or type is refused here.
    The sizes are declarations; the bytes are counted again as they are written.
    """
    infos = zf.infolist()
    declared = _Budget(config=config, archive_bytes=archive_bytes)
    for info in infos:
        rel = safe_member_path(info.filename)
        declared.add_file(info.filename, listed=len(infos))
        unix_mode = info.external_attr >> 16
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"cannot unpack {info.filename!r}: it is encrypted")
        if info.is_dir():
            continue
        if stat.S_ISLNK(unix_mode):
            _check_link_allowed(rel or info.filename, None, config)
        elif stat.S_IFMT(unix_mode) and not stat.S_ISREG(unix_mode):
            # Only the type bits tell: many tools store permissions alone (type 0).
            raise UnsafeArchive(f"unsafe archive: {info.filename!r} is a special file")
        else:
            declared.add_bytes(info.filename, info.file_size)
    return infos


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
