"""Logging for the `smki` command: configured once, by the top-level group, never at import.

Every module logs through `logging.getLogger(__name__)` (the `smki.*` loggers); this module
decides where that goes (stderr only, so `--json` on stdout stays clean) and how much of it:
warnings and errors by default, `-q` errors only, `-v` what long operations do (INFO), `-vv`
more detail (DEBUG). `SMKI_LOG_LEVEL` gives the level when no flag does.

Secrets never reach a log: no call site passes a PIN, passphrase, share or API key (the tests
run commands at DEBUG with known secrets and look for them in stderr). There is deliberately no
filter that masks secret values: it would have to keep every secret read (from a descriptor or a
prompt, held nowhere else) in one more place, for the life of the process, when the HSM layer
keeps even a checked PIN only as a salted HMAC.
"""

from __future__ import annotations

import enum
import logging
import os
import sys

from smki.errors import BadInputError

LOG_LEVEL_ENV = "SMKI_LOG_LEVEL"
_PACKAGE_LOGGER = "smki"


class LogLevel(enum.Enum):
    """The levels an operator chooses from (by flag or by SMKI_LOG_LEVEL), lowest first."""

    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARNING = logging.WARNING
    ERROR = logging.ERROR

    @classmethod
    def from_environment(cls) -> "LogLevel | None":
        """SMKI_LOG_LEVEL's level (None when unset or empty); a value that is none of them is bad input (exit 3)."""
        value = os.environ.get(LOG_LEVEL_ENV, "").strip()
        if not value:
            return None
        try:
            return cls[value.upper()]
        except KeyError:
            # The value is not repeated: it is an environment value, and one line should say what to do.
            raise BadInputError(f"{LOG_LEVEL_ENV}: give one of {', '.join(level.name.lower() for level in cls)}") from None


def chosen_level(verbose: int, quiet: bool) -> LogLevel:
    """The level the flags choose; without a flag, SMKI_LOG_LEVEL's; otherwise warnings and errors."""
    if quiet and verbose:
        from click import UsageError

        raise UsageError("give --quiet or --verbose, not both")
    if quiet:
        return LogLevel.ERROR
    if verbose:
        return LogLevel.INFO if verbose == 1 else LogLevel.DEBUG
    return LogLevel.from_environment() or LogLevel.WARNING


class _Formatter(logging.Formatter):
    """`smki: info: message` (as `smki: error: ...`); at DEBUG also the time and the module that logged."""

    def __init__(self, detailed: bool) -> None:
        super().__init__("%(asctime)s smki: %(levelname_lower)s: [%(name)s] %(message)s" if detailed
                         else "smki: %(levelname_lower)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        record.levelname_lower = record.levelname.lower()
        return super().format(record)


def configure_logging(level: LogLevel) -> None:
    """Send the smki loggers' records at `level` and above to stderr (once per process: a second call
    replaces the handler, so a test that runs the group twice in one process does not log twice)."""
    logger = logging.getLogger(_PACKAGE_LOGGER)
    for handler in [h for h in logger.handlers if getattr(h, "_smki_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._smki_cli = True
    handler.setFormatter(_Formatter(detailed=level is LogLevel.DEBUG))
    logger.addHandler(handler)
    logger.setLevel(level.value)
    logger.propagate = False
