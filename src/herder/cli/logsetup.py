"""Logging for every ``herder`` command: to stderr, as text or as JSON lines."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message`` (+ ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def json_logging() -> bool:
    """True when the log records go out as JSON lines (``--log-format json``)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def banner(text: str, logger: logging.Logger) -> None:
    """Tell a person at a terminal where a daemon listens, in plain lines on stderr.

    With ``--log-format json`` a log collector reads stderr, and a plain line would be
    the one line it cannot parse (#16): the banner is then one INFO record of ``logger``.
    """
    if json_logging():
        logger.info("%s", " ".join(line.strip() for line in text.splitlines()))
    else:
        print(text, file=sys.stderr, flush=True)


def setup_logging(level: str, fmt: str) -> None:
    """Send every log record at ``level`` or above to stderr in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
