"""Running the rules: on a DER certificate, or on a draft before the HSM signs it."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.errors import BadInputError
from smki.profiles.lint.certificate_rules import CERTIFICATE_RULES
from smki.identifiers import CertificateType
from smki.profiles.lint.certificate_view import CertificateView
from smki.profiles.lint.findings import Finding, refuse_on_errors


def lint_certificate(der: bytes, *, certificate_type: str | None = None, expected_policy_oids: tuple[str, ...] = (),
                     issuer_subject_der: bytes | None = None, cheap_only: bool = False,
                     policy_roles: tuple[str, ...] | None = None) -> tuple[str, list[Finding]]:
    """(the certificate type linted as, findings). Malformed DER raises BadInputError.
    `policy_roles`: OU codes of the roles some policy names (an Organisation Certificate of another role is warned about)."""
    if certificate_type is not None:
        certificate_type = CertificateType.parse(certificate_type)
    try:
        view = CertificateView(der, certificate_type, tuple(expected_policy_oids), issuer_subject_der, policy_roles)
    except (ValueError, TypeError, KeyError) as exc:
        raise BadInputError(f"not a DER X.509 certificate ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    findings = [finding for rule in CERTIFICATE_RULES if rule.cheap or not cheap_only if (finding := rule.run(view))]
    return view.certificate_type, findings


def pre_issuance_check(certificate_type: str, expected_policy_oids: tuple[str, ...] = (), *,
                       issuer: x509.Certificate | None = None, full: bool = True):
    """A check for `sign_certificate(..., pre_issuance_check=...)`: any error finding stops the issuance."""
    issuer_subject_der = issuer.subject.public_bytes() if issuer is not None else None

    def check(draft: x509.Certificate) -> None:
        _, findings = lint_certificate(draft.public_bytes(Encoding.DER), certificate_type=certificate_type,
                                       expected_policy_oids=expected_policy_oids, issuer_subject_der=issuer_subject_der,
                                       cheap_only=not full)
        refuse_on_errors(findings, "pre-issuance lint refused the certificate")

    return check
