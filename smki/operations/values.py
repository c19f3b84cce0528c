"""Plain values a library caller may give in place of smki's types, converted once where they enter.

Every actor takes "supplier" for `RemotePartyRole.SUPPLIER`, hex text or an int for a serial, "R"
for `RepositoryStatus.REVOKED`; each is checked here, with the message the CLI gives, so that all
three actors refuse a bad value alike.
"""

from __future__ import annotations

from typing import Any, TypeVar

from smki.errors import BadInputError
from smki.profiles.serials import serial_hex
from smki.store.certificates import RepositoryStatus, normalised_serial_hex

Vocabulary = TypeVar("Vocabulary")


def parsed(value_type: type[Vocabulary], value: Any) -> Vocabulary:
    """A vocabulary value (RemotePartyRole, KeyUsage, DeviceType, EUI64, Environment...) from its plain
    form, refused by the type's own parser as the CLI refuses it; or the value itself, already typed."""
    return value if isinstance(value, value_type) else value_type.parse(value)


def serial_text(serial: int | str) -> str:
    """A serial number in the stored form (upper-case hex), from hex text (colons allowed) or an int."""
    if isinstance(serial, bool) or not isinstance(serial, (int, str)):
        raise BadInputError(f"serial: give hex text or an integer, not {type(serial).__name__}")
    if isinstance(serial, int):
        if serial < 0:
            raise BadInputError("serial: a serial number is not negative")
        return serial_hex(serial)
    return normalised_serial_hex(serial)


def repository_status(status: RepositoryStatus | str) -> RepositoryStatus:
    """A repository status from its code (P, I, N, E, R)."""
    try:
        return RepositoryStatus(status)
    except ValueError:
        codes = ", ".join(s.value for s in RepositoryStatus)
        raise BadInputError(f"status: {str(status)[:40]!r} is not a repository status ({codes})") from None
