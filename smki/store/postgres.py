"""PostgreSQL behind the store's connection protocol (smki/store/connection.py).

`open_database("postgresql://...")` returns a `PostgresConnection`. It sends each statement as
the store wrote it, with one conversion: the `?` placeholders become psycopg's `%s`. So that this
can never change a statement's meaning, `pyformat` refuses a statement with a `%` anywhere or a
`?` inside a string literal (tests/test_store_schema.py). Everything else that differs from SQLite
is explicit per-dialect code, not rewriting: the DDL (smki/store/schema.py), `begin_write`, the
case-insensitive LIKE (`Dialect.like_ignoring_case`), `INSERT ... ON CONFLICT` written in the store
in the form both engines accept.

- `begin_write()` begins a transaction and takes a transaction-scoped advisory lock named after
  the schema: writers are serialised as in SQLite's BEGIN IMMEDIATE, readers are not, so cRLNumbers
  stay strictly increasing and the audit chain stays linear under concurrent writers (each
  statement in READ COMMITTED sees the previous writer's commit). A write outside a transaction
  takes the same lock for its own implicit transaction.
- A failed write inside a transaction is undone alone (a savepoint around it), as SQLite does,
  so a caller that catches the error can go on with its transaction. Which statements are writes
  is read from their first word (INSERT, UPDATE, DELETE); the statement itself is sent unchanged.
- Rows behave like `sqlite3.Row` (`row["column"]`, `row[0]`, `tuple(row)`, `dict(row)`); BYTEA comes
  back as `bytes`.
- psycopg's errors leave as smki's `StoreError` / `StoreConflictError` (`postgres_error`), naming
  the URL without its password, the psycopg error as `__cause__`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from smki.errors import BadInputError, StoreConflictError, StoreError, StoreFault
from smki.store.connection import Dialect

URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(target: object) -> bool:
    """True for a PostgreSQL URL (as a str); a path (str or Path) is an SQLite file."""
    return isinstance(target, str) and target.lower().startswith(URL_SCHEMES)


# A password in a URL's query (libpq takes password= and sslpassword= there as well as in the user info).
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)((?:ssl)?password=)[^&]*")


def has_password(url: str) -> bool:
    """Whether the URL carries a password: in its user info, or in its query (password=, sslpassword=)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # malformed (an unclosed [ in the host): judged by its text, so that no password slips through
        return _TEXT_PASSWORD.search(url) is not None or _QUERY_PASSWORD.search(url.partition("?")[2]) is not None
    return parts.password is not None or _QUERY_PASSWORD.search(parts.query) is not None


# user:password@ in a URL's text, for one urlsplit cannot parse.
_TEXT_PASSWORD = re.compile(r"://[^/?#@]*:[^/?#@]*@")


