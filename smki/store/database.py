"""Opening an authority's database and bringing its schema up to date.

Schema changes are versioned migrations, applied in order, each in its own transaction and
recorded in `schema_migrations`; a database newer than this code is refused rather than
guessed at. SQLite is the embedded default; a `postgresql://` URL opens PostgreSQL through the
same code (smki/store/postgres.py adapts it to the sqlite3 interface used here).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from smki.audit.trail import SCHEMA as AUDIT_SCHEMA
from smki.errors import BadInputError, ConflictError
from smki.store.lodged_crls import create_listed_serials
from smki.store.postgres import is_database_url, redact

# (version, description, SQL). Append only: never edit a migration that has shipped.
MIGRATIONS: list[tuple[int, str, str | Callable[[sqlite3.Connection], None]]] = [
    (1, "issued certificates", """
        CREATE TABLE certificates (
            serial_hex       TEXT NOT NULL,
            issuer_key_id    TEXT NOT NULL,      -- the issuing CA's SKI (hex): serials are unique per issuer
            certificate_type TEXT NOT NULL,      -- root, issuing-ca, organisation, device
            subject_key_id   TEXT NOT NULL,
            entity_id        TEXT,               -- EUI-64 (hex) of the organisation or device
            role             TEXT,               -- RemotePartyRole OU code, organisation certificates
            key_usage        TEXT,               -- DS or KA, end-entity certificates
            status           TEXT NOT NULL,      -- RepositoryStatus code: P, I, N, E, R
            not_before       TEXT NOT NULL,
            not_after        TEXT NOT NULL,
            policy_name      TEXT,
            policy_version   TEXT,
            policy_sha256    TEXT,
            request_sha256   TEXT,               -- digest of the request (CSR or public key) it answered
            issued_at        TEXT NOT NULL,
            der              BLOB NOT NULL,
            PRIMARY KEY (issuer_key_id, serial_hex)
        );
        CREATE INDEX certificates_entity ON certificates (entity_id, key_usage);
        CREATE INDEX certificates_subject_key ON certificates (subject_key_id);
    """),
    (2, "audit trail", AUDIT_SCHEMA),
    (3, "adopted policies", """
        CREATE TABLE adopted_policies (
            kind TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL,
            adopted_at TEXT NOT NULL, actor TEXT NOT NULL
        )
    """),
    (4, "revocations and CRL numbers", """
        CREATE TABLE revocations (
            issuer_key_id TEXT NOT NULL, serial_hex TEXT NOT NULL, revoked_at TEXT NOT NULL, reason TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, serial_hex),
            FOREIGN KEY (issuer_key_id, serial_hex) REFERENCES certificates (issuer_key_id, serial_hex)
        );
        CREATE TABLE crl_numbers (issuer_key_id TEXT PRIMARY KEY, last_number INTEGER NOT NULL, issued_at TEXT NOT NULL)
    """),
    (5, "device batches and serial search", """
        CREATE TABLE batches (
            batch_id       TEXT PRIMARY KEY,     -- SHA-256 over the batch's entry names and contents
            source         TEXT NOT NULL,
            entry_count    INTEGER NOT NULL,
            issuer_key_id  TEXT NOT NULL,
            policy_version TEXT NOT NULL,
            started_at     TEXT NOT NULL,
            finished_at    TEXT                  -- NULL while the batch is unfinished (resumable)
        );
        CREATE TABLE batch_entries (
            batch_id       TEXT NOT NULL REFERENCES batches (batch_id),
            name           TEXT NOT NULL,        -- the request's file name in the batch
            status         TEXT NOT NULL,        -- success, error, anomaly, ineligible
            code           TEXT NOT NULL,        -- CR:/FM:/IN:/CA: outcome code
            detail         TEXT,
            device_id      TEXT,
            serial_hex     TEXT,                 -- the issued certificate, on success
            request_sha256 TEXT,
            PRIMARY KEY (batch_id, name)
        );
        CREATE INDEX certificates_serial ON certificates (serial_hex)
    """),
    (6, "lodged CRLs and ARLs, repository status changes", """
        CREATE TABLE lodged_crls (
            issuer_key_id TEXT NOT NULL,         -- the issuing CA's SKI (hex) = the CRL's AKI
            crl_number    TEXT NOT NULL,         -- cRLNumber as 40 hex digits (up to 20 octets), fixed width: text order is numeric order
            kind          TEXT NOT NULL CHECK (kind IN ('crl', 'arl')),  -- arl when the issuer is a root
            this_update   TEXT NOT NULL,
            next_update   TEXT NOT NULL,
            sha256        TEXT NOT NULL,
            der           BLOB NOT NULL,
            lodged_at     TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, crl_number)
        );
        CREATE TABLE certificate_status_changes (
            issuer_key_id TEXT NOT NULL,
            serial_hex    TEXT NOT NULL,
            status        TEXT NOT NULL,         -- the new RepositoryStatus code
            changed_at    TEXT NOT NULL,
            source        TEXT NOT NULL,         -- what changed it, e.g. crl <ISSUER-SKI> <number>
            PRIMARY KEY (issuer_key_id, serial_hex, status, changed_at)
        );
        CREATE INDEX certificate_status_changes_time ON certificate_status_changes (changed_at);
        CREATE INDEX certificates_issued_at ON certificates (issued_at)
    """),
    # A callable step runs in the migration's transaction: this one indexes the lists already lodged.
    (7, "serials named by lodged CRLs and ARLs", create_listed_serials),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def open_database(path: Path | str, *, create: bool = False, read_only: bool = False,
                  any_schema: bool = False) -> sqlite3.Connection:
    """Open (or, with create=True, create) the database at `path` and migrate it.

    `path` is an SQLite file, or a `postgresql://` URL (whose database must exist; with create=True
    an empty one is given the schema). Either way the connection answers the same SQL.
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
        connection.execute("SET default_transaction_read_only = on")  # the server refuses every write from here on
        return connection  # type: ignore[return-value]
    path = Path(path)
    if not create and not path.exists():
        raise BadInputError(f"{path}: no smki database here")
    if read_only:
        return _open_sqlite_read_only(path, any_schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Absolute: this SQLite reads a name starting "file:" as a URI, which opens another file.
    connection = sqlite3.connect(path.absolute(), isolation_level=None, timeout=30)  # explicit transactions only
    connection.row_factory = sqlite3.Row
    try:
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute("PRAGMA foreign_keys = ON")
        migrate(connection)
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise BadInputError(f"{path}: not an smki database ({exc})") from None
    return connection


def _open_sqlite_read_only(path: Path, any_schema: bool) -> sqlite3.Connection:
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
        except sqlite3.DatabaseError as exc:
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


def _cannot_open(exc: sqlite3.Error) -> bool:
    """An error about opening or writing files (permissions, read-only media), not about the database's content."""
    return getattr(exc, "sqlite_errorname", "").startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_IOERR"))


def _connect_read_only(path: Path, options: str = "", factory: type = sqlite3.Connection) -> sqlite3.Connection:
    # A URI, absolute: this SQLite reads a name starting "file:" as a URI, which opens another file.
    uri = f"{path.resolve().as_uri()}?mode=ro" + (f"&{options}" if options else "")
    try:
        connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, factory=factory)
    except sqlite3.Error as exc:
        raise BadInputError(f"{path}: cannot open for reading ({exc})") from None
    connection.row_factory = sqlite3.Row
    return connection


