"""Opening an authority's database and bringing its schema up to date.

Schema changes are versioned migrations, applied in order, each in its own transaction and
recorded in `schema_migrations`; a database newer than this code is refused rather than
guessed at. SQLite is the embedded default; a `postgresql://` URL opens PostgreSQL through the
same code: both connections speak the protocol of smki/store/connection.py, and each migration's
DDL is written for each dialect (smki/store/schema.py).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from smki.errors import BadInputError, ConflictError, StoreError, StoreFault
from smki.store.connection import Connection, SqliteConnection, dialect_of
from smki.store.postgres import is_database_url, redact
from smki.store.schema import MIGRATIONS, SCHEMA_MIGRATIONS, SCHEMA_VERSION, Ddl

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate", "open_database", "require_smki_store", "schema_version", "transaction"]


def open_database(path: Path | str, *, create: bool = False, read_only: bool = False,
                  any_schema: bool = False) -> Connection:
    """Open (or, with create=True, create) the database at `path` and migrate it.

    `path` is an SQLite file, or a `postgresql://` URL (whose database must exist; with create=True
    an empty one is given the schema). Either way the connection speaks smki.store.connection.Connection.
    With read_only=True (verification, inspection) nothing is written, not even a schema or a
    migration: a file that holds no smki store is refused as it is, and so is a store older than
    this code (it cannot be migrated without writing), unless the reader needs only the tables
    every schema version has (`any_schema`: the audit trail).
    """
    if create and read_only:
        raise ValueError("a database is opened to create it or to read it, not both")
    if is_database_url(path):
        from smki.store.postgres import connect

        if not read_only:
            return connect(str(path), create=create, migrate=migrate)  # type: ignore[return-value]
        connection = connect(str(path), create=False, migrate=lambda c: require_smki_store(c, redact(str(path)), any_schema))
        connection.refuse_writes()
        return connection  # type: ignore[return-value]
    path = Path(path)
    if not create and not path.exists():
        raise BadInputError(f"{path}: no smki database here")
    if read_only:
        return _open_sqlite_read_only(path, any_schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    _make_private(path)
    # Absolute: this SQLite reads a name starting "file:" as a URI, which opens another file.
    try:  # explicit transactions only
        connection = sqlite3.connect(path.absolute(), isolation_level=None, timeout=30, factory=SqliteConnection)
    except sqlite3.Error as exc:
        raise BadInputError(f"{path}: cannot open ({exc})") from None
    connection.row_factory = sqlite3.Row
    connection.where = str(path)
    try:
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        migrate(connection)
    except StoreError as exc:
        connection.close()
        raise BadInputError(f"{path}: not an smki database ({exc.detail})") from None
    return connection


def _make_private(path: Path) -> None:
    """A new database file is made readable by its owner only (0600), whatever the umask: it holds the audit trail,
    password hashes and sessions. SQLite gives its -wal and -shm files the database file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise BadInputError(f"{path}: cannot create ({exc.strerror})") from None


def _open_sqlite_read_only(path: Path, any_schema: bool) -> SqliteConnection:
    """The SQLite file opened read-only (SQLite itself refuses every write), without creating anything beside it.

    The stores are in WAL mode, where a plain mode=ro open needs a writable -shm file beside the
    database (so it fails on read-only media) and leaves new -wal and -shm files beside the evidence.
    So: with no write-ahead log, or an empty one, the main file holds everything and is opened
    `immutable` (SQLite then reads it alone, with no -shm and no locks: a writer that starts during
    the read is not seen). With a log that holds pages, its -shm already exists while a writer has
    it open, and mode=ro reads through it; where that cannot be done (read-only media, a copy without
    its -shm), the database and its log are copied into a private temporary directory and the copy
    is read: that costs a copy of the database (removed when the connection is closed).
    """
    if not os.access(path, os.R_OK):
        raise BadInputError(f"{path}: cannot open for reading (permission denied)")
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if not _holds_pages(wal):
        connection = _connect_read_only(path, "immutable=1")
    elif shm.exists():
        connection = _connect_read_only(path)
        try:
            connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()  # the log is read here, or cannot be
        except StoreError as exc:
            if _cannot_open(exc):
                connection.close()
                connection = _read_private_copy(path, wal)
            # otherwise require_smki_store below says what the file holds
    else:
        connection = _read_private_copy(path, wal)
    try:
        require_smki_store(connection, str(path), any_schema)
    except BaseException:
        connection.close()
        raise
    return connection


def _holds_pages(wal: Path) -> bool:
    try:
        return wal.stat().st_size > 0
    except FileNotFoundError:
        return False


