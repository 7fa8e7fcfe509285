"""What a shared secret (``auth_token``, ``--auth-token-file``) must be to guard a port off loopback.

Off loopback anyone who can reach the port may guess: a secret shorter than 32 bytes is
refused at start, as no secret at all is. A file holding the secret that group or others
may read gives it away to every account on the host: refused off loopback, warned about
on loopback (where those accounts can reach the port anyway).
"""

from __future__ import annotations

import stat
from pathlib import Path

MIN_SECRET_BYTES = 32


def weak_secret(host: str, secret: str | None, *, loopback: bool) -> str | None:
    """Why ``secret`` cannot guard ``host``, or ``None`` when it can (or loopback, or none)."""
    if loopback or secret is None:
        return None
    size = len(secret.encode())
    if size >= MIN_SECRET_BYTES:
        return None
    return (
        f"refusing to listen on {host}: the shared secret is {size} bytes, off loopback it must be "
        f"at least {MIN_SECRET_BYTES} bytes (make one with: head -c 32 /dev/urandom | base64 > FILE)"
    )


def open_secret_file(path: Path) -> str | None:
    """Why the secret file ``path`` is readable by others, or ``None`` when only its owner can."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None  # reading it will say why
    if not mode & 0o077:
        return None
    return f"the secret file {path} can be read by others (mode {mode:04o}): run `chmod 600 {path}`"
