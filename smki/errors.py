"""Errors an operator can cause, and the exit codes scripts can rely on.

Every error that reaches the CLI as an `SmkiError` is printed as one line (no traceback)
and ends the process with the error's exit code. Messages name what is wrong and where;
they never carry a PIN, a key share or any other secret.
"""

from __future__ import annotations

# Exit codes: documented in the README; scripts depend on them, so never renumber.
EXIT_OK = 0
EXIT_REFUSED = 1  # a check said no: lint errors, verification failure, policy refusal
EXIT_USAGE = 2  # click's own code for a malformed command line
EXIT_BAD_INPUT = 3  # an input file or value is malformed
EXIT_HSM = 4  # the PKCS#11 module, token, PIN or key is not as required
EXIT_CONFLICT = 5  # the operation would overwrite or contradict existing state
EXIT_INTERNAL = 70  # a bug (sysexits EX_SOFTWARE): an exception that is no SmkiError, shown as one line


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
