"""Certificate serial numbers: 16 octets, positive, random (unique per issuer)."""

from __future__ import annotations

import secrets

SERIAL_NUMBER_SIZE = 16


def new_serial_number() -> int:
    """A random positive integer whose DER encoding is exactly 16 octets.

    The top bit is cleared (positive) and the next one set (no leading zero octet),
    leaving 126 random bits.
    """
    octets = bytearray(secrets.token_bytes(SERIAL_NUMBER_SIZE))
    octets[0] = (octets[0] & 0x7F) | 0x40
    return int.from_bytes(octets, "big")


def serial_hex(serial: int) -> str:
    """The serial as the repository shows it: uppercase hex, two digits an octet."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text
