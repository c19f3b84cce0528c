"""Record, audit and release an issued certificate: one step, for every actor that signs one.

The record and its audit entry are committed in one transaction before the certificate leaves
(nothing signed is ever lost, nothing leaves unrecorded); then it is written, never over a file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.files import interrupts_held, write_new_file
from smki.operations.audited import AuditedOperation
from smki.operations.records import record_for
from smki.operations.results import IssuedCertificate
from smki.profiles import draft_certificate
from smki.profiles.certificates import PreIssuanceCheck
from smki.store.certificates import CertificateRecord, insert_certificate
from smki.store.database import transaction
from smki.store.reconcile import StateChange

log = logging.getLogger(__name__)


def record_and_release(operation: AuditedOperation, certificate: x509.Certificate, policy, *,
                       request_sha256: str | None = None, out: Path | None = None) -> CertificateRecord:
    """Record `certificate` (allowed by `policy`) with its success entry, then write it to `out` (PEM) if given."""
    record = record_for(certificate, policy_identity=(policy.name, policy.version, policy.sha256), request_sha256=request_sha256)
    operation.subject.update({"serial": record.serial_hex, "type": record.certificate_type, "entity_id": record.entity_id,
                              "issuer_key_id": record.issuer_key_id})
    if out is not None:
        operation.subject["file"] = str(out)
    # Recorded means released: a Ctrl-C between the commit and the file would leave a certificate on record that nobody has.
    with interrupts_held(f"certificate {record.serial_hex} was being recorded and written"):
        with transaction(operation.connection):
            insert_certificate(operation.connection, record)
            operation.audit.append(operation.success_entry(StateChange().issue(record.issuer_key_id, record.serial_hex).details(),
                                                           policy=policy.identity))
        if out is not None:
            write_new_file(out, certificate.public_bytes(Encoding.PEM))
    return record


def would_issue(builder: x509.CertificateBuilder, pre_issuance_check: PreIssuanceCheck, policy, *, request_sha256: str | None = None,
                out: Path | None = None) -> IssuedCertificate:
    """A dry run's end, in place of signing and `record_and_release`: the exact to-be-signed certificate,
    linted (signed by a throw-away key), reported as what would be issued. Nothing is signed with the CA
    key, recorded or written."""
    draft = draft_certificate(builder, pre_issuance_check)
    log.info("dry run: the certificate for %s lints clean; not signed", draft.subject.rfc4514_string() or "(empty subject)")
    record = record_for(draft, policy_identity=(policy.name, policy.version, policy.sha256), request_sha256=request_sha256)
    return IssuedCertificate(draft, record, policy.identity, Path(out) if out is not None else None, dry_run=True)
