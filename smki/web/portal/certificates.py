"""A certificate as the portal shows it: its decoded fields, for the templates (which escape every value)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.profiles.describe import describe

_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
               "key_cert_sign", "crl_sign")


@dataclass(frozen=True)
class ShownCertificate:
    serial_hex: str
    certificate_type: str
    subject: str  # RFC 4514, or "(empty)" for a Device Certificate
    issuer: str
    hardware_module_name: str | None  # "hwType OID / hwSerialNum" of a Device Certificate
    entity_id: str | None
    role: str | None
    key_usage: str
    policies: tuple[str, ...]
    not_before: str
    not_after: str
    subject_key_id: str
    authority_key_id: str | None
    pem: str
    der_base64: str

    @property
    def pem_data_url(self) -> str:
        return "data:application/x-pem-file;base64," + base64.b64encode(self.pem.encode()).decode()

    @property
    def der_data_url(self) -> str:
        return "data:application/pkix-cert;base64," + self.der_base64


def shown(der: bytes) -> ShownCertificate:
    certificate = x509.load_der_x509_certificate(der)
    facts = describe(certificate)
    return ShownCertificate(
        serial_hex=f"{certificate.serial_number:X}", certificate_type=facts.certificate_type.value,
        subject=certificate.subject.rfc4514_string() or "(empty)", issuer=certificate.issuer.rfc4514_string(),
        hardware_module_name=f"{facts.hw_type_oid} / {facts.entity_id.hex().upper()}" if facts.hw_type_oid and facts.entity_id else None,
        entity_id=facts.entity_id.hex().upper() if facts.entity_id else None, role=facts.role_ou,
        key_usage=_key_usage(certificate), policies=_policies(certificate),
        not_before=certificate.not_valid_before_utc.isoformat(), not_after=certificate.not_valid_after_utc.isoformat(),
        subject_key_id=facts.subject_key_id.hex().upper(),
        authority_key_id=facts.authority_key_id.hex().upper() if facts.authority_key_id else None,
        pem=certificate.public_bytes(Encoding.PEM).decode(), der_base64=base64.b64encode(der).decode())


def _key_usage(certificate: x509.Certificate) -> str:
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "(none)"
    return ", ".join(name.replace("_", " ") for name in _KEY_USAGES if getattr(usage, name))


def _policies(certificate: x509.Certificate) -> tuple[str, ...]:
    try:
        policies = certificate.extensions.get_extension_for_class(x509.CertificatePolicies).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(policy.policy_identifier.dotted_string for policy in policies)
