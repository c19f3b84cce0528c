"""Issued-certificate records: every certificate an authority signs, with the policy that allowed it."""

from __future__ import annotations

import operator
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from enum import Enum

from smki.errors import BadInputError, ConflictError, StoreConflictError
from smki.store.connection import Connection


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


class RepositoryStatus(str, Enum):
    """The status codes parties see (search, retrieve, bulk files)."""

    PENDING = "P"
    IN_USE = "I"
    NOT_IN_USE = "N"
    EXPIRED = "E"
    REVOKED = "R"


# The one place repository status is derived (every reader selects it; filters compare it), for a row
# `c` of certificates and one parameter, the time now (status_now()). Revoked wins: R recorded on the
# row (an authority's revocation, or a lodged list naming a certificate lodged before it) or any lodged
# list of the certificate's issuer naming its serial (the list may have arrived first). Otherwise a
# certificate past its notAfter is expired; otherwise the recorded status (P, I or N) stands. Derived
# when read, not stored, because expiry follows the clock and revocation follows lodging order.
_REVOKED, _EXPIRED = f"'{RepositoryStatus.REVOKED.value}'", f"'{RepositoryStatus.EXPIRED.value}'"
REPOSITORY_STATUS_SQL = (
    f"CASE WHEN c.status = {_REVOKED} OR EXISTS (SELECT 1 FROM listed_serials l WHERE l.issuer_key_id = c.issuer_key_id "
    f"AND l.serial_hex = c.serial_hex) THEN {_REVOKED} WHEN c.not_after < ? THEN {_EXPIRED} ELSE c.status END")


def status_now(now: datetime | None = None) -> str:
    """REPOSITORY_STATUS_SQL's parameter: the time as not_after is written (ISO 8601, UTC, to the second),
    so text order is time order (notAfter itself is still within the validity period)."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="seconds")


_SELECT = "SELECT " + ", ".join(f"{REPOSITORY_STATUS_SQL} AS status" if column == "status" else f"c.{column}"
                                for column in _COLUMNS) + " FROM certificates c"
_ROW = operator.attrgetter(*_COLUMNS)  # a record's values in column order, in one call


_INSERT = f"INSERT INTO certificates ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"


def insert_certificate(connection: Connection, record: CertificateRecord) -> None:
    """Record an issued certificate (inside the caller's transaction). A repeated serial is refused."""
    try:
        connection.execute(_INSERT, _ROW(record))
    except StoreConflictError:
        raise ConflictError(f"certificate serial {record.serial_hex} from issuer {record.issuer_key_id} is already recorded") from None


def insert_certificates(connection: Connection, records: list[CertificateRecord]) -> None:
    """Many records in one statement (a batch's chunk, inside the caller's transaction)."""
    try:
        connection.executemany(_INSERT, map(_ROW, records))
    except StoreConflictError as exc:
        raise ConflictError(f"a certificate of this chunk is already recorded ({exc.detail})") from None


def _record(row) -> CertificateRecord:
    return CertificateRecord(**{column: row[column] for column in _COLUMNS})


MAX_SERIAL_OCTETS = 20  # RFC 5280 4.1.2.2


def normalised_serial_hex(text: str) -> str:
    """A serial number as given by an operator (hex, colons allowed), in the stored form (upper-case hex)."""
    serial = text.strip().upper().replace(":", "")
    if not serial or any(ch not in "0123456789ABCDEF" for ch in serial):
        # Repeated only when printable: the value then shows what was typed without breaking the line.
        shown = f" {text!r}" if text.isprintable() and len(text) <= 2 * MAX_SERIAL_OCTETS + 20 else ""
        raise BadInputError(f"serial{shown} is not hexadecimal")
    if len(serial) > 2 * MAX_SERIAL_OCTETS:
        raise BadInputError(f"serial is longer than {MAX_SERIAL_OCTETS} octets")
    return serial


def find_certificate(connection: Connection, serial_hex: str) -> list[CertificateRecord]:
    """Records with this serial (one per issuer at most)."""
    serial = normalised_serial_hex(serial_hex)
    rows = connection.execute(f"{_SELECT} WHERE c.serial_hex = ?", (status_now(), serial)).fetchall()
    return [_record(row) for row in rows]


def list_certificates(connection: Connection, *, certificate_type: str | None = None, entity_id: str | None = None,
                      status: str | None = None, role: str | None = None, key_usage: str | None = None,
                      subject_key_id: str | None = None, limit: int = 1000) -> list[CertificateRecord]:
    """Records matching every filter given (None: any), oldest first."""
    now = status_now()
    clauses, values = _filters((("certificate_type", certificate_type), ("entity_id", entity_id), ("role", role),
                                ("key_usage", key_usage), ("subject_key_id", subject_key_id)), status, now)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    rows = connection.execute(f"{_SELECT} {where} ORDER BY c.issued_at, c.serial_hex LIMIT ?", (now, *values, limit)).fetchall()
    return [_record(row) for row in rows]


def _filters(columns: tuple[tuple[str, str | None], ...], status: str | None, now: str) -> tuple[list[str], list]:
    """WHERE clauses and their values: each column given (None: any), and the derived status."""
    clauses, values = [], []
    for column, value in columns:
        if value is not None:
            clauses.append(f"c.{column} = ?")
            values.append(value)
    if status is not None:
        clauses.append(f"{REPOSITORY_STATUS_SQL} = ?")
        values += [now, status]
    return clauses, values


def search_certificates(connection: Connection, *, entity_id: str, certificate_type: str,
                        key_usage: str | None = None, role: str | None = None, status: str | None = None) -> list[CertificateRecord]:
    """Every certificate for an EUI-64 of one type (a party may hold several live ones): clients pick by serial."""
    now = status_now()
    clauses, values = _filters((("entity_id", entity_id), ("certificate_type", certificate_type), ("key_usage", key_usage),
                                ("role", role)), status, now)
    rows = connection.execute(f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY c.issued_at, c.serial_hex", (now, *values)).fetchall()
    return [_record(row) for row in rows]
