"""The batch queue of an Issuing DCA, and the ad hoc submissions the usage rules count.

A batch submitted online is a row here: its upload (a ZIP of `.csr` entries) and the upload's
SHA-256, who submitted it, and its `BatchStatus` through the life cycle of SEC Appendix M:
PENDING (awaiting the Registration Authority) -> PARSING (approved) -> QUEUED -> PROCESSING
(PAUSED outside the processing window) -> COMPLETED; or REJECTED, or TAMPERED. The answers
themselves are the batch's entries (smki/store/batches.py, keyed by the processed file's digest,
`batch_id`); the response ZIP and status file are kept here too, so that any host can serve them.

A processor claims one batch at a time with a lease (`lease_owner`, `lease_until`) and renews it
while it works; a batch whose lease ran out (its processor died) is claimed by another. On
PostgreSQL the claim is `SELECT ... FOR UPDATE SKIP LOCKED`; on SQLite the write transaction is the
lock. Every function runs inside the caller's transaction where it writes; times are ISO 8601 UTC
text of one fixed width, so that text order is time order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from smki.errors import BadInputError
from smki.store.connection import Connection, Dialect, dialect_of


class BatchStatus(enum.StrEnum):
    """A queued batch's BatchStatus (SEC Appendix M, Appendix D), as the web service reports it."""

    PENDING = "PENDING"
    REJECTED = "REJECTED"
    PARSING = "PARSING"
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    TAMPERED = "TAMPERED"

    @property
    def is_open(self) -> bool:
        """Not yet answered: the one-batch-at-a-time rule counts it."""
        return self in _OPEN



def parsed_status(text: BatchStatus | str) -> BatchStatus:
    try:
        return BatchStatus(str(text).strip().upper())
    except ValueError:
        raise BadInputError(f"unknown batch status {str(text)[:32]!r} (one of {', '.join(BatchStatus)})") from None


_OPEN = frozenset({BatchStatus.PENDING, BatchStatus.PARSING, BatchStatus.QUEUED, BatchStatus.PROCESSING, BatchStatus.PAUSED})


_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def timestamp(moment: datetime) -> str:
    """A time as the queue stores it: UTC, microseconds, always the same width."""
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, _FORMAT).replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class QueuedBatch:
    """One queued batch, without its upload and response bytes."""

    number: int  # the BatchId the subscriber polls with
    client_id: str  # the submitter's own ID for the batch
    subscriber: str
    channel: str
    requester: str  # the RemotePartyRole (camel name) it requests as
    entry_count: int
    upload_sha256: str
    status: BatchStatus
    submitted_at: str
    decided_at: str | None = None
    decided_by: str | None = None
    reason: str | None = None  # why the RA rejected it, or why it stopped (TAMPERED)
    batch_id: str | None = None  # the processed file's digest: its answers in batch_entries
    lease_owner: str | None = None
    lease_until: str | None = None
    finished_at: str | None = None
    purged_at: str | None = None
    processing: "ProcessingState | None" = None  # the queue's processing, as the views (list, show, poll) report it

    def under(self, state: "ProcessingState") -> "QueuedBatch":
        """The batch as seen while the processing is in `state`: one approved and waiting (or being processed) is PAUSED
        while the processing is paused (the processor moves a running one there at its next chunk boundary)."""
        held = state.paused and self.status in _HELD_BY_A_PAUSE
        return replace(self, processing=state, status=BatchStatus.PAUSED if held else self.status)

    def as_dict(self) -> dict:
        return {"batch": self.number, "client_id": self.client_id, "subscriber": self.subscriber, "channel": self.channel,
                "requester": self.requester, "entries": self.entry_count, "upload_sha256": self.upload_sha256,
                "status": self.status.value, "submitted_at": self.submitted_at, "decided_at": self.decided_at,
                "decided_by": self.decided_by, "reason": self.reason, "finished_at": self.finished_at,
                "purged": self.purged_at is not None,
                **({"processing": self.processing.as_dict()} if self.processing is not None else {})}


_HELD_BY_A_PAUSE = frozenset({BatchStatus.PARSING, BatchStatus.QUEUED, BatchStatus.PROCESSING})


_COLUMNS = ("batch_number, client_id, subscriber, channel, requester, entry_count, upload_sha256, status, submitted_at, decided_at, "
            "decided_by, reason, batch_id, lease_owner, lease_until, finished_at, purged_at")


def _row(row) -> QueuedBatch:
    values = list(row)
    values[7] = BatchStatus(values[7])
    return QueuedBatch(*values)


