"""The Librarian lodges CRLs and ARLs: each is checked before anyone can be served it.

A CRL is accepted only if
- its authorityKeyIdentifier names a lodged CA certificate (by SKI, never by name: the test
  PKI reuses issuer names across keys) whose key verifies the CRL's signature;
- `lint_crl` finds no error (with the issuer's subject, so the issuer bytes are compared too);
- its cRLNumber is strictly greater than the last one lodged for that issuer (a replayed or
  rolled-back list would un-revoke certificates);
- its nextUpdate is still in the future (a stale list tells relying parties nothing).
An ARL is a CRL whose issuer is a root. Accepting a list records the serials it names (so a
certificate lodged later is revoked too: status is derived in smki.store.certificates) and sets
repository status R on the lodged certificates it names. The checks, the record, the status
changes and the audit entry are one transaction; a refusal is audited in its own and then raised.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from smki.audit.trail import AuditTrail
from smki.identifiers import CertificateType, ListType
from smki.librarian.lodging import AlreadyLodged
from smki.errors import BadInputError, RefusedError
from smki.operations.audited import AuditedOperation
from smki.operations.names import Operation
from smki.profiles.files import load_crl
from smki.profiles.lint.crl_rules import DUPLICATE_EXTENSION, lint_crl
from smki.profiles.lint.findings import refuse_on_errors
from smki.profiles.pem import PemLabel, single_object
from smki.profiles.serials import serial_hex
from smki.store.certificates import CertificateRecord, list_certificates
from smki.store.database import transaction
from smki.store.lodged_crls import (LodgedCrl, crl_number_key, insert_lodged_crl, latest_lodged_crl, lodged_crl, mark_revoked,
                                     record_listed_serials)

CA_TYPES = (CertificateType.ROOT, CertificateType.ISSUING_CA)


@dataclass(frozen=True)
class CrlLodgement:
    crl: LodgedCrl
    newly_revoked: list[str]  # serials whose repository status became R
    already_lodged: bool = False  # these very bytes were lodged before: nothing changed (a reported outcome)
    file: Path | None = None  # the file it was read from, when it was

    def summary(self) -> dict:
        """The JSON `smki librarian lodge-crl` prints for it."""
        return {**({"file": str(self.file)} if self.file is not None else {}), **self.crl.summary(),
                "newly_revoked": self.newly_revoked, "already_lodged": self.already_lodged}


def crl_der_from_file(data: bytes) -> bytes:
    """The DER of a CRL file, PEM (`X509 CRL` armour) or DER, kept exactly as signed; exactly one CRL, nothing around it."""
    try:
        return single_object(data, (PemLabel.CRL,), "CRL")
    except BadInputError as exc:
        raise BadInputError(f"not a DER or PEM CRL: {str(exc).removeprefix('CRL: ')}") from None


def _parse(crl_der: bytes) -> x509.CertificateRevocationList:
    return load_crl(crl_der, "", "not a DER or PEM CRL")  # inside lodge_crl's audit: a refusal here is recorded


def _authority_key_id(crl: x509.CertificateRevocationList) -> str:
    try:
        identifier = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        identifier = None
    if not identifier:
        raise RefusedError("the CRL has no authorityKeyIdentifier keyIdentifier: its issuer cannot be found by key")
    return identifier.hex().upper()


def _crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return None  # lint reports it


def _issuer(connection: sqlite3.Connection, key_id: str) -> CertificateRecord:
    candidates = [r for r in list_certificates(connection, subject_key_id=key_id) if r.certificate_type in CA_TYPES]
    if not candidates:
        raise RefusedError(f"issuer unknown: no lodged CA certificate has subjectKeyIdentifier {key_id}")
    return candidates[0]


def _check_signature(crl: x509.CertificateRevocationList, issuer: CertificateRecord) -> None:
    certificate = x509.load_der_x509_certificate(issuer.der)
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        may_sign_crls = usage.crl_sign
    except x509.ExtensionNotFound:
        may_sign_crls = False
    if not may_sign_crls:
        raise RefusedError(f"issuer {issuer.subject_key_id} (serial {issuer.serial_hex}) has no cRLSign keyUsage")
    try:
        valid = crl.is_signature_valid(certificate.public_key())
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise RefusedError(f"bad signature: the CRL does not verify with the key of issuer {issuer.subject_key_id} (serial {issuer.serial_hex})")


def _check_lint(crl_der: bytes, issuer: CertificateRecord, now: datetime) -> None:
    # The issuer's subject exactly as encoded in its certificate: "byte-identical" means bytes, not a re-encoding.
    issuer_subject = asn1_x509.Certificate.load(issuer.der)["tbs_certificate"]["subject"].dump()
    # `_parse` (load_crl) has already refused a repeated extension: the walk is not made twice.
    _, findings = lint_crl(crl_der, issuer_subject, now=now, skip=frozenset({DUPLICATE_EXTENSION}))
    refuse_on_errors(findings, "lint error")


def _check_number(connection: sqlite3.Connection, number: int | None, key_id: str, sha256: str) -> None:
    if number is None or number < 0 or number.bit_length() > 159:
        raise RefusedError("cRLNumber must be a non-negative integer of at most 20 octets")
    same_number = lodged_crl(connection, key_id, number)
    if same_number is not None and same_number.sha256 == sha256:  # not only the last: a rerun repeats earlier lists too
        raise AlreadyLodged(f"this {same_number.kind.upper()} (number {number}) from issuer {key_id} is already lodged",
                            {**same_number.summary(), "newly_revoked": []}, CrlLodgement(same_number, [], already_lodged=True))
    last = latest_lodged_crl(connection, key_id)
    if last is None:
        return
    if number <= last.number:
        raise RefusedError(f"cRLNumber {number} is not greater than {last.number}, the last lodged from issuer {key_id}")


def _check_next_update(crl: x509.CertificateRevocationList, now: datetime) -> None:
    next_update = crl.next_update_utc
    if next_update is not None and next_update <= now:
        raise RefusedError(f"stale: nextUpdate {next_update.isoformat()} is not after {now.isoformat()}")


def _accept(connection: sqlite3.Connection, crl: x509.CertificateRevocationList, crl_der: bytes, sha256: str,
            now: datetime, operation: AuditedOperation) -> CrlLodgement:
    """Every check, then the record and the status changes (inside the caller's transaction). The
    operation's subject and name grow as the checks learn them, so a refusal names what was known."""
    key_id = _authority_key_id(crl)
    operation.subject["issuer_key_id"] = key_id
    issuer = _issuer(connection, key_id)
    list_type = ListType.of_issuer(issuer.certificate_type)
    operation.subject["kind"] = list_type  # the audit subject's key stays `kind`: a published format
    operation.operation = Operation.lodge_list(list_type)
    _check_signature(crl, issuer)
    _check_lint(crl_der, issuer, now)
    number = _crl_number(crl)
    operation.subject["crl_number"] = number
    _check_number(connection, number, key_id, sha256)
    _check_next_update(crl, now)
    record = LodgedCrl(issuer_key_id=key_id, crl_number=crl_number_key(number), kind=list_type,
                       this_update=crl.last_update_utc.isoformat(), next_update=crl.next_update_utc.isoformat(),
                       sha256=sha256, der=crl_der, lodged_at=now.isoformat(timespec="seconds"))
    insert_lodged_crl(connection, record)
    listed = {serial_hex(entry.serial_number) for entry in crl}
    record_listed_serials(connection, record, listed)
    revoked = mark_revoked(connection, key_id, listed, record.lodged_at, f"{list_type} {key_id} {number}")
    return CrlLodgement(record, revoked)


def lodge_crl(connection: sqlite3.Connection, crl_der: bytes, *, audit: AuditTrail | None = None, actor: str = "librarian",
              now: datetime | None = None) -> CrlLodgement:
    """Check and record one CRL or ARL (DER) with its audit entry in one transaction.

    One audited operation: a refusal (RefusedError; BadInputError for bytes that are no CRL;
    AlreadyLodged, a ConflictError, for these very bytes lodged before) is audited as "refused"
    and raised with a one-line message.
    """
    audit = audit or AuditTrail(connection)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    sha256 = hashlib.sha256(crl_der).hexdigest()
    # Named crl.lodge until the issuer shows whether it is an ARL.
    with AuditedOperation(audit, actor, Operation.LODGE_CRL, {"sha256": sha256}) as operation:
        crl = _parse(crl_der)
        with transaction(connection):
            lodgement = _accept(connection, crl, crl_der, sha256, now, operation)
            details = {"next_update": lodgement.crl.next_update, "entries": len(crl), "newly_revoked": lodgement.newly_revoked}
            audit.append(operation.success_entry(details))
    return lodgement
