"""The store's per-dialect schema and its one error boundary, on SQLite and on the PostgreSQL the tests start.

- Each migration's DDL is written for each dialect (smki/store/schema.py): both dialects must give the
  same tables, columns (with the type mapping the old run-time translator used) and indexes, SQLite's
  must stay exactly the DDL that shipped (existing files keep opening), and PostgreSQL's exactly what
  the old translator created (existing PostgreSQL stores keep opening).
- Driver errors leave the store as smki's StoreError / StoreConflictError, never sqlite3's or psycopg's.
- `?` -> `%s` is the only conversion left, so no statement may hold a `%` or a `?` inside a string literal.
"""

import ast
import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from smki.audit import AuditEntry, AuditTrail
from smki.errors import BadInputError, ConflictError, StoreConflictError, StoreError, StoreFault
from smki.store import CertificateRecord, Connection, Dialect, insert_certificate, open_database, transaction
from smki.store.audit_log import audit_key_pems
from smki.store.database import MIGRATIONS
from smki.store.policies import AdoptedPolicy, adopted_policies, adopted_policy, record_adoption, successful_entries
from smki.store.reconcile import records_state_changes
from smki.store.revocations import next_crl_number
from smki.store.schema import Ddl

pytest_plugins = ["postgres_server"]

SMKI = Path(__file__).resolve().parents[1] / "smki"
# The hashes below pin the schema of the migrations up to this version (those shipped when they were taken);
# later migrations are held to the same shape on both dialects by the structural comparison.
PINNED_VERSION = 7
# sha256 of sqlite_master (every object but schema_migrations) of a new store, as the shipped migrations made it.
SHIPPED_SQLITE_SCHEMA = "59d98838a600e9f081923dcefc2114bf5ceb0bac530b1d0b9e24b2d1fe2c34e5"
# sha256 of the PostgreSQL catalogue (`_postgresql_catalogue`) of a new store, as the old regex translator made it.
TRANSLATED_POSTGRESQL_SCHEMA = "d10cef9d3170c7fc8467a2686dd80f5777cecebbf3035ba16dd6cfb4cec75c10"
# SQLite's declared type -> PostgreSQL's data type and collation (what the old translator wrote, kept).
TYPES = {"TEXT": ("text", "C"), "INTEGER": ("bigint", None), "BLOB": ("bytea", None)}
ISSUER = "4F5688D7EC933BE2"


def record(serial="4A" * 16):
    return CertificateRecord(serial_hex=serial, issuer_key_id=ISSUER, certificate_type="organisation", subject_key_id="44899792D196F4B8",
                             status="I", not_before="2026-01-01T00:00:00+00:00", not_after="2035-12-31T23:59:59+00:00",
                             der=b"\x30\x00", issued_at="2026-01-01T00:00:00+00:00")


def _sqlite_catalogue(connection) -> dict:
    tables = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    columns = []
    for table in tables:
        for _, name, declared, not_null, _, key in connection.execute(f"PRAGMA table_info({table})"):
            columns.append((table, name, *TYPES[declared], "NO" if not_null or key else "YES"))
    indexes = [row[0] for row in connection.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")]
    return {"columns": sorted(columns), "indexes": indexes}


def _postgresql_catalogue(connection) -> dict:
    columns = [tuple(r) for r in connection.execute(
        "SELECT table_name, column_name, data_type, collation_name, is_nullable FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position")]
    indexes = [(r[0], r[1].replace(f"{r[2]}.", "")) for r in connection.execute(
        "SELECT indexname, indexdef, schemaname FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname")]
    constraints = [tuple(r) for r in connection.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = current_schema()::regnamespace "
        "ORDER BY conname")]
    return {"columns": columns, "indexes": indexes, "constraints": constraints}


@pytest.fixture
def pinned_migrations(monkeypatch):
    """Stores made by the migrations up to PINNED_VERSION only."""
    import smki.store.database

    monkeypatch.setattr(smki.store.database, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= PINNED_VERSION])


def test_sqlite_keeps_the_shipped_schema(tmp_path, pinned_migrations):
    connection = open_database(tmp_path / "smki.db", create=True)
    rows = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name <> 'schema_migrations' "
                              "ORDER BY type, name").fetchall()
    text = "\n".join(f"{kind} {name} {table} {sql}" for kind, name, table, sql in rows)
    assert hashlib.sha256(text.encode()).hexdigest() == SHIPPED_SQLITE_SCHEMA


def test_both_dialects_make_the_same_tables_columns_and_indexes(postgres_server, tmp_path):
    sqlite = _sqlite_catalogue(open_database(tmp_path / "smki.db", create=True))
    postgresql = _postgresql_catalogue(open_database(postgres_server.url(schema=postgres_server.new_schema()), create=True))
    assert sorted(postgresql["columns"]) == sqlite["columns"]
    # Besides each table's primary key (an automatic index in SQLite, a named one in PostgreSQL):
    assert [name for name, _ in postgresql["indexes"] if not name.endswith("_pkey")] == sqlite["indexes"]


def test_postgresql_keeps_the_translated_schema(postgres_server, pinned_migrations):
    postgresql = _postgresql_catalogue(open_database(postgres_server.url(schema=postgres_server.new_schema()), create=True))
    text = json.dumps(postgresql, sort_keys=True)
    assert hashlib.sha256(text.encode()).hexdigest() == TRANSLATED_POSTGRESQL_SCHEMA


