"""Minimal DER encoding for the hot paths where a general encoder costs too much (CRLs).

Only definite-length, primitive-or-constructed TLVs with tags below 31: enough for the
CRL structures of RFC 5280, and checked by parsing the result with cryptography/asn1crypto.
"""

from __future__ import annotations

from datetime import datetime, timezone

# The DER every SMKI signature and key is made of, written once (smki-profiles.md: ecdsa-with-SHA256, P-256).
ECDSA_WITH_SHA256_OID = "1.2.840.10045.4.3.2"
ECDSA_WITH_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier, parameters absent
# SubjectPublicKeyInfo of an id-ecPublicKey prime256v1 key, up to the uncompressed point's 0x04 (not included).
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def tlv(tag: int, contents: bytes) -> bytes:
    return bytes((tag,)) + length(len(contents)) + contents


def sequence(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def integer(value: int) -> bytes:
    """INTEGER for a non-negative value (serials, versions, CRL numbers)."""
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def time(moment: datetime) -> bytes:
    """UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5)."""
    moment = moment.astimezone(timezone.utc)
    if moment.year < 2050:
        return tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())
