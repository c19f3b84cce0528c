"""Adopted policies (one row per policy kind) and the audit entries that record their adoption."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from smki.store.connection import Connection


@dataclass(frozen=True)
class AdoptedPolicy:
    kind: str
    name: str
    version: str
    sha256: str
    adopted_at: str
    actor: str


def adopted_policy(connection: Connection, kind: str) -> dict | None:
    """The adopted_policies row of this kind, as a dict of its columns (None: nothing adopted)."""
    row = connection.execute("SELECT * FROM adopted_policies WHERE kind = ?", (kind,)).fetchone()
    return dict(row) if row else None


def adopted_policies(connection: Connection) -> list[dict]:
    """Every adopted_policies row, as dicts of their columns."""
    return [dict(row) for row in connection.execute("SELECT * FROM adopted_policies ORDER BY kind")]


def record_adoption(connection: Connection, policy: AdoptedPolicy) -> None:
    """Adopt `policy` for its kind, replacing the kind's previous adoption (inside the caller's transaction)."""
    connection.execute("INSERT INTO adopted_policies VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind) DO UPDATE SET "
                       "name = excluded.name, version = excluded.version, sha256 = excluded.sha256, "
                       "adopted_at = excluded.adopted_at, actor = excluded.actor",
                       (policy.kind, policy.name, policy.version, policy.sha256, policy.adopted_at, policy.actor))


def successful_entries(connection: Connection, operation: str) -> Iterator[tuple[str, str | None]]:
    """(subject, policy) JSON texts of the audit trail's successful entries of one operation, in order
    (the trail's operation index: an authority has a handful of adoptions)."""
    for subject, policy in connection.execute(
            "SELECT subject, policy FROM audit_entries WHERE operation = ? AND outcome = 'success' ORDER BY seq", (operation,)):
        yield subject, policy

