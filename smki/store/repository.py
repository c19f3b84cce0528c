"""The repository's bulk reads: every lodged certificate, streamed, for publishing and the bulk files.

Plain SELECTs with `?` parameters, as every store module writes them, so SQLite and PostgreSQL
answer them alike. Each function streams from the cursor: a repository may hold millions of
device certificates, so nothing here builds a list.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from typing import NamedTuple

from smki.store.certificates import REPOSITORY_STATUS_SQL, status_now


class PublishedCertificate(NamedTuple):
    issuer_key_id: str
    serial_hex: str
    der: bytes


class BulkRow(NamedTuple):
    """One certificate as a bulk file line describes it; `status` is the repository status now."""

    serial_hex: str
    issuer_key_id: str
    subject_key_id: str
    certificate_type: str
    entity_id: str | None
    role: str | None
    key_usage: str | None
    status: str
    not_before: str
    not_after: str
    lodged_at: str
    der: bytes


class BulkChange(NamedTuple):
    """A delta line's row and why it is in the delta."""

    row: BulkRow
    lodged: bool  # lodged (or issued) since the start of the delta
    status_changed: bool  # revoked since then, by a lodged CRL/ARL or an authority's own revocation


# The status as every reader derives it (one parameter: status_now()).
_BULK_COLUMNS = ("c.serial_hex, c.issuer_key_id, c.subject_key_id, c.certificate_type, c.entity_id, c.role, c.key_usage, "
                 f"{REPOSITORY_STATUS_SQL}, c.not_before, c.not_after, c.issued_at, c.der")
_BULK_ORDER = "ORDER BY c.issued_at, c.issuer_key_id, c.serial_hex"
# Status changes come from CRLs the Librarian lodged, and from revocations an authority recorded in its own database
# (two parameters: the start of the delta, twice).
_STATUS_CHANGED_SINCE = (
    "(EXISTS (SELECT 1 FROM certificate_status_changes s WHERE s.issuer_key_id = c.issuer_key_id "
    "AND s.serial_hex = c.serial_hex AND s.changed_at >= ?) "
    "OR EXISTS (SELECT 1 FROM revocations r WHERE r.issuer_key_id = c.issuer_key_id "
    "AND r.serial_hex = c.serial_hex AND r.revoked_at >= ?))")


def published_certificates(connection: sqlite3.Connection) -> Iterator[PublishedCertificate]:
    """Every lodged certificate's issuer, serial and DER, by issuer then serial (the published layout's order)."""
    for issuer_key_id, serial, der in connection.execute(
            "SELECT issuer_key_id, serial_hex, der FROM certificates ORDER BY issuer_key_id, serial_hex"):
        yield PublishedCertificate(issuer_key_id, serial, bytes(der))


def bulk_rows(connection: sqlite3.Connection, now: datetime | None = None) -> Iterator[BulkRow]:
    """Every certificate, in bulk-file order (lodged_at, issuer, serial), with its status at `now`."""
    for row in connection.execute(f"SELECT {_BULK_COLUMNS} FROM certificates c {_BULK_ORDER}", (status_now(now),)):
        yield BulkRow(*row)


def bulk_changes_since(connection: sqlite3.Connection, since: str, now: datetime | None = None) -> Iterator[BulkChange]:
    """Certificates lodged, or whose status changed, at or after `since` (ISO 8601 UTC text, as the columns hold times)."""
    rows = connection.execute(
        f"SELECT {_BULK_COLUMNS}, CASE WHEN c.issued_at >= ? THEN 1 ELSE 0 END, CASE WHEN {_STATUS_CHANGED_SINCE} THEN 1 ELSE 0 END "
        f"FROM certificates c WHERE c.issued_at >= ? OR {_STATUS_CHANGED_SINCE} {_BULK_ORDER}",
        (status_now(now), since, since, since, since, since, since))
    for *row, lodged, status_changed in rows:
        yield BulkChange(BulkRow(*row), bool(lodged), bool(status_changed))