def _cannot_open(exc: StoreError) -> bool:
    """An error about opening or writing files (permissions, read-only media), not about the database's content."""
    return exc.fault in (StoreFault.UNAVAILABLE, StoreFault.READ_ONLY)


def _connect_read_only(path: Path, options: str = "", factory: type[SqliteConnection] = SqliteConnection) -> SqliteConnection:
    # A URI, absolute: this SQLite reads a name starting "file:" as a URI, which opens another file.
    uri = f"{path.resolve().as_uri()}?mode=ro" + (f"&{options}" if options else "")
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, factory=factory)
    except sqlite3.Error as exc:
        raise BadInputError(f"{path}: cannot open for reading ({exc})") from None
    connection.row_factory = sqlite3.Row
    connection.where = str(path)
    return connection


class _PrivateCopyConnection(SqliteConnection):
    """A connection to a private copy of a store; the copy is removed when the connection is closed or collected."""

    def remove_on_close(self, directory: str) -> None:
        self._remove = weakref.finalize(self, shutil.rmtree, directory, True)

    def close(self) -> None:
        super().close()
        remove = getattr(self, "_remove", None)
        if remove is not None:
            remove()


def _read_private_copy(path: Path, wal: Path) -> SqliteConnection:
    """The database and its write-ahead log copied into a private directory (0700), the copy opened read-only."""
    directory = tempfile.mkdtemp(prefix="smki-read-")
    try:
        copy = Path(directory) / "smki.db"
        shutil.copyfile(path, copy)
        shutil.copyfile(wal, Path(f"{copy}-wal"))
        connection = _connect_read_only(copy, factory=_PrivateCopyConnection)
    except OSError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise BadInputError(f"{path}: cannot copy it and its write-ahead log for reading ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    connection.remove_on_close(directory)
    connection.where = str(path)
    return connection


def require_smki_store(connection: Connection, where: str, any_schema: bool = False) -> int:
    """The store's schema version, read without writing; refuse a database that holds no smki store
    (or, unless `any_schema`, one older than this code)."""
    try:
        version = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
    except StoreError as exc:  # an empty file: no such table; junk: not a database
        if _cannot_open(exc):  # not about what the file holds: say what went wrong
            raise BadInputError(f"{where}: cannot be read ({exc.detail}); nothing was written to it") from None
        raise BadInputError(f"{where}: holds no smki store ({exc.detail}); nothing was written to it") from None
    if version == 0:
        raise BadInputError(f"{where}: holds no smki store (no schema version); nothing was written to it")
    _refuse_newer_schema(version)
    if version < SCHEMA_VERSION and not any_schema:
        raise ConflictError(f"{where}: store schema version {version} is older than this smki's ({SCHEMA_VERSION}); "
                            "the next command that writes to it migrates it")
    return version


def _refuse_newer_schema(version: int) -> None:
    """A database newer than this code is refused rather than guessed at."""
    if version > SCHEMA_VERSION:
        raise ConflictError(f"database schema version {version} is newer than this smki ({SCHEMA_VERSION}); upgrade smki")


def _switch_to_wal(connection: SqliteConnection, attempts: int = 100) -> None:
    """PRAGMA journal_mode = WAL, retried: when several processes open a new database at once,
    SQLite answers the switch with 'database is locked' at once, without waiting its timeout."""
    for attempt in range(attempts):
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except StoreError as exc:
            if exc.fault is not StoreFault.BUSY or attempt == attempts - 1:
                raise
            time.sleep(0.05)


@contextmanager
def transaction(connection: Connection) -> Iterator[Connection]:
    """A write transaction (the connection's begin_write: one writer at a time) ... COMMIT, or ROLLBACK on
    any exception: all or nothing."""
    connection.begin_write()
    try:
        yield connection
    except BaseException:
        connection.rollback()
        raise
    connection.commit()


def schema_version(connection: Connection) -> int:
    for statement in SCHEMA_MIGRATIONS.statements(dialect_of(connection)):
        connection.execute(statement)
    return connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(connection: Connection) -> int:
    """Apply the migrations this database lacks; return the schema version."""
    current = schema_version(connection)
    _refuse_newer_schema(current)
    for version, description, sql in MIGRATIONS:
        if version <= current:
            continue
        with transaction(connection):
            if schema_version(connection) >= version:
                continue  # applied by another process while this one waited for the write lock
            if isinstance(sql, Ddl):
                for statement in sql.statements(dialect_of(connection)):
                    connection.execute(statement)
            else:
                sql(connection)
            connection.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                               (version, description, datetime.now(timezone.utc).isoformat()))
    return SCHEMA_VERSION
