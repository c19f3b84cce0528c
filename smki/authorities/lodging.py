"""The Librarian lodges certificates: each must chain, by key identifier, to one already trusted.

A certificate is accepted only if its AKI names a certificate already in the repository (or
a root the operator trusts explicitly) whose key verifies its signature; names alone never
decide (the test PKI reuses issuer names across keys). Each lodging is one transaction.
"""

from __future__ import annotations

import sqlite3

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from smki.authorities.records import record_for
from smki.errors import ConflictError, RefusedError
from smki.store.certificates import insert_certificate, list_certificates
from smki.store.database import transaction


def _issuer(connection: sqlite3.Connection, certificate: x509.Certificate, record) -> x509.Certificate:
    if record.certificate_type == "root":
        return certificate
    candidates = list_certificates(connection, subject_key_id=record.issuer_key_id)
    if not candidates:
        raise RefusedError(f"issuer unknown: no lodged certificate has subjectKeyIdentifier {record.issuer_key_id}")
    return x509.load_der_x509_certificate(candidates[0].der)


def lodge_certificate(connection: sqlite3.Connection, certificate: x509.Certificate, *, trust_root: bool = False) -> str:
    """Check and record one certificate; return its serial. Roots need `trust_root` (an explicit operator decision)."""
    record = record_for(certificate)
    if record.certificate_type == "root" and not trust_root:
        raise RefusedError("a root certificate is lodged only when the operator trusts it explicitly (--trust-root)")
    issuer = _issuer(connection, certificate, record)
    try:
        certificate.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise RefusedError(f"certificate {record.serial_hex}: not validly signed by its issuer ({exc or 'bad signature'})") from None
    try:
        with transaction(connection):
            insert_certificate(connection, record)
    except ConflictError:
        raise ConflictError(f"certificate {record.serial_hex} is already lodged") from None
    return record.serial_hex
