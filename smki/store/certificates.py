"""Issued-certificate records: every certificate an authority signs, with the policy that allowed it."""

from __future__ import annotations

import operator
import sqlite3
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from smki.errors import BadInputError, ConflictError


@dataclass(frozen=True)
class CertificateRecord:
    serial_hex: str
    issuer_key_id: str
    certificate_type: str
    subject_key_id: str
    status: str
    not_before: str
    not_after: str
    der: bytes
    entity_id: str | None = None
    role: str | None = None
    key_usage: str | None = None
    policy_name: str | None = None
    policy_version: str | None = None
    policy_sha256: str | None = None
    request_sha256: str | None = None
    issued_at: str = ""

    def __post_init__(self) -> None:
        if not self.issued_at:
            object.__setattr__(self, "issued_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def summary(self) -> dict:
        """Everything but the DER, for --json output and audit subjects."""
        return {field.name: getattr(self, field.name) for field in fields(self) if field.name != "der"}


_COLUMNS = [field.name for field in fields(CertificateRecord)]
_ROW = operator.attrgetter(*_COLUMNS)  # a record's values in column order, in one call


_INSERT = f"INSERT INTO certificates ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"


def insert_certificate(connection: sqlite3.Connection, record: CertificateRecord) -> None:
    """Record an issued certificate (inside the caller's transaction). A repeated serial is refused."""
    try:
        connection.execute(_INSERT, _ROW(record))
    except sqlite3.IntegrityError:
        raise ConflictError(f"certificate serial {record.serial_hex} from issuer {record.issuer_key_id} is already recorded") from None


def insert_certificates(connection: sqlite3.Connection, records: list[CertificateRecord]) -> None:
    """Many records in one statement (a batch's chunk, inside the caller's transaction)."""
    try:
        connection.executemany(_INSERT, map(_ROW, records))
    except sqlite3.IntegrityError as exc:
        raise ConflictError(f"a certificate of this chunk is already recorded ({exc})") from None


def _record(row: sqlite3.Row) -> CertificateRecord:
    return CertificateRecord(**{column: row[column] for column in _COLUMNS})


def find_certificate(connection: sqlite3.Connection, serial_hex: str) -> list[CertificateRecord]:
    """Records with this serial (one per issuer at most)."""
    serial = serial_hex.strip().upper().replace(":", "")
    if not serial or any(ch not in "0123456789ABCDEF" for ch in serial):
        raise BadInputError(f"serial {serial_hex!r} is not hexadecimal")
    rows = connection.execute("SELECT * FROM certificates WHERE serial_hex = ?", (serial,)).fetchall()
    return [_record(row) for row in rows]


def list_certificates(connection: sqlite3.Connection, *, certificate_type: str | None = None, entity_id: str | None = None,
                      status: str | None = None, role: str | None = None, key_usage: str | None = None,
                      subject_key_id: str | None = None, limit: int = 1000) -> list[CertificateRecord]:
    """Records matching every filter given (None: any), oldest first."""
    clauses, values = [], []
    filters = (("certificate_type", certificate_type), ("entity_id", entity_id), ("status", status), ("role", role),
               ("key_usage", key_usage), ("subject_key_id", subject_key_id))
    for column, value in filters:
        if value is not None:
            clauses.append(f"{column} = ?")
            values.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(f"SELECT * FROM certificates {where} ORDER BY issued_at, serial_hex LIMIT ?", (*values, limit)).fetchall()
    return [_record(row) for row in rows]


def search_certificates(connection: sqlite3.Connection, *, entity_id: str, certificate_type: str,
                        key_usage: str | None = None, role: str | None = None, status: str | None = None) -> list[CertificateRecord]:
    """Every certificate for an EUI-64 of one type (a party may hold several live ones): clients pick by serial."""
    clauses, values = ["entity_id = ?", "certificate_type = ?"], [entity_id, certificate_type]
    for column, value in (("key_usage", key_usage), ("role", role), ("status", status)):
        if value is not None:
            clauses.append(f"{column} = ?")
            values.append(value)
    rows = connection.execute(f"SELECT * FROM certificates WHERE {' AND '.join(clauses)} ORDER BY issued_at, serial_hex", values).fetchall()
    return [_record(row) for row in rows]