def redact(url: str) -> str:
    """The URL without its password, for messages (a malformed one is not shown at all: it could not be cleaned)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition('://')[0][:16]}://(a malformed URL, not shown)"
    query = _QUERY_PASSWORD.sub(r"\1\2***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


# ---- rows ---------------------------------------------------------------------------------------

class Row(tuple):
    """A result row: a tuple that also answers `row["column"]` and `keys()`, like sqlite3.Row."""

    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def keys(self) -> list[str]:
        return list(self._names)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            index = self._index.get(key)
            if index is None:
                index = self._index.get(key.lower())
            if index is None:
                raise IndexError(f"No item with that key: {key!r}")
            return tuple.__getitem__(self, index)
        return tuple.__getitem__(self, key)


@lru_cache(maxsize=512)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    index: dict[str, int] = {}
    for position, name in enumerate(names):
        index.setdefault(name, position)
        index.setdefault(name.lower(), position)
    return type("Row", (Row,), {"_names": names, "_index": index, "__slots__": ()})


def _row_factory(cursor) -> Callable[[Sequence[Any]], Any]:
    description = cursor.description
    if description is None:
        return tuple
    return _row_class(tuple(column.name for column in description))


# ---- placeholders: the only conversion -----------------------------------------------------------

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")


@lru_cache(maxsize=1024)
def pyformat(sql: str) -> str:
    """The statement with its `?` placeholders as psycopg's `%s`: nothing else changes.

    Refused (a bug in the store, not an operator's error): a `%` anywhere (psycopg would read it as
    a placeholder; LIKE patterns are parameters), a `?` inside a string literal, a `--` comment."""
    if "%" in sql:
        raise ValueError(f"a store statement holds a '%' (pass it as a parameter): {sql[:80]!r}")
    if "--" in sql:
        raise ValueError(f"a store statement holds a comment: {sql[:80]!r}")
    if any("?" in literal for literal in _STRING_LITERAL.findall(sql)):
        raise ValueError(f"a store statement holds a '?' inside a string literal: {sql[:80]!r}")
    return sql.replace("?", "%s")


_WRITE = re.compile(r"^\s*(?:INSERT|UPDATE|DELETE)\b", re.IGNORECASE)


def _is_write(sql: str) -> bool:
    """Whether the statement writes (it then runs in a savepoint, or in its own locked transaction)."""
    return bool(_WRITE.match(sql))


# ---- errors: mapped once --------------------------------------------------------------------------

_UNIQUE_VIOLATION = "23505"


def postgres_error(error: Exception, where: str) -> StoreError:
    """psycopg's exception as smki's (the one place PostgreSQL's errors are read)."""
    import psycopg

    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    sqlstate = getattr(error, "sqlstate", None) or ""
    if isinstance(error, psycopg.IntegrityError):
        fault = StoreFault.DUPLICATE_KEY if sqlstate == _UNIQUE_VIOLATION else StoreFault.CONSTRAINT
        return StoreConflictError(where, detail, fault)
    if sqlstate == "25006":  # read_only_sql_transaction
        fault = StoreFault.READ_ONLY
    elif sqlstate.startswith(("08", "57")) or isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError)) and not sqlstate:
        fault = StoreFault.UNAVAILABLE  # connection exceptions, operator intervention (shutdown), a closed connection
    elif sqlstate in ("40001", "40P01", "55P03"):
        fault = StoreFault.BUSY  # serialization failure, deadlock, lock not available
    else:
        fault = StoreFault.STATEMENT
    return StoreError(where, detail, fault)


# ---- cursor and connection ----------------------------------------------------------------------

class PostgresCursor:
    """The results of one statement, read like a sqlite3 cursor."""

    def __init__(self, cursor) -> None:
        self._cursor = cursor
        self.description = cursor.description
        self.rowcount = cursor.rowcount
        self.lastrowid = None

    def fetchone(self):
        return self._cursor.fetchone() if self.description is not None else None

    def fetchall(self) -> list:
        return self._cursor.fetchall() if self.description is not None else []

    def fetchmany(self, size: int = 1) -> list:
        return self._cursor.fetchmany(size) if self.description is not None else []

    def __iter__(self) -> Iterator:
        return iter(self._cursor) if self.description is not None else iter(())

    def close(self) -> None:
        self._cursor.close()


