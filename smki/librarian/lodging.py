"""The Librarian lodges certificates: each must chain, by key identifier, to one already trusted.

A certificate is accepted only if its AKI names a certificate already in the repository (or
a root the operator trusts explicitly) whose key verifies its signature; names alone never
decide (the test PKI reuses issuer names across keys). Each lodging is one transaction.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from smki.audit.trail import AuditTrail
from smki.identifiers import CertificateType
from smki.operations.audited import AuditedOperation
from smki.operations.names import Operation
from smki.operations.records import record_for
from smki.errors import ConflictError, RefusedError
from smki.store.certificates import find_certificate, insert_certificate, list_certificates
from smki.store.database import transaction




@dataclass(frozen=True)
class Lodgement:
    """A certificate lodged, or found already lodged byte for byte (a reported outcome, not a refusal)."""

    serial_hex: str
    already_lodged: bool = False
    file: Path | None = None  # the file it was read from, when it was

    def summary(self) -> dict:
        """The JSON `smki librarian lodge` prints for it."""
        return {**({"file": str(self.file)} if self.file is not None else {}), "serial": self.serial_hex,
                "already_lodged": self.already_lodged}


class AlreadyLodged(ConflictError):
    """These very bytes are already in the repository: nothing to do. A multi-file lodge reports the file and
    goes on (so repeating a run that stopped part-way completes it); `summary` describes what is lodged."""

    def __init__(self, message: str, summary: dict, lodged: object = None) -> None:
        super().__init__(message)
        self.summary = summary
        self.lodged = lodged  # the outcome to report (a CrlLodgement for a list), when there is one


def _already_lodged(connection: sqlite3.Connection, record) -> bool:
    """Whether this certificate is lodged, byte for byte; refuse (exit 5) another one with its issuer and serial."""
    lodged = [r for r in find_certificate(connection, record.serial_hex) if r.issuer_key_id == record.issuer_key_id]
    if not lodged:
        return False
    if bytes(lodged[0].der) != record.der:
        raise ConflictError(f"another certificate with serial {record.serial_hex} from issuer {record.issuer_key_id} is already lodged")
    return True


def _issuer(connection: sqlite3.Connection, certificate: x509.Certificate, record) -> x509.Certificate:
    if record.certificate_type == CertificateType.ROOT:
        return certificate
    candidates = list_certificates(connection, subject_key_id=record.issuer_key_id)
    if not candidates:
        raise RefusedError(f"issuer unknown: no lodged certificate has subjectKeyIdentifier {record.issuer_key_id}")
    return x509.load_der_x509_certificate(candidates[0].der)


def _check(connection: sqlite3.Connection, certificate: x509.Certificate, record, trust_root: bool) -> None:
    if record.certificate_type == CertificateType.ROOT and not trust_root:
        raise RefusedError("a root certificate is lodged only when the operator trusts it explicitly (--trust-root)")
    issuer = _issuer(connection, certificate, record)
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise RefusedError(f"certificate {record.serial_hex}: not validly signed by its issuer ({exc or 'bad signature'})") from None


def lodge_certificate(connection: sqlite3.Connection, certificate: x509.Certificate, *, trust_root: bool = False,
                      audit: AuditTrail | None = None, actor: str = "librarian") -> str:
    """Check and record one certificate with its audit entry in one transaction; return its serial.

    Roots need `trust_root` (an explicit operator decision). One audited operation: a refusal
    (AlreadyLodged for these very bytes lodged before) is audited too, then raised.
    """
    audit = audit or AuditTrail(connection)
    record = record_for(certificate)
    subject = {"serial": record.serial_hex, "issuer_key_id": record.issuer_key_id, "type": record.certificate_type,
               "entity_id": record.entity_id}
    with AuditedOperation(audit, actor, Operation.LODGE_CERTIFICATE, subject) as operation:
        if _already_lodged(connection, record):  # checked when it was lodged; a root was trusted then
            raise AlreadyLodged(f"certificate {record.serial_hex} is already lodged", {"serial": record.serial_hex})
        _check(connection, certificate, record, trust_root)
        with transaction(connection):
            try:
                insert_certificate(connection, record)
            except ConflictError:  # another run lodged this serial since the check above
                raise ConflictError(f"certificate {record.serial_hex} is already lodged") from None
            audit.append(operation.success_entry())
    return record.serial_hex
