"""Build, lint and verify a revocation list: one step, for every authority that signs one
(an Issuing OCA's CRL, a root's ARL).

The list is encoded by `smki.profiles.crl` (the signer has verified its signature over the TBS
it was given); here it is linted as a relying party would lint it, and its signature checked
again over the DER that is released, before anything is recorded or written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smki.errors import HsmError
from smki.files import write_new_file
from smki.hsm.signer import Signer
from smki.identifiers import ListType
from smki.operations.audited import AuditedOperation
from smki.operations.results import IssuedCrl
from smki.profiles.crl import RevokedEntry, build_crl_der
from smki.profiles.describe import describe
from smki.profiles.lint import refuse_on_errors
from smki.profiles.lint.crl_rules import lint_crl
from smki.profiles.pem import PemLabel, pem_armour
from smki.store.database import transaction
from smki.store.reconcile import StateChange, reconcile_issuer
from smki.store.revocations import next_crl_number, revoked_entries
from smki.times import utc_now

log = logging.getLogger(__name__)


def signed_list(issuer: x509.Certificate, signer: Signer, list_type: ListType, *, crl_number: int, this_update_utc: datetime,
                next_update_utc: datetime, entries: Iterable[RevokedEntry]) -> tuple[x509.CertificateRevocationList, bytes]:
    """(the list, its DER), built, lint-clean (refused, exit 1, on an error finding) and verified under
    the issuer's key (HsmError otherwise): nothing else may be released."""
    crl, der = build_crl_der(issuer, signer, crl_number=crl_number, this_update_utc=this_update_utc,
                             next_update_utc=next_update_utc, entries=entries)
    name = list_type.name
    log.info("%s number %d signed in the HSM (%d bytes)", name, crl_number, len(der))
    _, findings = lint_crl(der, issuer.subject.public_bytes())
    refuse_on_errors(findings, f"the {name} fails lint")
    log.info("%s number %d lints clean", name, crl_number)
    if not _signature_valid(der, crl, issuer.public_key()):
        owner = "the root" if list_type is ListType.ARL else "the issuer"
        raise HsmError(f"the signed {name} does not verify against {owner}'s key; not released")
    log.info("%s number %d verified against the issuer's key", name, crl_number)
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


def issue_list(operation: AuditedOperation, issuer: x509.Certificate, signer: Signer, list_type: ListType, policy, *,
               out: Path | None = None) -> IssuedCrl:
    """The issuer's next CRL or ARL, for both kinds of authority: its recorded revocations (the state first
    checked against the audit trail), the next persisted cRLNumber, nextUpdate from `policy`; built, linted
    and verified (`signed_list`), then recorded with its audit entry in one transaction, and only then written."""
    issuer_key_id = describe(issuer).subject_key_id.hex().upper()
    connection, now = operation.connection, utc_now()
    with transaction(connection):  # the write lock from here: the state checked is the state signed
        reconcile_issuer(connection, issuer_key_id)
        entries = [RevokedEntry(int(serial, 16), datetime.fromisoformat(at), reason)
                   for serial, at, reason in revoked_entries(connection, issuer_key_id)]
        number = next_crl_number(connection, issuer_key_id, now)
        log.info("%s number %d of issuer %s: %d entries, state agrees with the audit trail", list_type.name, number, issuer_key_id, len(entries))
        crl, der = signed_list(issuer, signer, list_type, crl_number=number, this_update_utc=now,
                               next_update_utc=policy.next_update(list_type, now), entries=entries)
        operation.subject = {"issuer_key_id": issuer_key_id, "crl_number": number, "entries": len(entries),
                             "file": str(out) if out is not None else None}
        operation.audit.append(operation.success_entry(StateChange().crl(issuer_key_id, number).details(), policy=policy.identity))
    log.info("%s number %d recorded and audited", list_type.name, number)
    if out is not None:
        write_new_file(out, pem_armour(der, PemLabel.CRL))
        log.info("wrote %s", out)
    return IssuedCrl(crl, number, len(entries), list_type, issuer_key_id, Path(out) if out is not None else None, der)