class _PrivateCopyConnection(sqlite3.Connection):
    """A connection to a private copy of a store; the copy is removed when the connection is closed or collected."""

    def remove_on_close(self, directory: str) -> None:
        self._remove = weakref.finalize(self, shutil.rmtree, directory, True)

    def close(self) -> None:
        super().close()
        remove = getattr(self, "_remove", None)
        if remove is not None:
            remove()


def _read_private_copy(path: Path, wal: Path) -> sqlite3.Connection:
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
    return connection


def require_smki_store(connection: sqlite3.Connection, where: str, any_schema: bool = False) -> int:
    """The store's schema version, read without writing; refuse a database that holds no smki store
    (or, unless `any_schema`, one older than this code)."""
    try:
        version = connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
    except sqlite3.DatabaseError as exc:  # an empty file: no such table; junk: not a database
        if _cannot_open(exc):  # not about what the file holds: say what went wrong
            raise BadInputError(f"{where}: cannot be read ({exc}); nothing was written to it") from None
        raise BadInputError(f"{where}: holds no smki store ({exc}); nothing was written to it") from None
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


def _switch_to_wal(connection: sqlite3.Connection, attempts: int = 100) -> None:
    """PRAGMA journal_mode = WAL, retried: when several processes open a new database at once,
    SQLite answers the switch with 'database is locked' at once, without waiting its timeout."""
    for attempt in range(attempts):
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: all or nothing."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def schema_version(connection: sqlite3.Connection) -> int:
    connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)")
    return connection.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; return the schema version."""
    current = schema_version(connection)
    _refuse_newer_schema(current)
    for version, description, sql in MIGRATIONS:
        if version <= current:
            continue
        with transaction(connection):
            if schema_version(connection) >= version:
                continue  # applied by another process while this one waited for the write lock
            if callable(sql):
                sql(connection)
            else:
                for statement in filter(str.strip, sql.split(";")):
                    connection.execute(statement)
            connection.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)",
                               (version, description, datetime.now(timezone.utc).isoformat()))
    return SCHEMA_VERSION