def enqueue_batch(connection: Connection, *, client_id: str, subscriber: str, channel: str, requester: str, entry_count: int,
                  upload: bytes, upload_sha256: str, status: BatchStatus, submitted_at: str, decided_by: str | None = None) -> int:
    """A new queued batch (with `decided_by`: approved as it is queued); its number (one more than any before: numbers
    are never reused, rows never deleted)."""
    number = connection.execute("SELECT COALESCE(MAX(batch_number), 0) + 1 FROM batch_queue").fetchone()[0]
    connection.execute(
        "INSERT INTO batch_queue (batch_number, client_id, subscriber, channel, requester, entry_count, upload, upload_sha256, status, "
        "submitted_at, decided_at, decided_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (number, client_id, subscriber, channel, requester, entry_count, upload, upload_sha256, status.value, submitted_at,
         submitted_at if decided_by else None, decided_by))
    return number


def queued_batch(connection: Connection, number: int) -> QueuedBatch | None:
    row = connection.execute(f"SELECT {_COLUMNS} FROM batch_queue WHERE batch_number = ?", (number,)).fetchone()
    return _row(row) if row else None


def queued_batches(connection: Connection, *, subscriber: str | None = None, statuses: tuple[BatchStatus, ...] = (),
                   limit: int = 1000) -> list[QueuedBatch]:
    """Queued batches, newest first, filtered by subscriber and status."""
    where, parameters = ["purged_at IS NULL"], []
    if subscriber is not None:
        where.append("subscriber = ?")
        parameters.append(subscriber)
    if statuses:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        parameters += [status.value for status in statuses]
    rows = connection.execute(f"SELECT {_COLUMNS} FROM batch_queue WHERE {' AND '.join(where)} ORDER BY batch_number DESC LIMIT ?",
                              (*parameters, limit))
    return [_row(row) for row in rows]


def open_batch_count(connection: Connection, subscriber: str) -> int:
    """The subscriber's batches not yet answered (PENDING up to PAUSED)."""
    statuses = sorted(status.value for status in BatchStatus if status.is_open)
    return connection.execute(f"SELECT COUNT(*) FROM batch_queue WHERE subscriber = ? AND status IN ({', '.join('?' * len(statuses))})",
                              (subscriber, *statuses)).fetchone()[0]


def batched_requests_since(connection: Connection, subscriber: str, since: str) -> int:
    """The CSRs of the subscriber's batches submitted at or after `since` (rejected ones included: they were submitted)."""
    return connection.execute("SELECT COALESCE(SUM(entry_count), 0) FROM batch_queue WHERE subscriber = ? AND submitted_at >= ?",
                              (subscriber, since)).fetchone()[0]


def change_status(connection: Connection, number: int, status: BatchStatus, *, allowed_from: tuple[BatchStatus, ...],
                  owner: str | None = None, **columns: str | None) -> bool:
    """Move the batch to `status` (setting the named columns too) if it is in one of `allowed_from` (and, with `owner`,
    held by that processor); False if it was not."""
    assignments = "".join(f", {name} = ?" for name in columns if name in _SETTABLE)
    if len(columns) != assignments.count("?"):
        raise ValueError(f"not a settable column of the batch queue: {sorted(set(columns) - _SETTABLE)}")
    held = " AND lease_owner = ?" if owner is not None else ""
    cursor = connection.execute(
        f"UPDATE batch_queue SET status = ?{assignments} WHERE batch_number = ? AND status IN ({', '.join('?' * len(allowed_from))}){held}",
        (status.value, *columns.values(), number, *(each.value for each in allowed_from), *((owner,) if owner is not None else ())))
    return cursor.rowcount == 1


_SETTABLE = frozenset({"decided_at", "decided_by", "reason", "batch_id", "lease_owner", "lease_until", "finished_at"})


def claim_batch(connection: Connection, owner: str, now: str, lease_until: str, statuses: tuple[BatchStatus, ...]) -> QueuedBatch | None:
    """Claim the oldest batch in one of `statuses` whose lease is free or ran out (inside the caller's write transaction)."""
    lock = " FOR UPDATE SKIP LOCKED" if dialect_of(connection) is Dialect.POSTGRESQL else ""
    row = connection.execute(
        f"SELECT batch_number FROM batch_queue WHERE status IN ({', '.join('?' * len(statuses))}) "
        f"AND (lease_until IS NULL OR lease_until < ?) ORDER BY batch_number LIMIT 1{lock}",
        (*(status.value for status in statuses), now)).fetchone()
    if row is None:
        return None
    connection.execute("UPDATE batch_queue SET lease_owner = ?, lease_until = ? WHERE batch_number = ?", (owner, lease_until, row[0]))
    return queued_batch(connection, row[0])


def renew_lease(connection: Connection, number: int, owner: str, lease_until: str) -> bool:
    """Extend the claim; False when another processor holds the batch now (this one's lease ran out)."""
    cursor = connection.execute("UPDATE batch_queue SET lease_until = ? WHERE batch_number = ? AND lease_owner = ?",
                                (lease_until, number, owner))
    return cursor.rowcount == 1


