"""Device batches: the batch's identity, each request's outcome, and what a resumed run skips.

A batch is identified by the digest of its contents, so running the same batch again finds
the outcomes already recorded and answers only the rest. Writes happen inside the caller's
transaction, together with the certificates they name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from smki.errors import ConflictError
from smki.store.connection import Connection, Dialect, dialect_of

# SQLite allows 32,766 bound parameters; lookups go in slices well under that.
_LOOKUP_SLICE = 500


@dataclass(frozen=True)
class BatchRow:
    batch_id: str
    source: str
    entry_count: int
    issuer_key_id: str
    policy_version: str
    started_at: str
    finished_at: str | None


@dataclass(frozen=True)
class EntryOutcome:
    """One request's answer: status success/error/anomaly/ineligible and its outcome code."""

    name: str
    status: str
    code: str
    detail: str | None = None
    device_id: str | None = None
    serial_hex: str | None = None
    request_sha256: str | None = None


@contextmanager
def deferred_sync(connection) -> Iterator[None]:
    """SQLite: commits inside skip the fsync (synchronous NORMAL in WAL mode: a killed process
    loses nothing committed; only a power cut could lose the latest commits). The caller's
    first transaction after this block runs at FULL again, and its fsync of the log makes
    every earlier commit durable: do that before anything is released."""
    if dialect_of(connection) is not Dialect.SQLITE:
        yield
        return
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA cache_size = -131072")  # 128 MiB: a batch touches every index of the certificates table
    # No checkpoint in the middle of the batch (each would copy and fsync the database); the
    # log is folded back after it.
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    try:
        yield
    finally:
        connection.execute("PRAGMA wal_autocheckpoint = 1000")
        connection.execute("PRAGMA synchronous = FULL")


def find_batch(connection: Connection, batch_id: str) -> BatchRow | None:
    row = connection.execute("SELECT * FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
    return BatchRow(*row) if row else None


def register_batch(connection: Connection, batch: BatchRow) -> BatchRow:
    """Record a new batch, or return the recorded one (a resumed run); another issuer's batch is refused."""
    existing = recorded_batch(connection, batch.batch_id, batch.issuer_key_id)
    if existing is None:
        connection.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)", (
            batch.batch_id, batch.source, batch.entry_count, batch.issuer_key_id, batch.policy_version, batch.started_at, None))
        return batch
    return existing


def recorded_batch(connection: Connection, batch_id: str, issuer_key_id: str) -> BatchRow | None:
    """The batch as recorded by an earlier run of this issuer (None: never run); another issuer's is refused (exit 5)."""
    existing = find_batch(connection, batch_id)
    if existing is not None and existing.issuer_key_id != issuer_key_id:
        raise ConflictError(f"batch {batch_id[:16]} was started by issuer {existing.issuer_key_id}, not {issuer_key_id}")
    return existing


def finish_batch(connection: Connection, batch_id: str, finished_at: str) -> None:
    connection.execute("UPDATE batches SET finished_at = ? WHERE batch_id = ? AND finished_at IS NULL", (finished_at, batch_id))


def answered_names(connection: Connection, batch_id: str) -> set[str]:
    return {row[0] for row in connection.execute("SELECT name FROM batch_entries WHERE batch_id = ?", (batch_id,))}


def answered_statuses(connection: Connection, batch_id: str) -> dict[str, int]:
    """How many of the batch's requests were answered with each status (without reading their certificates)."""
    return {row[0]: row[1] for row in connection.execute(
        "SELECT status, COUNT(*) FROM batch_entries WHERE batch_id = ? GROUP BY status", (batch_id,))}


def record_outcomes(connection: Connection, batch_id: str, outcomes: Iterable[EntryOutcome]) -> None:
    connection.executemany("INSERT INTO batch_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        (batch_id, o.name, o.status, o.code, o.detail, o.device_id, o.serial_hex, o.request_sha256) for o in outcomes])


def _slices(values: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(values), _LOOKUP_SLICE):
        yield values[start:start + _LOOKUP_SLICE]


def device_certificate_counts(connection: Connection, device_ids: Iterable[str]) -> dict[str, int]:
    """How many Device Certificates each device already holds (devices with none are absent)."""
    counts: dict[str, int] = {}
    for part in _slices(sorted(set(device_ids))):
        counts.update(connection.execute(
            f"SELECT entity_id, COUNT(*) FROM certificates WHERE certificate_type = 'device' AND entity_id IN ({', '.join('?' * len(part))}) "
            "GROUP BY entity_id", part).fetchall())
    return counts


def known_subject_keys(connection: Connection, subject_key_ids: Iterable[str]) -> set[str]:
    """Which of these subject key identifiers some recorded certificate already certifies."""
    known: set[str] = set()
    for part in _slices(sorted(set(subject_key_ids))):
        known.update(row[0] for row in connection.execute(
            f"SELECT subject_key_id FROM certificates WHERE subject_key_id IN ({', '.join('?' * len(part))})", part))
    return known


def batch_outcomes(connection: Connection, batch_id: str) -> Iterator[tuple[EntryOutcome, bytes | None]]:
    """Every answered request of the batch in name order, with the issued certificate's DER on success."""
    rows = connection.execute(
        "SELECT e.name, e.status, e.code, e.detail, e.device_id, e.serial_hex, e.request_sha256, c.der FROM batch_entries e "
        "LEFT JOIN batches b ON b.batch_id = e.batch_id "
        "LEFT JOIN certificates c ON c.issuer_key_id = b.issuer_key_id AND c.serial_hex = e.serial_hex "
        "WHERE e.batch_id = ? ORDER BY e.name", (batch_id,))
    for row in rows:
        yield EntryOutcome(*row[:7]), row[7]
