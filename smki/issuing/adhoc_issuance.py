"""Ad hoc Device Certificates at batch speed: what a group of single requests shares with a batch.

`IssuingAuthority.issue_devices` decides each request of a group on its own (the same policy checks
as ever) but issues the group in one transaction, and writes each certificate from the batch's
DER template (`smki.profiles.device_template`) instead of building and linting it afresh. The
template is proved before its first use for each (hwType, key usage): the certificate the profile
builds for that request is linted, and the template must write exactly its TBS. Every HSM
signature is verified before the certificate is recorded, as `sign_digest` verifies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from smki.hsm.signer import SoftwareSigner
from smki.identifiers import CertificateType, RemotePartyRole
from smki.policy.usage import Submitter
from smki.profiles import device_certificate, sign_certificate
from smki.profiles.certificates import DeviceCertificateParams
from smki.profiles.device_template import DeviceCertificateTemplate, check_against_builder
from smki.profiles.lint import pre_issuance_check


@dataclass(frozen=True)
class DeviceCsr:
    """One ad hoc Device CSR of a group: the request (bytes, PEM text or a file), who asks for it
    (`submitter`: who submitted it online, for the usage rules; None from the CLI), and where its
    certificate is written (`out`, optional)."""

    csr: bytes | str | Path
    requester: RemotePartyRole | str
    submitter: Submitter | None = None
    source: str | None = None
    out: Path | None = None


class ProvenTemplates:
    """The device templates of one issuer, each proved for a (hwType, key usage) before it writes one.

    A template depends on the policy OID and the validity (notBefore is the day's start), so a
    long-running service makes a new one each day; only the current one is kept."""

    def __init__(self, issuer: x509.Certificate) -> None:
        self.issuer = issuer
        self._key: tuple | None = None
        self._template: DeviceCertificateTemplate | None = None
        self._proven: set[tuple[str, str]] = set()

    def for_request(self, params: DeviceCertificateParams, subject_key: ec.EllipticCurvePublicKey) -> DeviceCertificateTemplate:
        """The template for `params`, proved (lint + byte-identical TBS) with this request's own certificate the first time."""
        key = (params.policy_oid, params.validity)
        if key != self._key:
            self._template = DeviceCertificateTemplate.for_issuer(self.issuer, params.policy_oid, params.validity)
            self._key, self._proven = key, set()
        pair = (params.hw_type_oid, params.key_usage.value)
        if pair not in self._proven:
            self._prove(params, subject_key)
            self._proven.add(pair)
        return self._template

    def _prove(self, params: DeviceCertificateParams, subject_key: ec.EllipticCurvePublicKey) -> None:
        lint = pre_issuance_check(CertificateType.DEVICE, (params.policy_oid,), issuer=self.issuer)
        draft = sign_certificate(device_certificate(params, subject_key, self.issuer), SoftwareSigner(), pre_issuance_check=lint)
        check_against_builder(self._template, params, subject_key, self.issuer, draft)
