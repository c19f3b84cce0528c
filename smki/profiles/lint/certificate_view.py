"""A raw view of a certificate's DER for the lint rules: what is encoded, not what a parser infers.

asn1crypto keeps the original bytes, so rules can see NULL parameters, string types, BIT
STRING versus OCTET STRING, criticality, extension order and compressed points.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property

from asn1crypto import x509 as asn1_x509

from smki.identifiers import CertificateType
from smki.profiles import der
from smki.profiles.names import raw_attributes

ECDSA_WITH_SHA256 = der.ECDSA_WITH_SHA256_OID
KU, BC, CP, SKI, AKI, SAN = "2.5.29.15", "2.5.29.19", "2.5.29.32", "2.5.29.14", "2.5.29.35", "2.5.29.17"
CONTINGENCY = "1.3.6.1.5.5.7.1.20"
CERTIFICATE_TYPES = tuple(certificate_type.value for certificate_type in CertificateType)


@dataclass(frozen=True)
class Extension:
    oid: str
    critical: bool
    value: bytes  # the extnValue OCTET STRING's contents (the extension's DER)


class CertificateView:
    def __init__(self, der: bytes, certificate_type: str | None = None, expected_policy_oids: tuple[str, ...] = (),
                 issuer_subject_der: bytes | None = None, policy_roles: tuple[str, ...] | None = None) -> None:
        self.der = der
        self.certificate = asn1_x509.Certificate.load(der, strict=True)
        self.tbs = self.certificate["tbs_certificate"]
        for field in ("version", "serial_number", "signature", "issuer", "validity", "subject_public_key_info", "extensions"):
            self.tbs[field].native  # parse now: a malformed structure fails here, not inside a rule
        self.subject_attributes = [attribute for rdn in raw_attributes(self.tbs["subject"].dump()) for attribute in rdn]
        self.expected_policy_oids = expected_policy_oids
        self.issuer_subject_der = issuer_subject_der
        self.policy_roles = policy_roles  # OU codes of the roles some policy names; None: not known, not checked
        self.certificate_type = certificate_type or self.detected_type

    @cached_property
    def extensions(self) -> list[Extension]:
        return [Extension(e["extn_id"].dotted, bool(e["critical"].native), e["extn_value"].contents) for e in self.tbs["extensions"]]

    def extension(self, oid: str) -> Extension | None:
        found = [e for e in self.extensions if e.oid == oid]
        return found[0] if found else None

    @cached_property
    def issuer_attributes(self) -> list[tuple[str, int, bytes]]:
        return [attribute for rdn in raw_attributes(self.tbs["issuer"].dump()) for attribute in rdn]

    @cached_property
    def point(self) -> bytes:
        return self.tbs["subject_public_key_info"]["public_key"].contents[1:]

    @cached_property
    def basic_constraints_ca(self) -> bool:
        extension = self.extension(BC)
        return bool(extension and asn1_x509.BasicConstraints.load(extension.value).native["ca"])

    @cached_property
    def self_issued(self) -> bool:
        return self.tbs["issuer"].dump() == self.tbs["subject"].dump()

    @property
    def detected_type(self) -> str:
        if self.basic_constraints_ca:
            if self.self_issued and self.extension(AKI) is None:
                return CertificateType.ROOT
            # At a root re-key the old root certifies the new root's key under the root's own name.
            return CertificateType.CROSS_CERTIFICATE if self.self_issued else CertificateType.ISSUING_CA
        if self.tbs["subject"].dump() == b"\x30\x00" or self.extension(SAN) is not None:
            return CertificateType.DEVICE
        return CertificateType.ORGANISATION

    @property
    def is_end_entity(self) -> bool:
        return self.certificate_type in (CertificateType.ORGANISATION, CertificateType.DEVICE)

    def method_2_key_identifier(self) -> bytes:
        low = hashlib.sha1(self.point).digest()[-8:]
        return bytes([0x40 | (low[0] & 0x0F)]) + low[1:]
