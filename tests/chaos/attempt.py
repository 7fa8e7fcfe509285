"""One attempt of a chaos-suite work item: holds the item's lock for its whole life (#17).

``attempt.py LOG_DIR KEY SECONDS``: takes a non-blocking exclusive ``flock`` on
``LOG_DIR/KEY.lock`` and appends ``start``/``end`` lines to ``LOG_DIR/attempts.log``;
if the lock is held, another attempt of the same item is running at this very moment:
it appends ``OVERLAP`` and exits 3. The kernel releases the lock when the process ends,
however it ends (a SIGKILL by the agent included), so the check is exact: two attempts
of one item alive at once always meet here. Standard library only (it is run by the
agents in their namespaces, with this interpreter, ``-I``).
"""

import fcntl
import os
import sys
import time


def line(log: str, word: str, key: str) -> None:
    """One ``write`` of one line to an ``O_APPEND`` file: lines from many processes never mix."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        where = os.readlink("/proc/self/ns/net")  # which agent's namespace: net:[inode]
        os.write(fd, f"{word} {key} {os.getpid()} {time.time():.3f} {where}\n".encode())
    finally:
        os.close(fd)


def main() -> int:
    log_dir, key, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    log = os.path.join(log_dir, "attempts.log")
    lock = os.open(os.path.join(log_dir, f"{key}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        line(log, "OVERLAP", key)
        return 3
    line(log, "start", key)
    time.sleep(seconds)  # the work: the lock is held all along
    line(log, "end", key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
