"""The store's connection: one small protocol, one class per database engine.

Why this and not SQLAlchemy Core (+ Alembic): the store is about twenty statements, all plain SQL
that SQLite and PostgreSQL both accept once `INSERT OR REPLACE` is written as `INSERT ... ON CONFLICT`
(SQLite has accepted it since 3.24). What differs between the engines is small and named here: the
DDL of each migration (smki/store/schema.py), how a writer takes the one-writer lock (`begin_write`),
how a case-insensitive match is spelt (`Dialect.like_ignoring_case`), and how driver errors map to
smki's own. The batch path records 50,000 certificates in chunks through one `executemany` each;
on SQLite the connection *is* a `sqlite3.Connection` (a subclass), so that path runs in C exactly as
before, with no per-row Python work and no extra dependency. SQLAlchemy's Core would add an
expression layer and a result-row layer on that path, and Alembic a second migration history beside
the `schema_migrations` table that existing databases already carry.

The protocol (`Connection`): `dialect`, `where` (the file, or the URL without its password),
`execute`/`executemany` with `?` placeholders (PostgreSQL converts them to `%s`, the only conversion
left), rows read by position or by column name, `in_transaction`, `begin_write`, `commit`, `rollback`,
`close`. Every failure the driver reports leaves `execute` and `executemany` as a `StoreError`
(a `StoreConflictError` for a repeated key or a broken constraint): callers never see sqlite3's or
psycopg's classes. Errors raised while a result is iterated (after `execute` returned) are the
driver's; the store reads its results at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, Protocol, runtime_checkable

from smki.errors import StoreConflictError, StoreError, StoreFault


class Dialect(str, Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"

    @property
    def like_ignoring_case(self) -> str:
        """The operator SQLite's LIKE is (ASCII case ignored): PostgreSQL spells it ILIKE."""
        return "ILIKE" if self is Dialect.POSTGRESQL else "LIKE"


@runtime_checkable
class Connection(Protocol):
    """What the store needs of a database session (SqliteConnection, smki.store.postgres.PostgresConnection)."""

    dialect: Dialect
    where: str

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Any: ...

    def begin_write(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


# ---- SQLite ---------------------------------------------------------------------------------------

_SQLITE_FAULTS = (  # by the extended error name's prefix, first match wins
    ("SQLITE_CONSTRAINT_PRIMARYKEY", StoreFault.DUPLICATE_KEY),
    ("SQLITE_CONSTRAINT_UNIQUE", StoreFault.DUPLICATE_KEY),
    ("SQLITE_CONSTRAINT", StoreFault.CONSTRAINT),
    ("SQLITE_READONLY", StoreFault.READ_ONLY),
    ("SQLITE_CANTOPEN", StoreFault.UNAVAILABLE),
    ("SQLITE_PERM", StoreFault.UNAVAILABLE),
    ("SQLITE_IOERR", StoreFault.UNAVAILABLE),
    ("SQLITE_BUSY", StoreFault.BUSY),
    ("SQLITE_LOCKED", StoreFault.BUSY),
)


def sqlite_error(error: sqlite3.Error, where: str) -> StoreError:
    """sqlite3's exception as smki's (the one place SQLite's errors are read)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    fault = next((fault for prefix, fault in _SQLITE_FAULTS if name.startswith(prefix)), None)
    if fault is None:
        fault = StoreFault.CONSTRAINT if isinstance(error, sqlite3.IntegrityError) else StoreFault.STATEMENT
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    kind = StoreConflictError if fault in (StoreFault.DUPLICATE_KEY, StoreFault.CONSTRAINT) else StoreError
    return kind(where, detail, fault)


class SqliteConnection(sqlite3.Connection):
    """A sqlite3 connection (autocommit mode: explicit transactions only) that speaks the store's protocol.

    A subclass, so execute and executemany stay sqlite3's C code; only a failure passes through Python."""

    dialect = Dialect.SQLITE
    where = "SQLite database"

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as error:
            raise sqlite_error(error, self.where) from error

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> sqlite3.Cursor:  # type: ignore[override]
        try:
            return super().executemany(sql, seq_of_parameters)
        except sqlite3.Error as error:
            raise sqlite_error(error, self.where) from error

    def begin_write(self) -> None:
        """BEGIN IMMEDIATE: the database's write lock now (one writer at a time), not at the first write."""
        self.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.in_transaction:
            self.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.execute("ROLLBACK")


def dialect_of(connection: object) -> Dialect:
    """The connection's dialect; a plain sqlite3 connection (a test's, a tool's) is SQLite."""
    return getattr(connection, "dialect", Dialect.SQLITE)
