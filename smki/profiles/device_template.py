"""Device Certificates at batch speed: the TBS assembled from precomputed DER pieces.

Within a batch everything but the serial, the subject key, its key identifier, the key usage
and the HardwareModuleName is the same for every certificate, so the fixed parts are encoded
once (with cryptography's own extension encoders) and each certificate is a concatenation.
`check_against_builder` proves, for each key usage and hwType before first use, that the
result is byte-identical to `device_certificate()`'s: the template is a faster way to write
the same profile, never a second profile. The template holds only bytes, so it can be sent
to worker processes.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from smki.errors import BadInputError
from smki.identifiers import EUI64, KeyUsage
from smki.profiles import der
from smki.profiles.certificates import (DeviceCertificateParams, _authority_key_identifier, _certificate_policies,
                                        _end_entity_key_usage)
from smki.profiles.extensions import hardware_module_name
from smki.profiles.validity import Validity

ECDSA_WITH_SHA256, P256_SPKI_PREFIX = der.ECDSA_WITH_SHA256_ALGORITHM, der.P256_SPKI_PREFIX
VERSION_3 = bytes.fromhex("a003020102")
EMPTY_SUBJECT = b"\x30\x00"
_CRITICAL = bytes.fromhex("0101ff")
_OID = {"KU": bytes.fromhex("0603551d0f"), "SKI": bytes.fromhex("0603551d0e"), "SAN": bytes.fromhex("0603551d11"),
        "CP": bytes.fromhex("0603551d20"), "AKI": bytes.fromhex("0603551d23")}


def _extension(name: str, value: bytes, critical: bool) -> bytes:
    return der.sequence(_OID[name], _CRITICAL if critical else b"", der.tlv(0x04, value))


def subject_key_identifier(point: bytes) -> bytes:
    """GBCS method 2 over the 65-octet point (as `keyids.key_identifier`, without a key object)."""
    low_60_bits = hashlib.sha1(point).digest()[-8:]
    return bytes([0x40 | (low_60_bits[0] & 0x0F)]) + low_60_bits[1:]


# A positive INTEGER whose DER contents are exactly 16 octets, with no leading zero octet.
_SIXTEEN_OCTET_SERIAL_BITS = range(121, 128)


@functools.lru_cache(maxsize=64)
def _san_prefix(hw_type_oid: str) -> bytes:
    """The subjectAltName value up to the 8-octet hwSerialNum, which ends it and has a fixed length,
    so every length before it is the same for every device: cryptography's encoding, cut once."""
    sample = x509.SubjectAlternativeName([hardware_module_name(hw_type_oid, EUI64(bytes(8)))]).public_bytes()
    return sample[:-8]


@dataclass(frozen=True)
class DeviceCertificateTemplate:
    """Everything a batch's certificates share, as DER."""

    issuer_and_validity: bytes  # signature algorithm, issuer, validity, empty subject
    policies_and_authority_key: bytes  # the CP and AKI extensions, which close the list
    key_usages: tuple[tuple[str, bytes], ...]  # (DS|KA, the KU extension)

    @classmethod
    def for_issuer(cls, issuer: x509.Certificate, policy_oid: str, validity: Validity) -> "DeviceCertificateTemplate":
        if validity.not_before_utc < issuer.not_valid_before_utc:  # as device_certificate(): devices outlive issuers
            raise BadInputError("a Device Certificate cannot start before its issuer's certificate")
        issuer_and_validity = (ECDSA_WITH_SHA256 + issuer.subject.public_bytes()
                               + der.sequence(der.time(validity.not_before_utc), der.time(validity.not_after_utc)) + EMPTY_SUBJECT)
        closing = (_extension("CP", _certificate_policies((policy_oid,)).public_bytes(), critical=True)
                   + _extension("AKI", _authority_key_identifier(issuer).public_bytes(), critical=False))
        usages = tuple((usage.value, _extension("KU", _end_entity_key_usage(usage).public_bytes(), critical=True)) for usage in KeyUsage)
        return cls(issuer_and_validity, closing, usages)

    def tbs_certificate(self, serial: int, point: bytes, device_id: bytes, hw_type_oid: str, key_usage: str) -> bytes:
        """The TBSCertificate DER for one device key (`point`: 04 || X || Y)."""
        if len(point) != 65 or point[0] != 0x04 or len(device_id) != 8:
            raise BadInputError("a device certificate needs a 65-octet uncompressed point and an 8-octet device ID")
        if serial.bit_length() in _SIXTEEN_OCTET_SERIAL_BITS:  # every serial smki makes: fixed length, so fixed pieces
            pieces = self._pieces(hw_type_oid, key_usage)
            return b"".join((pieces[0], serial.to_bytes(16, "big"), pieces[1], point, pieces[2], subject_key_identifier(point),
                             pieces[3], device_id, pieces[4]))
        return self._encode(serial, point, device_id, hw_type_oid, key_usage)

    def _pieces(self, hw_type_oid: str, key_usage: str) -> tuple[bytes, ...]:
        return _template_pieces(self, hw_type_oid, key_usage)

    def _encode(self, serial: int, point: bytes, device_id: bytes, hw_type_oid: str, key_usage: str) -> bytes:
        san = _san_prefix(hw_type_oid) + device_id
        extensions = der.sequence(
            dict(self.key_usages)[key_usage],
            _extension("SKI", der.tlv(0x04, subject_key_identifier(point)), critical=False),
            _extension("SAN", san, critical=True),
            self.policies_and_authority_key,
        )
        return der.sequence(VERSION_3, der.integer(serial), self.issuer_and_validity, P256_SPKI_PREFIX + point, der.tlv(0xA3, extensions))


@functools.lru_cache(maxsize=64)
def _template_pieces(template: DeviceCertificateTemplate, hw_type_oid: str, key_usage: str) -> tuple[bytes, ...]:
    """The TBS cut around its variable parts (serial, point, key identifier, device ID), made once
    per template, hwType and usage by encoding sentinels and cutting at them; every length is fixed."""
    serial, point, device_id = bytes([0x5A] * 16), b"\x04" + bytes([0xB7] * 64), bytes([0xC3] * 8)
    tbs = template._encode(int.from_bytes(serial, "big"), point, device_id, hw_type_oid, key_usage)
    pieces, cursor = [], 0
    for sentinel in (serial, point, subject_key_identifier(point), device_id):
        if tbs.count(sentinel) != 1:
            raise BadInputError("cannot cut the device certificate template around its variable parts")
        at = tbs.index(sentinel, cursor)
        pieces.append(tbs[cursor:at])
        cursor = at + len(sentinel)
    pieces.append(tbs[cursor:])
    return tuple(pieces)


def certificate_der(tbs: bytes, signature: bytes) -> bytes:
    """Certificate ::= SEQUENCE { tbsCertificate, ecdsa-with-SHA256, BIT STRING signature }"""
    return der.sequence(tbs, ECDSA_WITH_SHA256, der.tlv(0x03, b"\x00" + signature))


def check_against_builder(template: DeviceCertificateTemplate, params: DeviceCertificateParams, public_key: ec.EllipticCurvePublicKey,
                          issuer: x509.Certificate, draft: x509.Certificate) -> None:
    """Refuse the template unless it yields exactly the TBS that `device_certificate` gave `draft`."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    point = public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    ours = template.tbs_certificate(draft.serial_number, point, params.device_id.octets, params.hw_type_oid, params.key_usage.value)
    if ours != draft.tbs_certificate_bytes:
        raise BadInputError("the batch certificate template differs from the Device Certificate profile; nothing issued")

