"""Certificate serial numbers: 16 octets, positive, random (unique per issuer)."""

from __future__ import annotations

import secrets

SERIAL_NUMBER_SIZE = 16


def new_serial_number() -> int:
    """A random positive integer whose DER encoding is exactly 16 octets.

    The top bit is cleared (positive) and the next one set (no leading zero octet),
    leaving 126 random bits.
    """
    return new_serial_numbers(1)[0]


def new_serial_numbers(count: int) -> list[int]:
    """`count` serials as `new_serial_number` makes them, from one draw of the system's CSPRNG."""
    octets = bytearray(secrets.token_bytes(SERIAL_NUMBER_SIZE * count))
    serials = []
    for start in range(0, len(octets), SERIAL_NUMBER_SIZE):
        octets[start] = (octets[start] & 0x7F) | 0x40
        serials.append(int.from_bytes(octets[start:start + SERIAL_NUMBER_SIZE], "big"))
    return serials


def serial_hex(serial: int) -> str:
    """The serial as the repository shows it: uppercase hex, two digits an octet."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text