def release_lease(connection: Connection, number: int, owner: str) -> None:
    connection.execute("UPDATE batch_queue SET lease_owner = NULL, lease_until = NULL WHERE batch_number = ? AND lease_owner = ?",
                       (number, owner))


def batch_upload(connection: Connection, number: int) -> bytes | None:
    row = connection.execute("SELECT upload FROM batch_queue WHERE batch_number = ?", (number,)).fetchone()
    return bytes(row[0]) if row and row[0] is not None else None


def store_response(connection: Connection, number: int, owner: str, response_zip: bytes, status_file: bytes, finished_at: str) -> bool:
    """The batch COMPLETED, its response files kept; False when this processor no longer holds it."""
    cursor = connection.execute(
        "UPDATE batch_queue SET status = ?, response_zip = ?, status_file = ?, finished_at = ?, lease_owner = NULL, lease_until = NULL "
        "WHERE batch_number = ? AND lease_owner = ?",
        (BatchStatus.COMPLETED.value, response_zip, status_file, finished_at, number, owner))
    return cursor.rowcount == 1


def response_files(connection: Connection, number: int) -> tuple[bytes, bytes] | None:
    row = connection.execute("SELECT response_zip, status_file FROM batch_queue WHERE batch_number = ? AND purged_at IS NULL",
                             (number,)).fetchone()
    return (bytes(row[0]), bytes(row[1])) if row and row[0] is not None else None


def purge_finished(connection: Connection, finished_before: str, now: str) -> list[int]:
    """Drop the upload and response files of batches answered (or rejected) before `finished_before`; the rows stay
    (their numbers are never reused), marked purged. Returns the batches purged."""
    numbers = [row[0] for row in connection.execute(
        "SELECT batch_number FROM batch_queue WHERE purged_at IS NULL AND COALESCE(finished_at, decided_at) < ? "
        "AND status IN (?, ?, ?) ORDER BY batch_number",
        (finished_before, BatchStatus.COMPLETED.value, BatchStatus.REJECTED.value, BatchStatus.TAMPERED.value))]
    connection.executemany("UPDATE batch_queue SET upload = NULL, response_zip = NULL, status_file = NULL, purged_at = ? "
                           "WHERE batch_number = ?", [(now, number) for number in numbers])
    return numbers


# -- ad hoc submissions (the usage rules' counters) ------------------------------------------------
def record_adhoc_submission(connection: Connection, subscriber: str, channel: str, at: str) -> None:
    connection.execute("INSERT INTO adhoc_submissions (subscriber, channel, submitted_at) VALUES (?, ?, ?)", (subscriber, channel, at))


def last_adhoc_submission(connection: Connection, subscriber: str, channel: str) -> str | None:
    return connection.execute("SELECT MAX(submitted_at) FROM adhoc_submissions WHERE subscriber = ? AND channel = ?",
                              (subscriber, channel)).fetchone()[0]


def adhoc_submissions_since(connection: Connection, subscriber: str, channel: str, since: str) -> int:
    return connection.execute("SELECT COUNT(*) FROM adhoc_submissions WHERE subscriber = ? AND channel = ? AND submitted_at >= ?",
                              (subscriber, channel, since)).fetchone()[0]


def purge_adhoc_submissions(connection: Connection, before: str) -> int:
    return connection.execute("DELETE FROM adhoc_submissions WHERE submitted_at < ?", (before,)).rowcount


# -- the queue's processing: paused or running, for every processor on every host ------------------
@dataclass(frozen=True)
class ProcessingState:
    """Whether the operator has paused the queue's processing; since when, by whom and why (None: never paused or resumed)."""

    paused: bool = False
    since: str | None = None  # when it was last paused (or resumed)
    by: str | None = None
    reason: str | None = None  # why it was paused

    def as_dict(self) -> dict:
        return {"paused": self.paused, "since": self.since, "by": self.by, "reason": self.reason}


def processing_state(connection: Connection) -> ProcessingState:
    row = connection.execute("SELECT paused, changed_at, changed_by, reason FROM batch_processing WHERE singleton = 1").fetchone()
    return ProcessingState(bool(row[0]), row[1], row[2], row[3]) if row else ProcessingState()


def set_processing(connection: Connection, paused: bool, at: str, by: str, reason: str | None) -> bool:
    """Pause (or resume) the processing, inside the caller's write transaction; False when it already was paused (or running)."""
    if processing_state(connection).paused == paused:
        return False
    connection.execute("DELETE FROM batch_processing WHERE singleton = 1")
    connection.execute("INSERT INTO batch_processing (singleton, paused, changed_at, changed_by, reason) VALUES (1, ?, ?, ?, ?)",
                       (int(paused), at, by, reason if paused else None))
    return True