class PostgresConnection:
    """One PostgreSQL session, speaking the store's connection protocol (smki.store.connection.Connection)."""

    dialect = Dialect.POSTGRESQL

    def __init__(self, raw, url: str) -> None:
        self._raw = raw
        self.url = self.where = redact(url)
        schema = raw.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            raise BadInputError(f"{self.url}: its search_path names no existing schema (create the schema first)")
        # Writers to one schema (one authority's store) exclude each other; other schemas are not held up.
        self.lock_key = int.from_bytes(hashlib.sha256(f"smki writer {schema}".encode()).digest()[:8], "big", signed=True)

    # -- the protocol --
    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> PostgresCursor:
        query, params = pyformat(sql), tuple(parameters)
        if not _is_write(sql):
            return self._run(lambda: PostgresCursor(self._raw.execute(query, params or None)))
        return self._write(query, [params], many=False)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> PostgresCursor:
        query, rows = pyformat(sql), [tuple(row) for row in seq_of_parameters]
        if not _is_write(sql):
            return self._run(lambda: self._many(query, rows))
        return self._write(query, rows, many=True)

    def begin_write(self) -> None:
        """BEGIN and the writers' advisory lock (held to COMMIT or ROLLBACK): SQLite's BEGIN IMMEDIATE."""
        self._begin(lock=True)

    def commit(self) -> None:
        if self.in_transaction:
            self._run(lambda: self._raw.execute("COMMIT"))

    def rollback(self) -> None:
        if self.in_transaction:
            self._run(lambda: self._raw.execute("ROLLBACK"))

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> "PostgresConnection":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.rollback() if kind is not None else self.commit()

    # -- PostgreSQL only --
    def has_table(self, name: str) -> bool:
        return self._run(lambda: self._raw.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]) is not None

    def refuse_writes(self) -> None:
        """From here on the server refuses every write in this session (a read-only open)."""
        self._run(lambda: self._raw.execute("SET default_transaction_read_only = on"))

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the writers' lock for the session (migrations run under it: one process migrates at a time)."""
        self._run(lambda: self._raw.execute("SELECT pg_advisory_lock(%s)", (self.lock_key,)))
        try:
            yield
        finally:
            if not self._raw.closed:
                self._run(lambda: self._raw.execute("SELECT pg_advisory_unlock(%s)", (self.lock_key,)))

    # -- internals --
    def _run(self, call: Callable[[], Any]) -> Any:
        import psycopg

        try:
            return call()
        except psycopg.Error as error:
            raise postgres_error(error, self.where) from error

    def _begin(self, lock: bool) -> None:
        if self.in_transaction:
            raise StoreError(self.where, "cannot start a transaction within a transaction", StoreFault.STATEMENT)
        # No parameters: one round trip for both statements.
        sql = f"BEGIN; SELECT pg_advisory_xact_lock({self.lock_key:d})" if lock else "BEGIN"
        self._run(lambda: self._raw.execute(sql))

    def _many(self, query: str, rows: list) -> PostgresCursor:
        cursor = self._raw.cursor()
        cursor.executemany(query, rows)
        return PostgresCursor(cursor)

    def _write(self, query: str, rows: list, many: bool) -> PostgresCursor:
        """A write, undone alone if it fails (as in SQLite); outside a transaction, in its own locked one."""
        import psycopg

        if not self.in_transaction:
            cursor = self._raw.cursor()
            self._begin(lock=True)
            try:
                self._run(lambda: cursor.executemany(query, rows) if many else cursor.execute(query, rows[0] or None))
            except BaseException:
                if not self._raw.closed:
                    self._raw.execute("ROLLBACK")
                raise
            self._run(lambda: self._raw.execute("COMMIT"))
            return PostgresCursor(cursor)
        try:
            if many:
                cursor = self._raw.cursor()
                self._raw.execute("SAVEPOINT smki_statement")
                cursor.executemany(query, rows)
                self._raw.execute("RELEASE SAVEPOINT smki_statement")
            else:  # one round trip: the three statements as one query, the values bound by psycopg on this side
                cursor = psycopg.ClientCursor(self._raw)
                cursor.execute(f"SAVEPOINT smki_statement; {query}; RELEASE SAVEPOINT smki_statement", rows[0])
                cursor.nextset()  # the statement's own result (rowcount, RETURNING rows)
        except psycopg.Error as error:
            try:
                self._raw.execute("ROLLBACK TO SAVEPOINT smki_statement; RELEASE SAVEPOINT smki_statement")
            except psycopg.Error:
                pass  # the connection itself failed: the transaction is lost, the first error says why
            raise postgres_error(error, self.where) from error
        return PostgresCursor(cursor)


def connect(url: str, *, create: bool, migrate: Callable[[Any], int]) -> PostgresConnection:
    """Connect to the database at `url`, refuse one that holds no smki store (unless create), migrate it."""
    try:
        import psycopg
    except ImportError:
        raise BadInputError(f"{redact(url)}: PostgreSQL needs the psycopg package: pip install 'smki[postgres]'") from None
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
    except psycopg.Error as exc:
        # libpq's message may quote the URL it was given, password and all: only the redacted form is repeated.
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].replace(url, redact(url))
        raise BadInputError(f"{redact(url)}: cannot connect to PostgreSQL ({reason})") from None
    except ValueError as exc:  # psycopg refuses a malformed URL before connecting
        raise BadInputError(f"{redact(url)}: not a PostgreSQL URL ({exc})") from None
    try:
        connection = PostgresConnection(raw, url)
    except BaseException:
        raw.close()
        raise
    try:
        with connection.writer_lock():
            if not create and not connection.has_table("schema_migrations"):
                raise BadInputError(f"{connection.url}: no smki database here")
            migrate(connection)
    except StoreError as exc:
        connection.close()
        raise BadInputError(f"{connection.url}: not an smki database ({exc.detail})") from None
    except BaseException:
        connection.close()
        raise
    return connection
