"""The SMKI Portal's password accounts and sessions (tables portal_accounts, portal_login_failures,
portal_sessions): every statement smki.register.accounts runs.

Rows travel as plain values; smki.register.accounts checks every value before it gets here. Writes run in
the caller's transaction (never committed here), so a change and its audit entry commit together.
A session is stored by the SHA-256 of its token, never the token itself: the store holds no bearer secret.
"""

from __future__ import annotations

from dataclasses import dataclass

from smki.store.connection import Connection


@dataclass(frozen=True)
class AccountRow:
    username: str
    subscriber: str  # the register's name of the Authorised Subscriber the account acts for
    password_hash: str  # an argon2id hash (PHC string)
    status: str  # active, locked (by an operator), removed
    locked_until: str | None  # ISO 8601 UTC: locked after too many wrong passwords, until then
    created_at: str
    changed_at: str


@dataclass(frozen=True)
class SessionRow:
    token_sha256: str
    kind: str  # password, certificate
    subscriber: str
    username: str | None  # the account, for a password session
    fingerprint: str | None  # the client certificate it is bound to, for a certificate session
    csrf_token: str
    created_at: str
    expires_at: str


def find_account(connection: Connection, username: str) -> AccountRow | None:
    row = connection.execute("SELECT * FROM portal_accounts WHERE username = ?", (username,)).fetchone()
    return None if row is None else AccountRow(*(row[column] for column in _ACCOUNT_COLUMNS))


def list_accounts(connection: Connection) -> list[AccountRow]:
    rows = connection.execute("SELECT * FROM portal_accounts ORDER BY username").fetchall()
    return [AccountRow(*(row[column] for column in _ACCOUNT_COLUMNS)) for row in rows]


def insert_account(connection: Connection, account: AccountRow) -> None:
    connection.execute("INSERT INTO portal_accounts VALUES (?, ?, ?, ?, ?, ?, ?)",
                       tuple(getattr(account, column) for column in _ACCOUNT_COLUMNS))


def set_account_status(connection: Connection, username: str, status: str, locked_until: str | None, changed_at: str) -> None:
    connection.execute("UPDATE portal_accounts SET status = ?, locked_until = ?, changed_at = ? WHERE username = ?",
                       (status, locked_until, changed_at, username))


def set_password_hash(connection: Connection, username: str, password_hash: str, changed_at: str) -> None:
    connection.execute("UPDATE portal_accounts SET password_hash = ?, changed_at = ? WHERE username = ?",
                       (password_hash, changed_at, username))


def record_failure(connection: Connection, username: str, at: str) -> None:
    connection.execute("INSERT INTO portal_login_failures VALUES (?, ?)", (username, at))


def failures_since(connection: Connection, username: str, since: str) -> int:
    return connection.execute("SELECT COUNT(*) FROM portal_login_failures WHERE username = ? AND failed_at >= ?",
                              (username, since)).fetchone()[0]


def clear_failures(connection: Connection, username: str) -> None:
    connection.execute("DELETE FROM portal_login_failures WHERE username = ?", (username,))


def insert_session(connection: Connection, session: SessionRow) -> None:
    connection.execute("INSERT INTO portal_sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       tuple(getattr(session, column) for column in _SESSION_COLUMNS))


def find_session(connection: Connection, token_sha256: str) -> SessionRow | None:
    row = connection.execute("SELECT * FROM portal_sessions WHERE token_sha256 = ?", (token_sha256,)).fetchone()
    return None if row is None else SessionRow(*(row[column] for column in _SESSION_COLUMNS))


def extend_session(connection: Connection, token_sha256: str, expires_at: str) -> None:
    connection.execute("UPDATE portal_sessions SET expires_at = ? WHERE token_sha256 = ?", (expires_at, token_sha256))


def delete_session(connection: Connection, token_sha256: str) -> None:
    connection.execute("DELETE FROM portal_sessions WHERE token_sha256 = ?", (token_sha256,))


def delete_sessions_of(connection: Connection, username: str) -> None:
    connection.execute("DELETE FROM portal_sessions WHERE username = ?", (username,))


def delete_expired_sessions(connection: Connection, now: str) -> None:
    connection.execute("DELETE FROM portal_sessions WHERE expires_at <= ?", (now,))


_ACCOUNT_COLUMNS = ("username", "subscriber", "password_hash", "status", "locked_until", "created_at", "changed_at")
_SESSION_COLUMNS = ("token_sha256", "kind", "subscriber", "username", "fingerprint", "csrf_token", "created_at", "expires_at")
