"""Adopting the state tables of an authority whose audit trail was written before smki recorded state changes.

Since issue 12, every audit entry that changes what a CA signs from records the change, and the
state is reconciled with those records before anything is signed from it. A trail written
earlier records none, so its authority would refuse to sign. Adoption records the tables as they
stand, once, as `state.adopt` entries signed by the authority's audit key: from then on they are
reconciled like any other. It is refused on a trail that already records state changes, where
the tables are checked against the trail, never the other way round.
"""

from __future__ import annotations

from smki.audit.trail import AuditEntry, AuditTrail
from smki.errors import ConflictError, RefusedError
from smki.operations.names import Operation
from smki.store.database import transaction
from smki.store.reconcile import issuers, records_state_changes, state_as_changes



def adopt_legacy_state(audit: AuditTrail, actor: str) -> dict[str, dict[str, int]]:
    """Record every issuer's state as it stands; return, per issuer, how many serials, revocations and the cRLNumber."""
    if audit.signer is None:
        raise RefusedError("adopting an authority's state needs its audit key (--audit-key-uri): the adoption must be signed")
    connection = audit.connection
    adopted: dict[str, dict[str, int]] = {}
    with transaction(connection):
        if records_state_changes(connection):
            raise ConflictError("this audit trail already records state changes: the state is checked against them "
                                "(smki ca reconcile), not adopted")
        entries = []
        for issuer_key_id in issuers(connection):
            changes = state_as_changes(connection, issuer_key_id)
            entries += [AuditEntry(actor, Operation.ADOPT_STATE, "success", {"issuer_key_id": issuer_key_id, "part": part, "parts": len(changes)},
                                   change.details()) for part, change in enumerate(changes, 1)]
            adopted[issuer_key_id] = {"issued": sum(len(c.issued.get(issuer_key_id, ())) for c in changes),
                                      "revoked": sum(len(c.revoked.get(issuer_key_id, ())) for c in changes),
                                      "crl_number": max((c.crl_numbers.get(issuer_key_id, 0) for c in changes), default=0)}
        if entries:
            audit.append(*entries)
    return adopted
