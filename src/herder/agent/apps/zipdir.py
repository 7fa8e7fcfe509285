"""A zip's entry count, read from its end record before its directory is parsed.

``zipfile.ZipFile`` parses the whole central directory into objects as it opens the
archive: a few hundred bytes of memory per entry, for as many entries as the directory
holds (a 512 MiB zip may list ten million tiny ones). The end record at the archive's
tail says how many there are, in a few bytes; ``archive.py`` reads it first and refuses
an archive over ``unpack.max_files`` before ``zipfile`` builds anything, and before
anything is written. When the count is over the limit, the name of the first entry past
it is read by walking the directory's fixed-size headers up to it, so the refusal names
an entry as every other refusal does.

Anything unexpected here (no end record, a zip64 record where none is found) answers
``None``: ``zipfile`` then opens the archive as before and says what is wrong with it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# End of central directory record: signature, 4 disk and count fields, size, offset, comment length.
_END = struct.Struct("<4s4H2LH")
_END_SIG = b"PK\x05\x06"
_MAX_COMMENT = 0xFFFF
# Zip64: the locator (just before the end record), and the zip64 end record before it.
_LOCATOR64 = struct.Struct("<4sLQL")
_LOCATOR64_SIG = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_SIG = b"PK\x06\x06"
# A central directory header: 46 bytes, then its name, extra field and comment.
_HEADER_SIZE = 46
_HEADER_SIG = b"PK\x01\x02"
_UTF8_FLAG = 0x800


@dataclass(frozen=True, slots=True)
class ZipListing:
    """What the end record declares: how many entries, and where their directory starts."""

    entries: int
    directory_at: int


def read_listing(path: Path) -> ZipListing | None:
    """The entry count from the end record of the zip at ``path`` (None if not found)."""
    with open(path, "rb") as fh:
        size = fh.seek(0, 2)
        tail_len = min(size, _END.size + _MAX_COMMENT)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
        at = tail.rfind(_END_SIG)
        if at < 0 or at + _END.size > len(tail):
            return None
        _, _, _, _, entries, directory_size, directory_offset, _ = _END.unpack_from(tail, at)
        end_at = size - tail_len + at
        zip64 = _read_listing64(fh, end_at)
        if zip64 is not None:  # a zip64 end record comes first (zipfile looks for it always)
            return zip64
        if entries == 0xFFFF or directory_size == 0xFFFFFFFF or directory_offset == 0xFFFFFFFF:
            return None  # the real values are in a zip64 record that is not there
        # Measured back from the end record, as zipfile does: data may precede the zip.
        return ZipListing(entries, end_at - directory_size)


def _read_listing64(fh: BinaryIO, end_at: int) -> ZipListing | None:
    """From the zip64 end record and its locator, just before the end record, if there."""
    record_at = end_at - _LOCATOR64.size - _END64.size
    if record_at < 0:
        return None
    fh.seek(record_at)
    record = fh.read(_END64.size + _LOCATOR64.size)
    if len(record) != _END64.size + _LOCATOR64.size or record[_END64.size :][:4] != _LOCATOR64_SIG:
        return None
    fields = _END64.unpack_from(record)
    if fields[0] != _END64_SIG:
        return None
    entries, directory_size = fields[7], fields[8]
    return ZipListing(entries, record_at - directory_size)


def name_at(path: Path, listing: ZipListing, index: int) -> str | None:
    """The name of entry ``index`` (from 0) in the directory, walking the headers before it."""
    with open(path, "rb") as fh:
        fh.seek(max(listing.directory_at, 0))
        for i in range(index + 1):
            header = fh.read(_HEADER_SIZE)
            if len(header) != _HEADER_SIZE or header[:4] != _HEADER_SIG:
                return None
            (flags,) = struct.unpack_from("<H", header, 8)
            name_len, extra_len, comment_len = struct.unpack_from("<3H", header, 28)
            if i < index:
                fh.seek(name_len + extra_len + comment_len, 1)
                continue
            raw = fh.read(name_len)
            return raw.decode("utf-8" if flags & _UTF8_FLAG else "cp437", "replace")
    return None
