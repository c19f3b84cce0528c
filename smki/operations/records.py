"""Issued-certificate records made from the certificate itself, with the policy that allowed it."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.profiles.describe import describe
from smki.profiles.serials import serial_hex
from smki.store.certificates import CertificateRecord


def record_for(certificate: x509.Certificate, *, status: str = "I", request_sha256: str | None = None,
               policy_identity: tuple[str, str, str] | None = None) -> CertificateRecord:
    """A store record for `certificate`; `policy_identity` is (name, version, sha256) of the policy that allowed it."""
    facts = describe(certificate)
    policy_name, policy_version, policy_sha256 = policy_identity or (None, None, None)
    return CertificateRecord(
        serial_hex=serial_hex(certificate.serial_number),
        issuer_key_id=(facts.authority_key_id or facts.subject_key_id).hex().upper(),
        certificate_type=facts.certificate_type,
        subject_key_id=facts.subject_key_id.hex().upper(),
        status=status,
        not_before=certificate.not_valid_before_utc.isoformat(),
        not_after=certificate.not_valid_after_utc.isoformat(),
        der=certificate.public_bytes(Encoding.DER),
        entity_id=facts.entity_id.hex().upper() if facts.entity_id else None,
        role=facts.role_ou,
        key_usage=facts.key_usage,
        policy_name=policy_name, policy_version=policy_version, policy_sha256=policy_sha256,
        request_sha256=request_sha256,
    )
