"""The Librarian lodges certificates: each must chain, by key identifier, to one already trusted.

A certificate is accepted only if its AKI names a certificate already in the repository (or
a root the operator trusts explicitly) whose key verifies its signature; names alone never
decide (the test PKI reuses issuer names across keys). Each lodging is one transaction.
"""

from __future__ import annotations

import sqlite3

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from smki.audit.trail import AuditEntry, AuditTrail
from smki.operations.records import record_for
from smki.errors import ConflictError, RefusedError, SmkiError
from smki.store.certificates import find_certificate, insert_certificate, list_certificates
from smki.store.database import transaction


class AlreadyLodged(ConflictError):
    """These very bytes are already in the repository: nothing to do. A multi-file lodge reports the file and
    goes on (so repeating a run that stopped part-way completes it); `summary` describes what is lodged."""

    def __init__(self, message: str, summary: dict) -> None:
        super().__init__(message)
        self.summary = summary


def _already_lodged(connection: sqlite3.Connection, record) -> bool:
    """Whether this certificate is lodged, byte for byte; refuse (exit 5) another one with its issuer and serial."""
    lodged = [r for r in find_certificate(connection, record.serial_hex) if r.issuer_key_id == record.issuer_key_id]
    if not lodged:
        return False
    if bytes(lodged[0].der) != record.der:
        raise ConflictError(f"another certificate with serial {record.serial_hex} from issuer {record.issuer_key_id} is already lodged")
    return True


def _issuer(connection: sqlite3.Connection, certificate: x509.Certificate, record) -> x509.Certificate:
    if record.certificate_type == "root":
        return certificate
    candidates = list_certificates(connection, subject_key_id=record.issuer_key_id)
    if not candidates:
        raise RefusedError(f"issuer unknown: no lodged certificate has subjectKeyIdentifier {record.issuer_key_id}")
    return x509.load_der_x509_certificate(candidates[0].der)


def _check(connection: sqlite3.Connection, certificate: x509.Certificate, record, trust_root: bool) -> None:
    if record.certificate_type == "root" and not trust_root:
        raise RefusedError("a root certificate is lodged only when the operator trusts it explicitly (--trust-root)")
    issuer = _issuer(connection, certificate, record)
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise RefusedError(f"certificate {record.serial_hex}: not validly signed by its issuer ({exc or 'bad signature'})") from None


def lodge_certificate(connection: sqlite3.Connection, certificate: x509.Certificate, *, trust_root: bool = False,
                      audit: AuditTrail | None = None, actor: str = "librarian") -> str:
    """Check and record one certificate with its audit entry in one transaction; return its serial.

    Roots need `trust_root` (an explicit operator decision). A refusal is audited too, then raised.
    """
    audit = audit or AuditTrail(connection)
    record = record_for(certificate)
    subject = {"serial": record.serial_hex, "issuer_key_id": record.issuer_key_id, "type": record.certificate_type,
               "entity_id": record.entity_id}
    try:
        if _already_lodged(connection, record):  # checked when it was lodged; a root was trusted then
            raise AlreadyLodged(f"certificate {record.serial_hex} is already lodged", {"serial": record.serial_hex})
        _check(connection, certificate, record, trust_root)
        with transaction(connection):
            try:
                insert_certificate(connection, record)
            except ConflictError:  # another run lodged this serial since the check above
                raise ConflictError(f"certificate {record.serial_hex} is already lodged") from None
            audit.append(AuditEntry(actor, "certificate.lodge", "success", subject))
    except SmkiError as exc:
        with transaction(connection):
            audit.append(AuditEntry(actor, "certificate.lodge", "refused", subject, {"reason": str(exc)}))
        raise
    return record.serial_hex
