"""Change control: an authority runs only under the policy file it has adopted.

Adoption records the policy's name, version and SHA-256 in the authority's database, with its
audit entry, in one transaction. Before every issuance or revocation the authority checks the
file it was given against that record: a silently edited file is refused until an operator
adopts it explicitly (`smki policy adopt`).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from smki.audit.trail import AuditEntry, AuditTrail
from smki.errors import ConflictError
from smki.policy.model import CertificatePolicy
from smki.store.database import transaction


def adopted(connection: sqlite3.Connection, kind: str) -> dict | None:
    row = connection.execute("SELECT * FROM adopted_policies WHERE kind = ?", (kind,)).fetchone()
    return dict(row) if row else None


def adopt(connection: sqlite3.Connection, policy: CertificatePolicy, actor: str, audit: AuditTrail | None = None) -> dict | None:
    """Adopt `policy` for its kind; return the record it replaces (None for the first adoption)."""
    audit = audit or AuditTrail(connection)
    previous = adopted(connection, policy.kind)
    with transaction(connection):
        connection.execute("INSERT OR REPLACE INTO adopted_policies VALUES (?, ?, ?, ?, ?, ?)",
                           (policy.kind, policy.name, policy.version, policy.sha256,
                            datetime.now(timezone.utc).isoformat(timespec="seconds"), actor))
        audit.append(AuditEntry(actor, "policy.adopt", "success", {"kind": policy.kind, "file": str(policy.path)},
                                {"replaces": previous and {k: previous[k] for k in ("version", "sha256")}}, policy.identity))
    return previous


def require_adopted(connection: sqlite3.Connection, policy: CertificatePolicy) -> None:
    """Refuse to act under a policy file other than the adopted one."""
    record = adopted(connection, policy.kind)
    if record is None:
        raise ConflictError(f"no {policy.kind} policy adopted in this authority's state: run `smki policy adopt` first")
    if record["sha256"] != policy.sha256:
        raise ConflictError(
            f"{policy.path} (version {policy.version}, sha256 {policy.sha256[:16]}...) is not the adopted {policy.kind} policy "
            f"(version {record['version']}, sha256 {record['sha256'][:16]}...): adopt it explicitly with `smki policy adopt`")
