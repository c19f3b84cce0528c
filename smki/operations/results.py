"""What an authority's signing operations return: immutable values a library caller can keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.identifiers import ListType
from smki.policy.model import RevocationMethod
from smki.profiles.pem import PemLabel, pem_armour
from smki.store.certificates import CertificateRecord


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate that has been recorded and audited (and written to `file`, when one was named)."""

    certificate: x509.Certificate
    record: CertificateRecord
    policy_identity: dict
    file: Path | None = None
    # A dry run: `certificate` is the linted draft (signed by a throw-away key, its serial drawn for
    # the draft only), nothing was signed with the CA key, recorded or written; `file` is where it would go.
    dry_run: bool = False

    @property
    def serial_hex(self) -> str:
        return self.record.serial_hex

    @property
    def der(self) -> bytes:
        return self.record.der

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(Encoding.PEM)

    def summary(self) -> dict:
        # A dry run reports no serial: the draft's is random and a real run draws its own.
        return {"file": str(self.file) if self.file else None, "serial": None if self.dry_run else self.serial_hex,
                "subject": self.certificate.subject.rfc4514_string(), "issuer": self.certificate.issuer.rfc4514_string(),
                "not_after": self.certificate.not_valid_after_utc.isoformat(), "policy": self.policy_identity,
                **_dry_run(self.dry_run)}


@dataclass(frozen=True)
class IssuedCrl:
    """A CRL (an Issuing OCA's) or ARL (a root's) that has been linted, verified, recorded and audited."""

    crl: x509.CertificateRevocationList
    number: int
    entries: int
    list_type: ListType
    issuer_key_id: str
    file: Path | None = None
    # The DER as signed, when the issuer kept it: re-encoding a parsed million-entry list costs seconds.
    encoded: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def der(self) -> bytes:
        return self.encoded if self.encoded is not None else self.crl.public_bytes(Encoding.DER)

    @property
    def pem(self) -> bytes:
        return pem_armour(self.der, PemLabel.CRL)

    def summary(self) -> dict:
        return {"issuer_key_id": self.issuer_key_id, "crl_number": self.number, "entries": self.entries,
                "file": str(self.file) if self.file else None, "type": self.list_type,
                "next_update": self.crl.next_update_utc.isoformat()}


@dataclass(frozen=True)
class Revocation:
    """A recorded revocation: on the issuer's next CRL or ARL (method crl/arl), or repository status R."""

    serial_hex: str
    issuer_key_id: str
    reason: str
    method: RevocationMethod
    revoked_at: datetime
    dry_run: bool = False  # checked only: nothing recorded (revoked_at is when the check ran)

    def summary(self) -> dict:
        return {"serial": self.serial_hex, "reason": self.reason, "method": self.method, "revoked_at": self.revoked_at.isoformat(),
                **_dry_run(self.dry_run)}


def _dry_run(dry_run: bool) -> dict:
    """A dry run's summary says so; a real one's keeps the shape it always had."""
    return {"dry_run": True} if dry_run else {}
