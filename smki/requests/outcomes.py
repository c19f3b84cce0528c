"""Per-request outcome codes, in the style of the SMKI service (`CR:`, `FM:`, `IN:`, `CA:`).

A `RequestRejected` carries the code and a one-line reason; batch issuance records both per
CSR, and the single-request commands print them.
"""

from __future__ import annotations

import enum

from smki.errors import BadInputError


class Status(enum.Enum):
    SUCCESS = "success"
    ERROR = "error"
    ANOMALY = "anomaly"
    INELIGIBLE = "ineligible"


class Outcome(enum.Enum):
    """(code, status). FM: the request cannot be decoded; CR: its contents break the rules."""

    NOT_DECODABLE = ("FM:0001", Status.ERROR)
    NOT_PKCS10 = ("FM:0002", Status.ERROR)
    WRONG_VERSION = ("CR:0001", Status.ERROR)
    WRONG_SIGNATURE_ALGORITHM = ("CR:0002", Status.ERROR)
    BAD_SIGNATURE = ("CR:0003", Status.ERROR)
    WRONG_KEY = ("CR:0004", Status.ERROR)
    WRONG_SUBJECT = ("CR:0005", Status.ERROR)
    WRONG_KEY_USAGE = ("CR:0006", Status.ERROR)
    WRONG_SUBJECT_ALT_NAME = ("CR:0007", Status.ERROR)
    MALFORMED_IDENTIFIER = ("CR:0008", Status.ERROR)
    UNEXPECTED_EXTENSION = ("CR:0009", Status.ERROR)
    DUPLICATE = ("CR:9999", Status.ERROR)
    INELIGIBLE = ("IN:0001", Status.INELIGIBLE)
    CA_ERROR = ("CA:0001", Status.ANOMALY)

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def status(self) -> Status:
        return self.value[1]

    @classmethod
    def of_code(cls, code: str) -> "Outcome | None":
        """The outcome a recorded code stands for (None for SUCCESS, or a code no outcome has)."""
        return next((outcome for outcome in cls if outcome.code == code), None)


def describe_exception(exc: BaseException, limit: int = 200) -> str:
    """`Type: message` on one line and of bounded length: foreign libraries' messages run over
    several lines (asn1crypto adds `while parsing ...` lines) and may quote the input at length."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


DUPLICATE_REASON = "Request for duplicate certificate not permitted (the key is already certified)"


class RequestRejected(BadInputError):
    """A request that cannot be honoured; `str()` is `<code> <reason>`."""

    def __init__(self, outcome: Outcome, reason: str, where: str = "") -> None:
        reason = " ".join(reason.split())  # one line, whatever a library's message it quotes (asn1crypto's run over several)
        self.outcome, self.reason, self.where = outcome, reason, where
        super().__init__(f"{where + ': ' if where else ''}{outcome.code} {reason}")
