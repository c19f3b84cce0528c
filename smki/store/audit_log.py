"""The audit trail's tables (audit_entries, audit_checkpoints, audit_keys): every statement smki.audit runs.

The trail (smki.audit.trail) chains and hashes the entries and signs the checkpoints; this module only
stores and reads what it computed, in the caller's transaction (it never commits). Rows are plain
tuples in the tables' column order, so a batch's entries go to the database through one `executemany`:
on SQLite that stays sqlite3's C loop (benchmarks/bench_audit.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from smki.store.connection import Connection

# audit_entries' columns, in order: (seq, time, actor, operation, subject, policy, outcome, details, prev_hash, entry_hash)
EntryRow = tuple[int, str, str, str, str, str | None, str, str, str, str]


def head(connection: Connection) -> tuple[int, str] | None:
    """The last entry's sequence number and hash; None for an empty trail."""
    row = connection.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else None


def entry_hash_at(connection: Connection, seq: int) -> str | None:
    """The hash recorded for entry `seq`; None when the trail holds no such entry."""
    row = connection.execute("SELECT entry_hash FROM audit_entries WHERE seq = ?", (seq,)).fetchone()
    return None if row is None else row[0]


def insert_entries(connection: Connection, rows: Sequence[EntryRow]) -> None:
    """Insert entries already chained and hashed, all through one statement."""
    connection.executemany("INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def record_checkpoint(connection: Connection, seq: int, head_hash: str, time: str, context: str, key_id: str,
                      public_key_pem: str, signature: bytes) -> None:
    """Record a signed checkpoint and the public key that signed it (kept once per key, so a verifier needs
    nothing else). A later checkpoint at the same head replaces the earlier one."""
    connection.execute("INSERT INTO audit_keys VALUES (?, ?) ON CONFLICT DO NOTHING", (key_id, public_key_pem))
    connection.execute("INSERT INTO audit_checkpoints VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (seq) DO UPDATE SET "
                       "head_hash = excluded.head_hash, time = excluded.time, context = excluded.context, "
                       "key_id = excluded.key_id, signature = excluded.signature",
                       (seq, head_hash, time, context, key_id, signature))


def audit_key_pems(connection: Connection) -> list[str]:
    """The PEM public key of every audit key that signed a checkpoint in this store, in key-id order."""
    return [row[0] for row in connection.execute("SELECT public_key_pem FROM audit_keys ORDER BY key_id")]


def entries_and_checkpoints(connection: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every entry and every checkpoint, column by column, in stored order (signatures as the driver returns them)."""
    # seq is the INTEGER PRIMARY KEY, i.e. SQLite's rowid: stored order, on PostgreSQL too.
    entries = [dict(row) for row in connection.execute("SELECT * FROM audit_entries ORDER BY seq")]
    checkpoints = [dict(row) for row in connection.execute("SELECT * FROM audit_checkpoints ORDER BY seq")]
    return entries, checkpoints
