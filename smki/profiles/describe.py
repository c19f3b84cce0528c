"""Reading an SMKI certificate back: its type and the identifiers records and searches use."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from smki.identifiers import CertificateType
from smki.profiles.extensions import ID_ON_HARDWARE_MODULE_NAME, parse_hardware_module_name


@dataclass(frozen=True)
class CertificateFacts:
    certificate_type: CertificateType  # never CROSS_CERTIFICATE: a cross-certificate is described as the issuing-ca it looks like
    subject_key_id: bytes
    authority_key_id: bytes | None
    entity_id: bytes | None  # organisation uniqueIdentifier or device hwSerialNum (8 octets)
    role_ou: str | None
    key_usage: str | None  # DS or KA
    hw_type_oid: str | None


def _extension(certificate: x509.Certificate, extension_class):
    try:
        return certificate.extensions.get_extension_for_class(extension_class).value
    except x509.ExtensionNotFound:
        return None


def describe(certificate: x509.Certificate) -> CertificateFacts:
    ski = _extension(certificate, x509.SubjectKeyIdentifier)
    aki = _extension(certificate, x509.AuthorityKeyIdentifier)
    constraints = _extension(certificate, x509.BasicConstraints)
    usage = _extension(certificate, x509.KeyUsage)
    role = next((a.value for a in certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)), None)
    entity_id = hw_type = None
    key_usage = None
    if usage is not None and not usage.key_cert_sign:
        key_usage = "DS" if usage.digital_signature else "KA" if usage.key_agreement else None
    if constraints is not None and constraints.ca:
        certificate_type = CertificateType.ROOT if aki is None or (ski is not None and aki.key_identifier == ski.digest) else CertificateType.ISSUING_CA
    elif len(certificate.subject) == 0:
        certificate_type = CertificateType.DEVICE
        san = _extension(certificate, x509.SubjectAlternativeName)
        for name in san or []:
            if isinstance(name, x509.OtherName) and name.type_id == ID_ON_HARDWARE_MODULE_NAME:
                hw_type, entity_id = parse_hardware_module_name(name)
    else:
        certificate_type = CertificateType.ORGANISATION
        unique = certificate.subject.get_attributes_for_oid(NameOID.X500_UNIQUE_IDENTIFIER)
        if unique and isinstance(unique[0].value, bytes) and unique[0].value[:1] == b"\x00":
            entity_id = unique[0].value[1:]  # BIT STRING contents: unused-bits octet, then the EUI-64
    return CertificateFacts(certificate_type, ski.digest if ski else b"", aki.key_identifier if aki else None, entity_id,
                            role if certificate_type is CertificateType.ORGANISATION else None, key_usage, hw_type)
