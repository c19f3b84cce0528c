"""Bulk files of the repository for parties: a full file and a delta file (format smki-bulk/1).

Each file is gzip-compressed JSON Lines (UTF-8, one JSON object and a newline per
certificate, keys sorted) with these fields:

    serial, issuer_key_id, subject_key_id   uppercase hex
    type                                    root, issuing-ca, organisation or device
    eui64                                   16 hex digits (organisation uniqueIdentifier or device hwSerialNum), or null
    role                                    RemotePartyRole OU code (2 hex digits, organisation certificates), or null
    usage                                   DS or KA (end-entity certificates), or null
    status                                  repository status now: P, I, N, E or R
    not_before, not_after, lodged_at        ISO 8601, UTC
    der                                     the certificate, Base64 DER
    changes (delta only)                    ["lodged"] and/or ["status"]: why the line is in the delta

The full file holds every certificate; the delta holds those lodged (or issued, in an
authority's own database) since a time, and those whose status changed since then (a lodged
CRL/ARL revoking them, or a revocation recorded by the authority). Lines are ordered by
lodged_at, issuer, serial. The gzip header carries no name or time, so the same content
gives the same bytes. A file that already exists is never overwritten.
"""

from __future__ import annotations

import base64
import enum
import gzip
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from smki.files import WriteMode, atomic_file, refuse_existing
from smki.store.repository import BulkRow, bulk_changes_since, bulk_rows

BULK_FORMAT = "smki-bulk/1"
DEFAULT_DELTA_PERIOD = timedelta(days=1)

class BulkKind(enum.StrEnum):
    """What a bulk file holds: every published certificate, or the changes over a period."""

    FULL = "full"
    DELTA = "delta"


@dataclass(frozen=True)
class BulkFile:
    path: Path
    bulk_kind: BulkKind
    certificates: int
    sha256: str  # of the compressed file, as a party downloads it

    def summary(self) -> dict:
        return {"file": str(self.path), "kind": self.bulk_kind, "certificates": self.certificates, "sha256": self.sha256}


def iso_utc(moment: datetime) -> str:
    """The text form every time column uses: ISO 8601 to the second, UTC, so text order is time order."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _line(row: BulkRow, changes: list[str] | None = None) -> bytes:
    line = {"serial": row.serial_hex, "issuer_key_id": row.issuer_key_id, "subject_key_id": row.subject_key_id,
            "type": row.certificate_type, "eui64": row.entity_id, "role": row.role, "usage": row.key_usage, "status": row.status,
            "not_before": row.not_before, "not_after": row.not_after, "lodged_at": row.lodged_at,
            "der": base64.b64encode(bytes(row.der)).decode("ascii")}
    if changes is not None:
        line["changes"] = changes
    return (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def full_lines(connection: sqlite3.Connection, now: datetime | None = None) -> Iterator[bytes]:
    # Streamed from the cursor: a full file may hold millions of certificates.
    for row in bulk_rows(connection, now):
        yield _line(row)


def delta_lines(connection: sqlite3.Connection, since: datetime, now: datetime | None = None) -> Iterator[bytes]:
    for change in bulk_changes_since(connection, iso_utc(since), now):
        yield _line(change.row, [name for name, flag in (("lodged", change.lodged), ("status", change.status_changed)) if flag])


class _HashingWriter:
    """Passes writes through to a file and hashes them: the digest of the file as written."""

    def __init__(self, stream) -> None:
        self.stream, self.digest = stream, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.stream.write(data)

    def flush(self) -> None:
        self.stream.flush()


def write_bulk_file(path: Path, bulk_kind: BulkKind, lines: Iterable[bytes]) -> BulkFile:
    """Stream `lines` gzip-compressed into a temporary file beside `path`, then link it into place if `path` is still free."""
    count = 0
    with atomic_file(path, WriteMode.NEW) as raw:
        hashing = _HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashing, mtime=0) as stream:
            for line in lines:
                stream.write(line)
                count += 1
    return BulkFile(Path(path), bulk_kind, count, hashing.digest.hexdigest())


def bulk_file_names(now: datetime) -> tuple[str, str]:
    """One full and one delta file a day, named by the UTC date they were made."""
    day = now.astimezone(timezone.utc).strftime("%Y-%m-%d")
    return f"smki-full-{day}.jsonl.gz", f"smki-delta-{day}.jsonl.gz"


def write_bulk_files(connection: sqlite3.Connection, directory: Path, *, since: datetime | None = None,
                     now: datetime | None = None) -> list[BulkFile]:
    """The full file and the delta file since `since` (default: a day before `now`). Neither is written if either exists."""
    now = now or datetime.now(timezone.utc)
    since = since or now - DEFAULT_DELTA_PERIOD
    full_name, delta_name = bulk_file_names(now)
    for name in (full_name, delta_name):
        refuse_existing(Path(directory) / name)
    return [write_bulk_file(Path(directory) / full_name, BulkKind.FULL, full_lines(connection, now)),
            write_bulk_file(Path(directory) / delta_name, BulkKind.DELTA, delta_lines(connection, since, now))]
