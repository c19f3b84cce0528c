"""The access log: one line per answered request, to a file or stderr.

It never holds a secret: the path without its query string (where `apikey` travels), no header
values (X-API-Key), no body. A line: time, client address, subscriber (or -), method, path, status,
bytes, milliseconds.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import datetime, timezone

from smki.web.settings import STDERR

LOGGER = "smki.web.access"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # ASCII controls and DEL
FLUSH_INTERVAL = 0.2  # seconds a line may wait in the file's buffer (the worker's app flushes it on this beat)


class BufferedFileHandler(logging.FileHandler):
    """A file handler that leaves its lines in the file's buffer: a write() and flush() per request cost a tenth of a
    worker's event loop under load. `flush_buffer()` writes them out (every FLUSH_INTERVAL, and at close)."""

    def flush(self) -> None:  # StreamHandler.emit calls it after every line
        pass

    def flush_buffer(self) -> None:
        super().flush()

    def close(self) -> None:
        self.flush_buffer()
        super().close()


def configure(destination: str | None) -> logging.Logger:
    """The access logger, writing to `destination` (a file, STDERR) or nowhere (None)."""
    logger = logging.getLogger(LOGGER)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    if destination is None:
        logger.addHandler(logging.NullHandler())
        return logger
    handler = logging.StreamHandler(sys.stderr) if destination == STDERR else BufferedFileHandler(destination, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return logger


def line(address: str, subscriber: str | None, method: str, path: str, status: int, size: int | None, milliseconds: float) -> str:
    when = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    safe = printable(path).replace(" ", "%20")  # the path decoded (%20 arrives as a space): one field of the line
    return f"{when} {address} {subscriber or '-'} {method} {safe} {status} {size if size is not None else '-'} {milliseconds:.1f}"


def printable(text: object) -> str:
    """`text` for a log line: non-ASCII backslash-escaped, every ASCII control character %-escaped, so that a value a
    client chose (a decoded path, an exception's message) forges no line (a CR is a line break to many readers,
    Python's universal newlines among them) and puts no terminal escape before whoever reads the log."""
    return _CONTROL.sub(lambda match: f"%{ord(match.group()):02X}", str(text).encode("ascii", "backslashreplace").decode())


def record(address: str, subscriber: str | None, method: str, path: str, status: int, size: int | None, milliseconds: float) -> None:
    logger = logging.getLogger(LOGGER)
    if logger.isEnabledFor(logging.INFO):
        logger.info(line(address, subscriber, method, path, status, size, milliseconds))


def flush() -> None:
    """Write out the lines a BufferedFileHandler holds (the app calls it every FLUSH_INTERVAL and at shutdown)."""
    for handler in logging.getLogger(LOGGER).handlers:
        if isinstance(handler, BufferedFileHandler):
            handler.flush_buffer()
