"""Where a PIN or passphrase comes from: never argv.

An operator names a *source*, not the secret:

- ``env:NAME``  read the environment variable NAME (the operator chose the name);
- ``fd:N``      read one line from the already-open file descriptor N (``3<pin.txt``);
- ``prompt``    ask on the terminal without echo.

The secret itself is never logged, never put in an error message and never written.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass

from smki.errors import BadInputError

MAX_SECRET_CHARACTERS = 4096  # a PIN or passphrase line; far longer is not one

_SOURCE = re.compile(r"(?P<kind>env|fd):(?P<where>.+)|(?P<prompt>prompt)")


@dataclass(frozen=True)
class PinSource:
    """A place to read a secret from, as named by the operator."""

    kind: str  # "env", "fd" or "prompt"
    where: str = ""

    @classmethod
    def parse(cls, spec: str) -> "PinSource":
        match = _SOURCE.fullmatch((spec or "").strip())
        if not match:
            raise BadInputError(
                f"PIN source {spec!r} must be env:NAME, fd:N or prompt (a PIN itself is never accepted)"
            )
        if match["prompt"]:
            return cls("prompt")
        kind, where = match["kind"], match["where"]
        if kind == "fd" and not where.isdigit():
            raise BadInputError(f"PIN source {spec!r}: fd: takes a file descriptor number")
        return cls(kind, where)

    def read(self, purpose: str = "PIN") -> str:
        """Return the secret. `purpose` names it in prompts and errors, e.g. 'user PIN for token ROOT-OCA'."""
        secret = self._read_raw(purpose)
        if not secret:
            raise BadInputError(f"{purpose} from {self.describe()} is empty")
        return secret

    def _read_raw(self, purpose: str) -> str:
        if self.kind == "env":
            value = os.environ.get(self.where)
            if value is None:
                raise BadInputError(f"{purpose}: environment variable {self.where} is not set")
            return value
        if self.kind == "fd":
            try:
                with os.fdopen(int(self.where), "r", closefd=False) as stream:
                    # Bounded: a descriptor on /dev/zero or a huge file must not be read forever.
                    line = stream.readline(MAX_SECRET_CHARACTERS + 1).rstrip("\r\n")
            except UnicodeDecodeError:
                raise BadInputError(f"{purpose}: file descriptor {self.where} does not hold UTF-8 text") from None
            except OSError as exc:
                raise BadInputError(f"{purpose}: cannot read file descriptor {self.where}: {exc.strerror}") from None
            if len(line) > MAX_SECRET_CHARACTERS:
                raise BadInputError(f"{purpose}: the line from file descriptor {self.where} is longer than {MAX_SECRET_CHARACTERS} characters")
            return line
        return getpass.getpass(f"{purpose}: ")

    def describe(self) -> str:
        """Where the secret comes from, safe to print."""
        return "the terminal prompt" if self.kind == "prompt" else f"{self.kind}:{self.where}"
