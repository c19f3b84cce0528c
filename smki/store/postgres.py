"""PostgreSQL behind the small part of the sqlite3 interface the store uses.

`open_database("postgresql://...")` returns a `PostgresConnection`: `.execute(sql, params)`
and `.executemany` take the same SQL as SQLite (`?` placeholders, `BEGIN IMMEDIATE`,
`INSERT OR REPLACE`/`INSERT OR IGNORE`, the migrations' DDL) and return cursors whose rows
behave like `sqlite3.Row` (`row["column"]`, `row[0]`, `tuple(row)`, `dict(row)`); BYTEA comes
back as `bytes`; `.in_transaction`, `.close()` and `with connection:` behave as in sqlite3.

What is translated, and how:
- `?` (and `:name` with a mapping of parameters) become psycopg's `%s` (`%(name)s`); `%` is escaped.
- `BEGIN IMMEDIATE` (and `EXCLUSIVE`) begins a transaction and takes a transaction-scoped
  advisory lock named after the schema: writers are serialised as in SQLite, readers are not,
  so cRLNumbers stay strictly increasing and the audit chain stays linear under concurrent
  writers (each statement in READ COMMITTED sees the previous writer's commit). A write
  outside a transaction takes the same lock for its own implicit transaction.
- A failed write inside a transaction is undone alone (a savepoint around it), as SQLite does,
  so a caller that catches the error can go on with its transaction.
- DDL: BLOB -> BYTEA, INTEGER -> BIGINT (SQLite integers are 64-bit), REAL -> DOUBLE PRECISION,
  INTEGER PRIMARY KEY AUTOINCREMENT -> an identity column, TEXT -> TEXT COLLATE "C" (SQLite
  compares and sorts text by bytes; so does this). LIKE -> ILIKE (SQLite's LIKE ignores case).
- `INSERT OR REPLACE` -> `INSERT ... ON CONFLICT (primary key) DO UPDATE`, `INSERT OR IGNORE`
  -> `... ON CONFLICT DO NOTHING` (the primary key is read from the catalogue).
- psycopg's errors are raised as the matching sqlite3 exception classes (IntegrityError,
  OperationalError, ...), the psycopg error as `__cause__`: every `except sqlite3.IntegrityError`
  in the store keeps turning a repeated key into a ConflictError, on either backend.

Anything else must be SQL both engines accept; tests/test_store_backends.py runs the store on both.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from smki.errors import BadInputError

URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(target: object) -> bool:
    """True for a PostgreSQL URL (as a str); a path (str or Path) is an SQLite file."""
    return isinstance(target, str) and target.lower().startswith(URL_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    query = re.sub(r"(?i)(^|&)(password=)[^&]*", r"\1\2***", parts.query)
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


# ---- SQL translation ----------------------------------------------------------------------------

_TOKENS = re.compile(r"""
      (?P<comment> --[^\n]* | /\*.*?\*/ )
    | (?P<string>  '(?:[^']|'')*' )
    | (?P<quoted>  "(?:[^"]|"")*" )
    | (?P<param>   \?\d* | (?<!:):[A-Za-z_]\w* )
    | (?P<percent> % )
    | (?P<word>    [A-Za-z_]\w* )
