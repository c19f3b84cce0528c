"""Lodged CRLs and ARLs, and the repository status changes they cause, inside the caller's transaction.

SQL here is kept portable (`?` placeholders, no SQLite-only functions) because the store is
also served by PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields

from smki.errors import ConflictError

# cRLNumber is at most 20 octets (RFC 5280 5.2.3): too wide for a 64-bit INTEGER column, so it is
# stored as fixed-width hex, whose text order is its numeric order (MAX and ORDER BY stay correct).
CRL_NUMBER_DIGITS = 40


def crl_number_key(number: int) -> str:
    return f"{number:0{CRL_NUMBER_DIGITS}X}"


@dataclass(frozen=True)
class LodgedCrl:
    issuer_key_id: str
    crl_number: str  # crl_number_key(n)
    kind: str  # crl or arl
    this_update: str
    next_update: str
    sha256: str
    der: bytes
    lodged_at: str

    @property
    def number(self) -> int:
        return int(self.crl_number, 16)

    def summary(self) -> dict:
        """Everything but the DER, with the number in decimal as people read it."""
        described = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "der"}
        return {**described, "crl_number": self.number}


_COLUMNS = [field.name for field in fields(LodgedCrl)]


def insert_lodged_crl(connection: sqlite3.Connection, crl: LodgedCrl) -> None:
    try:
        connection.execute(f"INSERT INTO lodged_crls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
                           [getattr(crl, column) for column in _COLUMNS])
    except sqlite3.IntegrityError:
        raise ConflictError(f"CRL number {crl.number} from issuer {crl.issuer_key_id} is already lodged") from None


def _lodged(row) -> LodgedCrl:
    return LodgedCrl(**{column: row[column] for column in _COLUMNS})


def latest_lodged_crl(connection: sqlite3.Connection, issuer_key_id: str) -> LodgedCrl | None:
    """The issuer's current CRL or ARL: the highest cRLNumber lodged."""
    row = connection.execute("SELECT * FROM lodged_crls WHERE issuer_key_id = ? ORDER BY crl_number DESC LIMIT 1",
                             (issuer_key_id,)).fetchone()
    return _lodged(row) if row else None


def current_lodged_crls(connection: sqlite3.Connection) -> list[LodgedCrl]:
    """Every issuer's current CRL or ARL, in issuer order."""
    rows = connection.execute(
        "SELECT c.* FROM lodged_crls c WHERE c.crl_number = "
        "(SELECT MAX(l.crl_number) FROM lodged_crls l WHERE l.issuer_key_id = c.issuer_key_id) "
        "ORDER BY c.issuer_key_id").fetchall()
    return [_lodged(row) for row in rows]


def mark_revoked(connection: sqlite3.Connection, issuer_key_id: str, serials: set[str], changed_at: str, source: str) -> list[str]:
    """Set status R on the issuer's lodged certificates among `serials` that are not R yet; record each change.

    Returns the serials whose status changed, in order.
    """
    live = [row[0] for row in connection.execute(
        "SELECT serial_hex FROM certificates WHERE issuer_key_id = ? AND status <> 'R' ORDER BY serial_hex", (issuer_key_id,))]
    changed = [serial for serial in live if serial in serials]
    connection.executemany("UPDATE certificates SET status = 'R' WHERE issuer_key_id = ? AND serial_hex = ?",
                           [(issuer_key_id, serial) for serial in changed])
    connection.executemany("INSERT INTO certificate_status_changes VALUES (?, ?, 'R', ?, ?)",
                           [(issuer_key_id, serial, changed_at, source) for serial in changed])
    return changed
