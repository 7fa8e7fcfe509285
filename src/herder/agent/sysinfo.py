"""The host's figures for ``GET /info`` (and, later, the manager's worker reports).

psutil is imported on first use, not at agent start. CPU percent is measured between
two calls; the first call measures over a short interval in a thread so that it is
meaningful and does not block the event loop.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from herder import __version__

# Long enough for a meaningful first CPU figure, short enough for an API call.
FIRST_CPU_SAMPLE_S = 0.1


class SysInfo:
    """Collects host figures; one instance per agent, so CPU deltas span its calls."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._started = time.monotonic()
        self._primed = False

    async def collect(self, processes: int) -> dict[str, Any]:
        import psutil

        if not self._primed:
            cpu = await asyncio.to_thread(psutil.cpu_percent, FIRST_CPU_SAMPLE_S)
            self._primed = True
        else:
            cpu = psutil.cpu_percent(None)
        uname = platform.uname()
        return {
            "hostname": socket.gethostname(),
            "system": uname.system,
            "release": uname.release,
            "architecture": uname.machine,
            "cpus": os.cpu_count() or 1,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpu_percent": cpu,
            "memory_percent": psutil.virtual_memory().percent,
            "disk_percent": psutil.disk_usage(str(self._data_dir)).percent,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "processes": processes,
        }
