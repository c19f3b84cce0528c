"""Path validation for SMKI: from a leaf to a trust anchor by key identifiers, never by name alone.

Each step finds the issuer whose subjectKeyIdentifier equals the certificate's
authorityKeyIdentifier (the test PKI reuses issuer names across keys), then checks the issuer
name bytes, the ecdsa-with-SHA256 signature, the issuer's basicConstraints, keyUsage and
pathLen, each certificate's validity at the chosen time, the critical certificatePolicies and
its expected OID, and revocation against any CRL or ARL given whose AKI names the issuer and
whose signature and update window hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

MAX_PATH_LENGTH = 4


@dataclass(frozen=True)
class PathResult:
    valid: bool
    chain: list[x509.Certificate] = field(default_factory=list)
    reason: str = ""
    revocation_checked: list[str] = field(default_factory=list)


def _extension(certificate, extension_class):
    try:
        return certificate.extensions.get_extension_for_class(extension_class)
    except x509.ExtensionNotFound:
        return None


def _key_id(certificate, extension_class) -> bytes | None:
    found = _extension(certificate, extension_class)
    if found is None:
        return None
    return found.value.digest if extension_class is x509.SubjectKeyIdentifier else found.value.key_identifier


def _label(certificate: x509.Certificate) -> str:
    return f"{certificate.subject.rfc4514_string() or '(empty subject)'} serial {certificate.serial_number:X}"


def _check_certificate(certificate: x509.Certificate, at: datetime, expected_policy_oids: tuple[str, ...]) -> str | None:
    if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
        return f"{_label(certificate)} is not valid at {at.isoformat()}"
    policies = _extension(certificate, x509.CertificatePolicies)
    if policies is None or not policies.critical:
        return f"{_label(certificate)} lacks a critical certificatePolicies extension"
    oids = {p.policy_identifier.dotted_string for p in policies.value}
    if expected_policy_oids and not oids & set(expected_policy_oids):
        return f"{_label(certificate)} carries policy {', '.join(sorted(oids))}, not {', '.join(expected_policy_oids)}"
    return None


def _check_issuer(certificate: x509.Certificate, issuer: x509.Certificate, below: int) -> str | None:
    if certificate.issuer.public_bytes() != issuer.subject.public_bytes():
        return f"{_label(certificate)}: issuer name is not byte-identical to its issuer's subject"
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return f"{_label(certificate)}: signature does not verify under the issuer key"
    constraints = _extension(issuer, x509.BasicConstraints)
    if constraints is None or not constraints.value.ca:
        return f"{_label(issuer)} is not a CA (basicConstraints cA)"
    if constraints.value.path_length is not None and below > constraints.value.path_length:
        return f"{_label(issuer)}: pathLenConstraint {constraints.value.path_length} exceeded"
    usage = _extension(issuer, x509.KeyUsage)
    if usage is None or not usage.value.key_cert_sign:
        return f"{_label(issuer)} may not sign certificates (keyUsage keyCertSign)"
    return None


def _revoked(certificate: x509.Certificate, issuer: x509.Certificate, crls: list[x509.CertificateRevocationList],
             at: datetime, checked: list[str]) -> str | None:
    issuer_key_id = _key_id(issuer, x509.SubjectKeyIdentifier)
    for crl in crls:
        try:
            crl_key_id = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        except x509.ExtensionNotFound:
            continue
        if crl_key_id != issuer_key_id:
            continue
        if not crl.is_signature_valid(issuer.public_key()):
            return f"the CRL for {_label(issuer)} has a bad signature"
        if crl.next_update_utc is None or not crl.last_update_utc <= at <= crl.next_update_utc:
            return f"the CRL for {_label(issuer)} is not current at {at.isoformat()}"
        checked.append(f"CRL of {_label(issuer)}")
        entry = crl.get_revoked_certificate_by_serial_number(certificate.serial_number)
        if entry is not None and entry.revocation_date_utc <= at:
            return f"{_label(certificate)} is revoked (since {entry.revocation_date_utc.isoformat()})"
    return None


def validate_path(leaf: x509.Certificate, anchors: list[x509.Certificate], intermediates: list[x509.Certificate], *,
                  at: datetime, expected_policy_oids: tuple[str, ...] = (),
                  crls: list[x509.CertificateRevocationList] = ()) -> PathResult:
    anchor_ders = {a.public_bytes(Encoding.DER) for a in anchors}
    candidates = list(anchors) + list(intermediates)
    chain, checked, current = [leaf], [], leaf
    for depth in range(MAX_PATH_LENGTH + 1):
        if current.public_bytes(Encoding.DER) in anchor_ders:
            return PathResult(True, chain, "", checked)
        problem = _check_certificate(current, at, expected_policy_oids)
        if problem:
            return PathResult(False, chain, problem, checked)
        authority_key_id = _key_id(current, x509.AuthorityKeyIdentifier)
        if authority_key_id is None:
            return PathResult(False, chain, f"{_label(current)} has no authorityKeyIdentifier and is not a trust anchor", checked)
        issuers = [c for c in candidates if _key_id(c, x509.SubjectKeyIdentifier) == authority_key_id]
        if not issuers:
            return PathResult(False, chain, f"no issuer with subjectKeyIdentifier {authority_key_id.hex().upper()} among the anchors and intermediates", checked)
        issuer = issuers[0]
        problem = _check_issuer(current, issuer, depth) or _revoked(current, issuer, list(crls), at, checked)
        if problem:
            return PathResult(False, chain, problem, checked)
        if issuer.public_bytes(Encoding.DER) not in anchor_ders:
            problem = _check_certificate(issuer, at, expected_policy_oids)
            if problem:
                return PathResult(False, chain + [issuer], problem, checked)
        chain.append(issuer)
        current = issuer
    return PathResult(False, chain, f"no trust anchor within {MAX_PATH_LENGTH} certificates", checked)
