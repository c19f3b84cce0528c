"""Lodged CRLs and ARLs, and the repository status changes they cause, inside the caller's transaction.

SQL here is written once in a form SQLite and PostgreSQL both accept (`?` placeholders,
`INSERT ... ON CONFLICT`); the one DDL statement is written per dialect.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields

from cryptography import x509

from smki.errors import ConflictError, StoreConflictError
from smki.store.connection import Connection, Dialect, dialect_of

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


def insert_lodged_crl(connection: Connection, crl: LodgedCrl) -> None:
    try:
        connection.execute(f"INSERT INTO lodged_crls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})",
                           [getattr(crl, column) for column in _COLUMNS])
    except StoreConflictError:
        raise ConflictError(f"CRL number {crl.number} from issuer {crl.issuer_key_id} is already lodged") from None


def _lodged(row) -> LodgedCrl:
    return LodgedCrl(**{column: row[column] for column in _COLUMNS})


def latest_lodged_crl(connection: Connection, issuer_key_id: str) -> LodgedCrl | None:
    """The issuer's current CRL or ARL: the highest cRLNumber lodged."""
    row = connection.execute("SELECT * FROM lodged_crls WHERE issuer_key_id = ? ORDER BY crl_number DESC LIMIT 1",
                             (issuer_key_id,)).fetchone()
    return _lodged(row) if row else None


def lodged_crl(connection: Connection, issuer_key_id: str, number: int) -> LodgedCrl | None:
    """The issuer's list with this cRLNumber, if one is lodged (the primary key)."""
    row = connection.execute("SELECT * FROM lodged_crls WHERE issuer_key_id = ? AND crl_number = ?",
                             (issuer_key_id, crl_number_key(number))).fetchone()
    return _lodged(row) if row else None


def current_lodged_crls(connection: Connection) -> list[LodgedCrl]:
    """Every issuer's current CRL or ARL, in issuer order."""
    rows = connection.execute(
        "SELECT c.* FROM lodged_crls c WHERE c.crl_number = "
        "(SELECT MAX(l.crl_number) FROM lodged_crls l WHERE l.issuer_key_id = c.issuer_key_id) "
        "ORDER BY c.issuer_key_id").fetchall()
    return [_lodged(row) for row in rows]


def mark_revoked(connection: Connection, issuer_key_id: str, serials: set[str], changed_at: str, source: str) -> list[str]:
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


# Every serial a lodged list names, kept per issuer (the first list to name it), so that a certificate
# lodged after the list that revokes it is revoked too: repository status reads this table
# (smki.store.certificates.REPOSITORY_STATUS_SQL), whatever the order in which lists and certificates arrive.
_LISTED_SERIALS_SCHEMA = {Dialect.SQLITE: """
    CREATE TABLE listed_serials (
        issuer_key_id TEXT NOT NULL,         -- the list's issuer (its AKI) = the certificate's issuer
        serial_hex    TEXT NOT NULL,         -- as certificates.serial_hex
        crl_number    TEXT NOT NULL,         -- crl_number_key of the first lodged list that names it
        PRIMARY KEY (issuer_key_id, serial_hex)
    )
""", Dialect.POSTGRESQL: """
    CREATE TABLE listed_serials (
        issuer_key_id TEXT COLLATE "C" NOT NULL, serial_hex TEXT COLLATE "C" NOT NULL, crl_number TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (issuer_key_id, serial_hex)
    )
"""}


def record_listed_serials(connection: Connection, crl: LodgedCrl, serials: Iterable[str]) -> None:
    """Remember the serials `crl` names (inside the caller's transaction); ones named before keep their first list."""
    connection.executemany("INSERT INTO listed_serials VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                           [(crl.issuer_key_id, serial, crl.crl_number) for serial in serials])


def _serial_hex(serial: int) -> str:
    # The repository's serial form (smki.profiles.serials.serial_hex, which the store sits below):
    # uppercase hex, two digits an octet. tests/test_librarian_hardening.py checks the two agree.
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def create_listed_serials(connection: Connection) -> None:
    """Migration 7: the listed_serials table, filled from the lists lodged before it existed."""
    connection.execute(_LISTED_SERIALS_SCHEMA[dialect_of(connection)])
    for row in connection.execute("SELECT * FROM lodged_crls ORDER BY issuer_key_id, crl_number").fetchall():
        crl = _lodged(row)
        record_listed_serials(connection, crl, [_serial_hex(entry.serial_number) for entry in x509.load_der_x509_crl(bytes(crl.der))])
