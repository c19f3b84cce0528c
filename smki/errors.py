"""Errors an operator can cause, and the exit codes scripts can rely on.

Every error that reaches the CLI as an `SmkiError` is printed as one line (no traceback)
and ends the process with the error's exit code. Messages name what is wrong and where;
they never carry a PIN, a key share or any other secret.
"""

from __future__ import annotations

from enum import Enum

# Exit codes: documented in the README; scripts depend on them, so never renumber.
EXIT_OK = 0
EXIT_REFUSED = 1  # a check said no: lint errors, verification failure, policy refusal
EXIT_USAGE = 2  # click's own code for a malformed command line
EXIT_BAD_INPUT = 3  # an input file or value is malformed
EXIT_HSM = 4  # the PKCS#11 module, token, PIN or key is not as required
EXIT_CONFLICT = 5  # the operation would overwrite or contradict existing state
EXIT_INTERNAL = 70  # a bug (sysexits EX_SOFTWARE): an exception that is no SmkiError, shown as one line
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report a process SIGINT ended)


class SmkiError(Exception):
    """An error an operator can act on. The message is one line."""

    exit_code = EXIT_REFUSED


class BadInputError(SmkiError, ValueError):
    """Malformed input: an identifier, a file, a request."""

    exit_code = EXIT_BAD_INPUT


class HsmError(SmkiError):
    """The PKCS#11 module, token, PIN or key is not as required."""

    exit_code = EXIT_HSM


class ConflictError(SmkiError):
    """The operation would overwrite or contradict existing state."""

    exit_code = EXIT_CONFLICT


class RefusedError(SmkiError):
    """A check refused the operation (policy, lint, verification)."""

    exit_code = EXIT_REFUSED


class StoreFault(str, Enum):
    """What kind of failure a database reported, whichever engine it came from (smki.store maps them)."""

    DUPLICATE_KEY = "duplicate key"  # a primary key or unique index already holds the value
    CONSTRAINT = "constraint"  # another integrity rule: foreign key, NOT NULL, CHECK
    READ_ONLY = "read-only"  # a write on a database opened (or stored) read-only
    UNAVAILABLE = "unavailable"  # cannot open or reach it: permissions, I/O, a lost connection
    BUSY = "busy"  # another writer held it longer than the wait allowed
    STATEMENT = "statement"  # the statement or the file itself: no such table, not a database


class StoreError(SmkiError):
    """A database failure, mapped once at the store boundary (smki.store.connection, smki.store.postgres).

    The message is one line naming the database (a PostgreSQL URL without its password); the driver's
    own exception is the `__cause__`. Not an operator's input error, so it keeps the exit code an
    unexpected failure always had."""

    exit_code = EXIT_INTERNAL

    def __init__(self, where: str, detail: str, fault: StoreFault) -> None:
        super().__init__(f"{where}: {detail}")
        self.where, self.detail, self.fault = where, detail, fault


class StoreConflictError(ConflictError, StoreError):
    """A write the database refused because it contradicts what it holds (a repeated key, a broken reference)."""
