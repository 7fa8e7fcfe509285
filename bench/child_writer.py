"""The child of benchmark 5: writes N fixed-width lines to stdout, then its own time to stderr.

``line`` mode writes one line per ``write`` call (run it with ``python -u``: one
system call per line, like a program that flushes every line); ``bulk`` mode writes
blocks of 4096 lines with ``os.write``. Every line is 28 bytes, and the last line,
``<N-1> the quick brown fox``, appears nowhere else, so a watcher knows the output is
complete when a log file ends with it. On stderr, at the end, the child says when it
began writing (``child-start``, ``time.monotonic()``: one clock for every process on
Linux, so the benchmark can time from there and leave interpreter start-up out) and
how long its writes took (``child-elapsed``): that shows whether the pipe to its
supervisor slowed it down.

Standard library only, no site (``-S``): its start-up is the same under every daemon.
"""

from __future__ import annotations

import os
import sys
import time

TEXT = "the quick brown fox"
BLOCK_LINES = 4096


def line_text(i: int) -> str:
    return f"{i:07d} {TEXT}\n"


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    mode, count = sys.argv[1], int(sys.argv[2])
    if mode == "line":
        write = sys.stdout.write
        t0 = time.monotonic()
        for i in range(count - 1):
            write(f"{i:07d} {TEXT}\n")
        write(line_text(count - 1))
        sys.stdout.flush()
    elif mode == "bulk":
        # Numbered modulo the block so the blocks are built once; only the very last
        # line carries count - 1, which is beyond any block number.
        block = "".join(line_text(i) for i in range(BLOCK_LINES)).encode()
        full, rest = divmod(count - 1, BLOCK_LINES)
        tail = block[: rest * len(line_text(0))] + line_text(count - 1).encode()
        t0 = time.monotonic()
        for _ in range(full):
            write_all(1, block)
        write_all(1, tail)
    else:
        raise SystemExit(f"unknown mode {mode!r}: line or bulk")
    elapsed = time.monotonic() - t0
    sys.stderr.write(f"child-start {t0:.6f}\nchild-elapsed {elapsed:.6f}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    main()
