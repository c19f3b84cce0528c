"""The subscriber register's tables (subscribers, subscriber_certificates): every statement smki.register runs.

Rows travel as plain values (text as stored); smki.register turns them into its Subscriber model and
checks every value before it gets here. Writes run in the caller's transaction (never committed here),
so a change and its audit entry are committed together or not at all.

A client certificate is found by its match key, one indexed lookup per key kind:
`fingerprint:<SHA-256 of the DER>` names one certificate exactly; `issuer-and-key:<SHA-256 of the issuer
DN's DER>:<SHA-256 of the SubjectPublicKeyInfo>` names every certificate that issuer gives that key (a
renewal for the same key still matches).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from smki.store.connection import Connection


@dataclass(frozen=True)
class SubscriberRow:
    name: str
    eui64: str  # 16 hex digits
    roles: str  # OU codes, comma-separated
    interfaces: str  # Interface values, comma-separated
    status: str
    created_at: str
    changed_at: str


@dataclass(frozen=True)
class CertificateRow:
    match_key: str
    name: str
    match: str
    fingerprint: str
    issuer: str | None
    registered_at: str


def find_subscriber(connection: Connection, name: str) -> SubscriberRow | None:
    row = connection.execute("SELECT * FROM subscribers WHERE name = ?", (name,)).fetchone()
    return None if row is None else SubscriberRow(*(row[column] for column in _SUBSCRIBER_COLUMNS))


def list_subscribers(connection: Connection) -> list[SubscriberRow]:
    rows = connection.execute("SELECT * FROM subscribers ORDER BY name").fetchall()
    return [SubscriberRow(*(row[column] for column in _SUBSCRIBER_COLUMNS)) for row in rows]


def certificates_of(connection: Connection, names: Iterable[str] | None = None) -> dict[str, list[CertificateRow]]:
    """The registered certificates, by subscriber name (all subscribers', or those of `names`)."""
    rows = connection.execute("SELECT * FROM subscriber_certificates ORDER BY name, registered_at, match_key").fetchall()
    wanted = None if names is None else set(names)
    found: dict[str, list[CertificateRow]] = {}
    for row in rows:
        if wanted is None or row["name"] in wanted:
            found.setdefault(row["name"], []).append(CertificateRow(*(row[column] for column in _CERTIFICATE_COLUMNS)))
    return found


def subscriber_for_keys(connection: Connection, match_keys: Iterable[str]) -> tuple[SubscriberRow, str] | None:
    """The subscriber the first of `match_keys` (in the order given) is registered to, and that key; None: none is."""
    for key in match_keys:
        row = connection.execute("SELECT s.* FROM subscriber_certificates c JOIN subscribers s ON s.name = c.name "
                                 "WHERE c.match_key = ?", (key,)).fetchone()
        if row is not None:
            return SubscriberRow(*(row[column] for column in _SUBSCRIBER_COLUMNS)), key
    return None


def registered_to(connection: Connection, match_key: str) -> str | None:
    """The name of the subscriber `match_key` is registered to, if any."""
    row = connection.execute("SELECT name FROM subscriber_certificates WHERE match_key = ?", (match_key,)).fetchone()
    return None if row is None else row[0]


def insert_subscriber(connection: Connection, subscriber: SubscriberRow, certificate: CertificateRow) -> None:
    connection.execute("INSERT INTO subscribers VALUES (?, ?, ?, ?, ?, ?, ?)",
                       tuple(getattr(subscriber, column) for column in _SUBSCRIBER_COLUMNS))
    insert_certificate(connection, certificate)


def insert_certificate(connection: Connection, certificate: CertificateRow) -> None:
    connection.execute("INSERT INTO subscriber_certificates VALUES (?, ?, ?, ?, ?, ?)",
                       tuple(getattr(certificate, column) for column in _CERTIFICATE_COLUMNS))


def delete_certificate(connection: Connection, name: str, fingerprint: str) -> bool:
    """Forget the subscriber's certificate(s) registered from the certificate with this fingerprint; False: none was."""
    found = connection.execute("SELECT match_key FROM subscriber_certificates WHERE name = ? AND fingerprint = ?",
                               (name, fingerprint)).fetchall()
    connection.executemany("DELETE FROM subscriber_certificates WHERE match_key = ?", [(row[0],) for row in found])
    return bool(found)


def set_status(connection: Connection, name: str, status: str, changed_at: str) -> None:
    connection.execute("UPDATE subscribers SET status = ?, changed_at = ? WHERE name = ?", (status, changed_at, name))


_SUBSCRIBER_COLUMNS = ("name", "eui64", "roles", "interfaces", "status", "created_at", "changed_at")
_CERTIFICATE_COLUMNS = ("match_key", "name", "match", "fingerprint", "issuer", "registered_at")
