"""Change control: an authority runs only under the policy file it has adopted.

Adoption records the policy's name, version and SHA-256 in the authority's database, with its
audit entry, in one transaction. Before every issuance or revocation the authority checks the
file it was given against that record: a silently edited file is refused until an operator
adopts it explicitly (`smki policy adopt`).

The `adopted_policies` row can be edited by anyone who can write the database, and such an edit
leaves the audit chain intact. So the row counts only when it agrees with the trail's last
successful `policy.adopt` entry for its kind (which records the policy's name, version and
SHA-256): an authority acts only under a policy whose adoption its audit trail records.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

from smki.audit.trail import AuditEntry, AuditTrail
from smki.errors import ConflictError, RefusedError
from smki.identifiers import PolicyKind
from smki.policy.model import CertificatePolicy
from smki.store.connection import Connection
from smki.store.database import transaction
from smki.store.policies import AdoptedPolicy, adopted_policies, adopted_policy, record_adoption, successful_entries

log = logging.getLogger(__name__)

OPERATION = "policy.adopt"
_IDENTITY = ("name", "version", "sha256")  # what the adoption's audit entry records (CertificatePolicy.identity)


def adopted(connection: Connection, hierarchy: PolicyKind) -> dict | None:
    return adopted_policy(connection, hierarchy)


def adopt(connection: Connection, policy: CertificatePolicy, actor: str, audit: AuditTrail | None = None) -> dict | None:
    """Adopt `policy` for its kind; return the record it replaces (None for the first adoption)."""
    audit = audit or AuditTrail(connection)
    previous = adopted(connection, policy.hierarchy)
    with transaction(connection):
        record_adoption(connection, AdoptedPolicy(policy.hierarchy, policy.name, policy.version, policy.sha256,
                                                  datetime.now(timezone.utc).isoformat(timespec="seconds"), actor))
        audit.append(AuditEntry(actor, OPERATION, "success", {"kind": policy.hierarchy, "file": str(policy.path)},
                                {"replaces": previous and {k: previous[k] for k in ("version", "sha256")}}, policy.identity))
    log.info("adopted the %s policy %s version %s (sha256 %s)%s", policy.hierarchy, policy.name, policy.version, policy.sha256[:16],
             f", replacing version {previous['version']}" if previous else "")
    return previous


def recorded_adoptions(connection: Connection) -> dict[str, dict]:
    """Per policy kind, the identity (name, version, sha256) its last successful adoption entry records.

    Cost: the adoption entries only (the trail's operation index); an authority has a handful."""
    recorded: dict[str, dict] = {}
    for subject, policy in successful_entries(connection, OPERATION):
        hierarchy = json.loads(subject).get("kind")  # the entry's JSON key stays `kind`: a published format
        identity = json.loads(policy) if policy else None
        if isinstance(hierarchy, str) and isinstance(identity, dict):
            recorded[hierarchy] = {key: identity.get(key) for key in _IDENTITY}
    return recorded


def adoption_differences(connection: Connection) -> dict[str, str]:
    """Per policy kind, how the adopted_policies table disagrees with the adoptions the audit trail records."""
    recorded = recorded_adoptions(connection)
    held = {row["kind"]: {key: row[key] for key in _IDENTITY} for row in adopted_policies(connection)}
    found = {}
    for hierarchy in sorted(set(recorded) | set(held)):
        difference = _difference(hierarchy, held.get(hierarchy), recorded.get(hierarchy))
        if difference:
            found[hierarchy] = difference
    return found


def _difference(hierarchy: str, held: dict | None, recorded: dict | None) -> str | None:
    def named(identity: dict) -> str:
        return f"version {identity['version']}, sha256 {str(identity['sha256'])[:16]}..."

    if held == recorded:
        return None
    if recorded is None:
        return f"the adopted {hierarchy} policy ({named(held)}) was adopted by no audited operation"
    if held is None:
        return f"the {hierarchy} policy the audit trail records adopting ({named(recorded)}) is missing from the state"
    return f"the adopted {hierarchy} policy is {named(held)} in the state but {named(recorded)} in the audit trail"


def require_adopted(connection: Connection, policy: CertificatePolicy) -> None:
    """Refuse to act under a policy file other than the adopted one, or under an adoption the audit trail does not record."""
    record = adopted(connection, policy.hierarchy)
    if record is None:
        raise ConflictError(f"no {policy.hierarchy} policy adopted in this authority's state: run `smki policy adopt` first")
    difference = _difference(policy.hierarchy, {key: record[key] for key in _IDENTITY}, recorded_adoptions(connection).get(policy.hierarchy))
    if difference:
        raise RefusedError(f"{difference}; nothing is done under it until the state is restored or the policy adopted again "
                           "(`smki policy adopt`)")
    if record["sha256"] != policy.sha256:
        raise ConflictError(
            f"{policy.path} (version {policy.version}, sha256 {policy.sha256[:16]}...) is not the adopted {policy.hierarchy} policy "
            f"(version {record['version']}, sha256 {record['sha256'][:16]}...): adopt it explicitly with `smki policy adopt`")
