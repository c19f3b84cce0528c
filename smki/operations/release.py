"""Record, audit and release an issued certificate: one step, for every actor that signs one.

The record and its audit entry are committed in one transaction before the certificate leaves
(nothing signed is ever lost, nothing leaves unrecorded); then it is written, never over a file.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.files import write_new_file
from smki.operations.audited import AuditedOperation
from smki.operations.records import record_for
from smki.store.certificates import CertificateRecord, insert_certificate
from smki.store.database import transaction
from smki.store.reconcile import StateChange


def record_and_release(operation: AuditedOperation, certificate: x509.Certificate, policy, *,
                       request_sha256: str | None = None, out: Path | None = None) -> CertificateRecord:
    """Record `certificate` (allowed by `policy`) with its success entry, then write it to `out` (PEM) if given."""
    record = record_for(certificate, policy_identity=(policy.name, policy.version, policy.sha256), request_sha256=request_sha256)
    operation.subject.update({"serial": record.serial_hex, "type": record.certificate_type, "entity_id": record.entity_id,
                              "issuer_key_id": record.issuer_key_id})
    if out is not None:
        operation.subject["file"] = str(out)
    with transaction(operation.connection):
        insert_certificate(operation.connection, record)
        operation.audit.append(operation.success_entry(StateChange().issue(record.issuer_key_id, record.serial_hex).details(),
                                                       policy=policy.identity))
    if out is not None:
        write_new_file(out, certificate.public_bytes(Encoding.PEM))
    return record