def test_each_migration_is_ddl_for_both_dialects_or_a_dialect_aware_step():
    for version, _, step in MIGRATIONS:
        if isinstance(step, Ddl):
            sqlite, postgresql = step.statements(Dialect.SQLITE), step.statements(Dialect.POSTGRESQL)
            assert len(sqlite) == len(postgresql) and sqlite != postgresql, version
            assert not re.search(r"\b(BLOB|INTEGER)\b", " ".join(postgresql)), version
        else:
            assert callable(step), version


# ---- the error boundary ----

def test_driver_errors_leave_the_store_as_smkis_own(database_target):
    connection = open_database(database_target, create=True)
    expected = Dialect.POSTGRESQL if database_target.startswith("postgresql://") else Dialect.SQLITE
    assert isinstance(connection, Connection) and connection.dialect is expected
    with transaction(connection):
        insert_certificate(connection, record())
    with pytest.raises(StoreConflictError) as duplicate:
        connection.execute("INSERT INTO crl_numbers VALUES (?, ?, ?)", (ISSUER, 1, "now"))
        connection.execute("INSERT INTO crl_numbers VALUES (?, ?, ?)", (ISSUER, 2, "now"))
    assert duplicate.value.fault is StoreFault.DUPLICATE_KEY and isinstance(duplicate.value, ConflictError)
    assert duplicate.value.exit_code == 5 and "\n" not in str(duplicate.value)
    with pytest.raises(ConflictError, match="already recorded"):  # the store function's own message on top
        insert_certificate(connection, record())
    with pytest.raises(StoreError) as missing:
        connection.execute("SELECT * FROM no_such_table")
    assert missing.value.fault is StoreFault.STATEMENT and not isinstance(missing.value, ConflictError)
    assert str(missing.value).startswith(f"{connection.where}: ") and "\n" not in str(missing.value)
    assert missing.value.__cause__ is not None  # the driver's error, kept for a traceback


def test_a_broken_reference_is_a_constraint_conflict(database_target):
    connection = open_database(database_target, create=True)
    with pytest.raises(StoreConflictError) as caught, transaction(connection):
        connection.executemany("INSERT INTO revocations VALUES (?, ?, ?, ?)", [("00", "00", "now", "keyCompromise")])
    assert caught.value.fault is StoreFault.CONSTRAINT and not connection.in_transaction


def test_a_postgresql_error_names_the_url_without_its_password(postgres_server):
    url = postgres_server.url(schema=postgres_server.new_schema())
    connection = open_database(url, create=True)
    with pytest.raises(StoreError) as caught:
        connection.execute("SELECT * FROM no_such_table")
    assert str(caught.value).startswith(f"{connection.where}: ") and "postgresql://" in str(caught.value)
    assert ":***@" in open_database(url.replace("@/", ":s3cret@/"), create=True).where


def test_a_read_only_store_refuses_writes_as_smkis_error(database_target):
    open_database(database_target, create=True).close()
    reader = open_database(database_target, read_only=True)
    with pytest.raises(StoreError) as caught:
        reader.execute("INSERT INTO crl_numbers VALUES (?, ?, ?)", (ISSUER, 1, "now"))
    assert caught.value.fault is StoreFault.READ_ONLY


def test_a_file_that_is_no_database_is_bad_input(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(BadInputError, match="not an smki database"):
        open_database(junk)


# ---- statements written once, for both engines ----

def test_upserts_and_case_insensitive_matching_behave_alike(database_target):
    connection = open_database(database_target, create=True)
    at = datetime(2026, 3, 1, tzinfo=timezone.utc)
    with transaction(connection):
        record_adoption(connection, AdoptedPolicy("organisation", "org", "1.0", "ab" * 32, "then", "alice"))
        record_adoption(connection, AdoptedPolicy("organisation", "org", "1.1", "cd" * 32, "now", "bob"))
        assert [next_crl_number(connection, ISSUER, at) for _ in range(2)] == [1, 2]
    assert adopted_policy(connection, "organisation") == {"kind": "organisation", "name": "org", "version": "1.1",
                                                          "sha256": "cd" * 32, "adopted_at": "now", "actor": "bob"}
    assert [row["version"] for row in adopted_policies(connection)] == ["1.1"] and adopted_policy(connection, "device") is None
    assert not records_state_changes(connection)
    with transaction(connection):  # SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE does the same
        AuditTrail(connection).append(AuditEntry("alice", "policy.adopt", subject={"kind": "organisation"},
                                                 details={"STATE": {"issued": {}}}))
    assert records_state_changes(connection)
    assert [json.loads(subject) for subject, _ in successful_entries(connection, "policy.adopt")] == [{"kind": "organisation"}]
    assert audit_key_pems(connection) == []


def _sql_constants(path: Path) -> list[str]:
    """The SQL-looking string constants of a module (f-strings contribute their constant parts)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|WITH)\b", node.value):
            found.append(node.value)
    return found


def test_no_store_statement_holds_a_percent_or_a_placeholder_inside_a_string_literal():
    modules = [*sorted((SMKI / "store").glob("*.py")), SMKI / "audit" / "trail.py", SMKI / "audit" / "verify.py"]
    # postgres.py's own statements go to psycopg as they are, with psycopg's %s: not store statements.
    statements = [statement for module in modules if module.name != "postgres.py" for statement in _sql_constants(module)]
    assert len(statements) > 30
    for statement in statements:
        assert "%" not in statement, statement
        assert not any("?" in literal for literal in re.findall(r"'(?:[^']|'')*'", statement)), statement
        assert not re.search(r"INSERT\s+OR\s+(REPLACE|IGNORE)", statement), statement  # upserts are ON CONFLICT, for both
