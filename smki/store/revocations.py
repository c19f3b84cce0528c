"""Revocations and CRL numbers, inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime

from smki.errors import BadInputError, ConflictError
from smki.store.connection import Connection


def check_revocable(connection: Connection, issuer_key_id: str, serial_hex: str) -> None:
    """Refuse a certificate the issuer has no record of (exit 3) or has already revoked (exit 5); reads only."""
    status = connection.execute("SELECT status FROM certificates WHERE issuer_key_id = ? AND serial_hex = ?", (issuer_key_id, serial_hex)).fetchone()
    if status is None:
        raise BadInputError(f"no certificate {serial_hex} from issuer {issuer_key_id} in this authority's records")
    if status[0] == "R":
        raise ConflictError(f"certificate {serial_hex} is already revoked")


def record_revocation(connection: Connection, issuer_key_id: str, serial_hex: str, revoked_at: datetime, reason: str) -> None:
    """Mark the certificate revoked (status R) and list it for the issuer's next CRL."""
    check_revocable(connection, issuer_key_id, serial_hex)
    connection.execute("UPDATE certificates SET status = 'R' WHERE issuer_key_id = ? AND serial_hex = ?", (issuer_key_id, serial_hex))
    connection.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", (issuer_key_id, serial_hex, revoked_at.isoformat(), reason))


def revoked_entries(connection: Connection, issuer_key_id: str) -> list[tuple[str, str, str]]:
    """(serial hex, revoked at ISO, reason) of every revocation by this issuer, in serial order."""
    return [tuple(row) for row in connection.execute(
        "SELECT serial_hex, revoked_at, reason FROM revocations WHERE issuer_key_id = ? ORDER BY serial_hex", (issuer_key_id,))]


def last_crl_number(connection: Connection, issuer_key_id: str) -> int:
    """The issuer's last cRLNumber issued (0 before the first)."""
    row = connection.execute("SELECT last_number FROM crl_numbers WHERE issuer_key_id = ?", (issuer_key_id,)).fetchone()
    return row[0] if row else 0


def next_crl_number(connection: Connection, issuer_key_id: str, issued_at: datetime) -> int:
    """The issuer's next cRLNumber, persisted: strictly increasing across runs and crashes (the caller commits)."""
    number = last_crl_number(connection, issuer_key_id) + 1
    connection.execute("INSERT INTO crl_numbers VALUES (?, ?, ?) ON CONFLICT (issuer_key_id) "
                       "DO UPDATE SET last_number = excluded.last_number, issued_at = excluded.issued_at",
                       (issuer_key_id, number, issued_at.isoformat()))
    return number
