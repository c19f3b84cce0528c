"""Where a PIN or passphrase comes from: never argv.

An operator names a *source*, not the secret:

- ``env:NAME``  read the environment variable NAME (the operator chose the name);
- ``fd:N``      read one line from the already-open file descriptor N (``3<pin.txt``);
- ``prompt``    ask on the terminal without echo.

The secret itself is never logged, never put in an error message and never written. Nor is
any part of the source as typed: an operator who types the PIN itself where its source was
due (``--pin-source 1234``, ``env:1234``, ``fd:1234``) must not find it echoed on the
screen or kept in the audit trail. Messages name the option the source came from instead.
"""

from __future__ import annotations

import enum
import getpass
import os
import re
from dataclasses import dataclass, field

from smki.errors import BadInputError

# ASCII only: str.isdigit() and \d accept other scripts' digits, which int() then reads.
_SOURCE = re.compile(r"(?P<kind>env|fd):(?P<where>.+)|(?P<prompt>prompt)")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FD_NUMBER = re.compile(r"[0-9]{1,9}")  # fits a C int: os.fdopen overflows beyond
SOURCE_FORMS = "env:NAME, fd:N or prompt"
# A secret read from a file descriptor is one line; a longer one (/dev/zero, a binary file)
# is a wrong descriptor, refused before it fills memory.
MAX_SECRET_CHARACTERS = 4096


class SourceKind(str, enum.Enum):
    ENV = "env"
    FD = "fd"
    PROMPT = "prompt"
    VALUE = "value"  # given by a library caller (tests, embedding); never parsed from text an operator typed


@dataclass(frozen=True)
class PinSource:
    """A place to read a secret from, as named by the operator with option `option`."""

    kind: str  # a SourceKind
    where: str = ""
    option: str = field(default="the secret source", compare=False)  # named in messages, e.g. "--pin-source"
    # The secret itself, for VALUE only: out of repr, so no traceback, --showlocals or log of the holder shows it.
    value: str = field(default="", repr=False, compare=False)

    @classmethod
    def given(cls, secret: str, option: str = "the PIN given") -> "PinSource":
        """A secret handed over by a library caller, kept out of every repr."""
        return cls(SourceKind.VALUE, option=option, value=secret)

    @classmethod
    def hidden(cls, pin: "PinSource | str | None") -> "PinSource | None":
        """A PIN as an object keeps it: a str becomes a `given` source (out of repr); others stay as they are."""
        return cls.given(pin) if isinstance(pin, str) else pin

    @classmethod
    def parse(cls, spec: str, option: str = "the secret source") -> "PinSource":
        """The source `spec` names; refused without repeating `spec` (it may be the secret itself)."""
        match = _SOURCE.fullmatch((spec or "").strip())
        if not match:
            raise BadInputError(f"{option} must be {SOURCE_FORMS}: a PIN itself is never accepted, nor a passphrase or key")
        if match["prompt"]:
            return cls(SourceKind.PROMPT, option=option)
        kind, where = SourceKind(match["kind"]), match["where"]
        if kind is SourceKind.FD and not _FD_NUMBER.fullmatch(where):
            raise BadInputError(f"{option}: fd: takes a file descriptor number (forms: {SOURCE_FORMS})")
        if kind is SourceKind.ENV and not _ENV_NAME.fullmatch(where):
            raise BadInputError(f"{option}: env: takes an environment variable name of letters, digits and _ (forms: {SOURCE_FORMS})")
        return cls(kind, where, option)

    def read(self, purpose: str = "PIN") -> str:
        """Return the secret. `purpose` names it in prompts and errors, e.g. 'user PIN for token ROOT-OCA'."""
        secret = self._read_raw(purpose)
        if not secret:
            raise BadInputError(f"{purpose} from {self.describe()} is empty")
        return secret

    def _read_raw(self, purpose: str) -> str:
        if self.kind == SourceKind.VALUE:
            return self.value
        if self.kind == SourceKind.ENV:
            value = os.environ.get(self.where)
            if value is None:
                raise BadInputError(f"{purpose}: the environment variable named by {self.option} is not set")
            return value
        if self.kind == SourceKind.FD:
            return self._read_fd(purpose)
        return getpass.getpass(f"{purpose}: ")

    def _read_fd(self, purpose: str) -> str:
        where = f"the file descriptor named by {self.option}"
        try:
            with os.fdopen(int(self.where), "r", closefd=False) as stream:
                line = stream.readline(MAX_SECRET_CHARACTERS + 1)
        except OSError as exc:
            raise BadInputError(f"{purpose}: cannot read {where}: {exc.strerror or type(exc).__name__}") from None
        except (UnicodeDecodeError, OverflowError):
            raise BadInputError(f"{purpose}: {where} does not hold a line of text") from None
        secret = line.rstrip("\r\n")
        if len(secret) > MAX_SECRET_CHARACTERS:
            raise BadInputError(f"{purpose}: {where} holds more than {MAX_SECRET_CHARACTERS} characters on its first line")
        return secret

    def describe(self) -> str:
        """Where the secret comes from, safe to print: the option, never the name or number typed."""
        return {SourceKind.PROMPT: "the terminal prompt", SourceKind.VALUE: "the value given"}.get(self.kind, self.option)
