"""Key identifiers: RFC 5280 section 4.2.1.2 method (2), 8 octets, as every SMKI certificate uses."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_IDENTIFIER_SIZE = 8


def key_identifier(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """0100 then the least-significant 60 bits of SHA-1 of the 65-byte public point."""
    point = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    low_60_bits = hashlib.sha1(point).digest()[-KEY_IDENTIFIER_SIZE:]
    return bytes([0x40 | (low_60_bits[0] & 0x0F)]) + low_60_bits[1:]
