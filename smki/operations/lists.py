"""Build, lint and verify a revocation list: one step, for every authority that signs one
(an Issuing OCA's CRL, a root's ARL).

The list is encoded by `smki.profiles.crl` (the signer has verified its signature over the TBS
it was given); here it is linted as a relying party would lint it, and its signature checked
again over the DER that is released, before anything is recorded or written.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smki.errors import HsmError
from smki.hsm.signer import Signer
from smki.identifiers import CertificateType
from smki.profiles.crl import RevokedEntry, build_crl_der
from smki.profiles.lint import refuse_on_errors
from smki.profiles.lint.crl_rules import lint_crl


class ListType(enum.StrEnum):
    """Which revocation list: an Issuing OCA's CRL, or a root's ARL (Authority Revocation List).
    A StrEnum: stored, printed and written in JSON as its value."""

    CRL = "crl"
    ARL = "arl"

    @classmethod
    def of_issuer(cls, certificate_type: CertificateType | str) -> "ListType":
        return cls.ARL if certificate_type == CertificateType.ROOT else cls.CRL


def signed_list(issuer: x509.Certificate, signer: Signer, list_type: ListType, *, crl_number: int, this_update_utc: datetime,
                next_update_utc: datetime, entries: Iterable[RevokedEntry]) -> tuple[x509.CertificateRevocationList, bytes]:
    """(the list, its DER), built, lint-clean (refused, exit 1, on an error finding) and verified under
    the issuer's key (HsmError otherwise): nothing else may be released."""
    crl, der = build_crl_der(issuer, signer, crl_number=crl_number, this_update_utc=this_update_utc,
                             next_update_utc=next_update_utc, entries=entries)
    name = list_type.name
    _, findings = lint_crl(der, issuer.subject.public_bytes())
    refuse_on_errors(findings, f"the {name} fails lint")
    if not _signature_valid(der, crl, issuer.public_key()):
        owner = "the root" if list_type is ListType.ARL else "the issuer"
        raise HsmError(f"the signed {name} does not verify against {owner}'s key; not released")
    return crl, der


def _signature_valid(der: bytes, crl: x509.CertificateRevocationList, public_key: ec.EllipticCurvePublicKey) -> bool:
    """The signature over the TBS bytes as released (cryptography's `is_signature_valid` re-encodes
    the whole list first: about a second for a million entries)."""
    tbs = _first_element(der)
    try:
        public_key.verify(crl.signature, tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _first_element(der: bytes) -> bytes:
    """The first TLV inside the outer SEQUENCE (the tbsCertList)."""
    position = 2 + (der[1] & 0x7F if der[1] >= 0x80 else 0)
    first = der[position + 1]
    size = first & 0x7F if first >= 0x80 else 0
    length = int.from_bytes(der[position + 2:position + 2 + size], "big") if size else first
    return der[position:position + 2 + size + length]