""", re.VERBOSE | re.DOTALL)

_DDL_WORDS = {"BLOB": "BYTEA", "INTEGER": "BIGINT", "INT": "BIGINT", "REAL": "DOUBLE PRECISION", "TEXT": 'TEXT COLLATE "C"'}
_DML_WORDS = {"LIKE": "ILIKE", "IFNULL": "COALESCE"}
_AUTOINCREMENT = re.compile(r"\bINTEGER\s+PRIMARY\s+KEY\s+AUTOINCREMENT\b", re.IGNORECASE)
_WITHOUT_ROWID = re.compile(r"\)\s*WITHOUT\s+ROWID\s*$", re.IGNORECASE)
_CONFLICT = re.compile(r"^\s*(?:INSERT\s+OR\s+(?P<how>REPLACE|IGNORE)|(?P<replace>REPLACE))\s+INTO\s+"
                       r"(?P<table>[A-Za-z_][\w.]*)\s*(?:\((?P<columns>[^)]*)\))?", re.IGNORECASE)
_BEGIN = re.compile(r"^\s*BEGIN(?:\s+(?P<mode>DEFERRED|IMMEDIATE|EXCLUSIVE))?(?:\s+TRANSACTION)?\s*;?\s*$", re.IGNORECASE)
_WRITE = re.compile(r"^\s*(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)
_DDL = re.compile(r"^\s*(?:CREATE|ALTER|DROP)\b", re.IGNORECASE)


@lru_cache(maxsize=1024)
def translate(sql: str, named: bool = False) -> str:
    """SQLite SQL -> psycopg SQL: placeholders, `%`, and (in DDL) SQLite's type names. Comments are dropped."""
    ddl = bool(_DDL.match(sql))
    if ddl:
        sql = _WITHOUT_ROWID.sub(")", _AUTOINCREMENT.sub("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql))
    out: list[str] = []
    position = 0
    for match in _TOKENS.finditer(sql):
        out.append(sql[position:match.start()])
        position = match.end()
        kind, text = match.lastgroup, match.group()
        if kind == "comment":
            out.append(" ")
        elif kind == "param":
            if text == "?" and not named:
                out.append("%s")
            elif text.startswith(":") and named:
                out.append(f"%({text[1:]})s")
            else:
                raise sqlite3.ProgrammingError(f"placeholder {text!r} is not supported with these parameters")
        elif kind == "percent":
            out.append("%%")
        elif kind == "word":
            table = _DDL_WORDS if ddl else _DML_WORDS
            out.append(table.get(text.upper(), text))
        else:  # a string literal or a quoted name: kept, but psycopg reads % everywhere
            out.append(text.replace("%", "%%"))
    out.append(sql[position:])
    return "".join(out).strip()


# ---- errors -------------------------------------------------------------------------------------

def _sqlite_error(error: Exception) -> sqlite3.Error:
    """The sqlite3 exception class a caller of the store already catches, for a psycopg error."""
    import psycopg

    for psycopg_class, sqlite_class in ((psycopg.IntegrityError, sqlite3.IntegrityError),
                                        (psycopg.DataError, sqlite3.DataError),
                                        (psycopg.NotSupportedError, sqlite3.NotSupportedError),
                                        (psycopg.InternalError, sqlite3.InternalError),
                                        (psycopg.ProgrammingError, sqlite3.OperationalError),  # no such table/column
                                        (psycopg.OperationalError, sqlite3.OperationalError),
                                        (psycopg.DatabaseError, sqlite3.DatabaseError),
                                        (psycopg.InterfaceError, sqlite3.InterfaceError)):
        if isinstance(error, psycopg_class):
            break
    else:
        sqlite_class = sqlite3.Error
    translated = sqlite_class(str(error).strip())
    translated.sqlstate = getattr(error, "sqlstate", None)  # type: ignore[attr-defined]
    return translated


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
    """One PostgreSQL session, used through the sqlite3 interface the store is written against."""

    def __init__(self, raw, url: str) -> None:
        self._raw = raw
        self.url = redact(url)
        schema = raw.execute("SELECT current_schema()").fetchone()[0]
        if schema is None:
            raise BadInputError(f"{self.url}: its search_path names no existing schema (create the schema first)")
        # Writers to one schema (one authority's store) exclude each other; other schemas are not held up.
        self.lock_key = int.from_bytes(hashlib.sha256(f"smki writer {schema}".encode()).digest()[:8], "big", signed=True)
        self._upserts: dict[str, str] = {}

    # -- the sqlite3 surface --
    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self._raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence | Mapping = ()) -> PostgresCursor:
        begin = _BEGIN.match(sql)
        if begin:
            return self._begin(lock=(begin.group("mode") or "").upper() in ("IMMEDIATE", "EXCLUSIVE"))
        query, params = self._prepare(sql, parameters)
        if _DDL.match(sql):
            self._upserts.clear()
        if not _WRITE.match(sql):
            return self._run(lambda: PostgresCursor(self._raw.execute(query, params)))
        return self._write(query, [params], many=False)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence | Mapping]) -> PostgresCursor:
        rows = list(seq_of_parameters)
        named = bool(rows) and isinstance(rows[0], Mapping)
        query = self._statement(sql, named)
        rows = [dict(row) if named else tuple(row) for row in rows]
        if not _WRITE.match(sql):
            return self._run(lambda: self._many(query, rows))
        return self._write(query, rows, many=True)

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
            raise _sqlite_error(error) from error

    def _begin(self, lock: bool) -> PostgresCursor:
        if self.in_transaction:
            raise sqlite3.OperationalError("cannot start a transaction within a transaction")
        # No parameters: one round trip for both statements.
        sql = f"BEGIN; SELECT pg_advisory_xact_lock({self.lock_key:d})" if lock else "BEGIN"
        return self._run(lambda: PostgresCursor(self._raw.execute(sql)))

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
                self._run(lambda: cursor.executemany(query, rows) if many else cursor.execute(query, rows[0]))
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
            raise _sqlite_error(error) from error
        return PostgresCursor(cursor)

    def _prepare(self, sql: str, parameters: Sequence | Mapping) -> tuple[str, Any]:
        named = isinstance(parameters, Mapping)
        return self._statement(sql, named), (dict(parameters) if named else tuple(parameters))

    def _statement(self, sql: str, named: bool) -> str:
        conflict = _CONFLICT.match(sql)
        if not conflict:
            return translate(sql, named)
        cached = self._upserts.get(sql)
        if cached is None:
            cached = self._upsert(sql, conflict)
            self._upserts[sql] = cached
        return translate(cached, named)

    def _upsert(self, sql: str, conflict: re.Match) -> str:
        """INSERT OR REPLACE / OR IGNORE -> INSERT ... ON CONFLICT, using the table's primary key."""
        table = conflict.group("table")
        listed = [c.strip().strip('"') for c in conflict.group("columns").split(",")] if conflict.group("columns") else None
        rows = self._run(lambda: self._raw.execute(
            "SELECT a.attname, COALESCE(a.attnum = ANY (i.indkey::int2[]), false) FROM pg_attribute a "
            "LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (table,)).fetchall())
        if not rows:
            raise sqlite3.OperationalError(f"no such table: {table}")
        key = [row[0] for row in rows if row[1]]
        columns = listed or [row[0] for row in rows]
        head = f"INSERT INTO {table}" + (f" ({conflict.group('columns')})" if listed else "")
        body = " " + sql[conflict.end():].strip().rstrip(";")
        if (conflict.group("how") or "").upper() == "IGNORE":
            return f"{head}{body} ON CONFLICT DO NOTHING"
        if not key:
            raise sqlite3.NotSupportedError(f"INSERT OR REPLACE into {table}: the table has no primary key")
        updates = [column for column in columns if column not in key]
        action = ("DO UPDATE SET " + ", ".join(f"{column} = EXCLUDED.{column}" for column in updates)) if updates else "DO NOTHING"
        return f"{head}{body} ON CONFLICT ({', '.join(key)}) {action}"


def connect(url: str, *, create: bool, migrate: Callable[[Any], int]) -> PostgresConnection:
    """Connect to the database at `url`, refuse one that holds no smki store (unless create), migrate it."""
    try:
        import psycopg
    except ImportError:
        raise BadInputError(f"{redact(url)}: PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')") from None
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory)
    except psycopg.Error as exc:
        raise BadInputError(f"{redact(url)}: cannot connect to PostgreSQL ({str(exc).strip().splitlines()[0]})") from None
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
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise BadInputError(f"{connection.url}: not an smki database ({exc})") from None
    except BaseException:
        connection.close()
        raise
    return connection
