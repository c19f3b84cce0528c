"""The store on both backends: every operation on SQLite and on a throwaway PostgreSQL server.

`database_target` (tests/postgres_server.py) is an SQLite file or a postgresql:// URL naming a
fresh schema; the code under test is the same for both.
"""

import json
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from smki.audit import AuditEntry, AuditTrail, verify_trail
from smki.audit.verify import export_trail, rows_from_database
from smki.errors import BadInputError, ConflictError, StoreConflictError, StoreFault
from smki.hsm.signer import SoftwareSigner
from smki.policy import load_policy
from smki.policy.adoption import adopt, adopted, require_adopted
from smki.store import (CertificateRecord, find_certificate, insert_certificate, list_certificates, open_database,
                        search_certificates, transaction)
from smki.store.database import MIGRATIONS, SCHEMA_VERSION
from smki.store.postgres import is_database_url, pyformat, redact
from smki.store.revocations import next_crl_number, record_revocation, revoked_entries

pytest_plugins = ["postgres_server"]

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
ISSUER = "4F5688D7EC933BE2"
DER = bytes(range(256)) * 3  # every byte value, NULs included


def record(serial="4A" * 16, **overrides):
    values = dict(serial_hex=serial, issuer_key_id=ISSUER, certificate_type="organisation", subject_key_id="44899792D196F4B8",
                  status="I", not_before="2026-01-01T00:00:00+00:00", not_after="2035-12-31T23:59:59+00:00", der=DER,
                  entity_id="90B3D51F30010000", role="02", key_usage="DS", policy_name="SMKI Organisation Certificate Policy",
                  policy_version="1.0", policy_sha256="ab" * 32, issued_at="2026-01-01T00:00:00+00:00")
    values.update(overrides)
    return CertificateRecord(**values)


def entry(n, **overrides):
    values = dict(actor="alice", operation="certificate.issue", subject={"serial": f"{n:032X}"}, details={"n": n, "note": "50% ü ?"},
                  policy={"name": "org", "version": "1.0", "sha256": "ab" * 32})
    values.update(overrides)
    return AuditEntry(**values)


# ---- placeholders and URLs (no server needed) ----

def test_placeholders_are_the_only_conversion_for_postgresql():
    assert pyformat("SELECT * FROM t WHERE a = ? AND b LIKE ? AND c = 'R'") == "SELECT * FROM t WHERE a = %s AND b LIKE %s AND c = 'R'"
    for unsafe in ("SELECT * FROM t WHERE b LIKE '50%'", "SELECT '?' FROM t", "SELECT 1 -- what's this?\n FROM t"):
        with pytest.raises(ValueError, match="a store statement holds"):
            pyformat(unsafe)
    assert is_database_url("postgresql://u@h/db") and is_database_url("postgres://h/db")
    assert not is_database_url(Path("postgresql:/x")) and not is_database_url("state/smki.db")
    assert redact("postgresql://u:s3cret@db.example:5433/smki?sslmode=require&password=other") == \
        "postgresql://u:***@db.example:5433/smki?sslmode=require&password=***"


def test_an_unreachable_server_is_a_one_line_error_without_the_password():
    with pytest.raises(BadInputError, match="cannot connect to PostgreSQL") as caught:
        open_database("postgresql://smki:s3cret@/smki?host=/nonexistent-smki-socket-dir&port=1")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


# ---- the store on both backends ----

def test_migrations_are_applied_once_and_a_newer_schema_is_refused(database_target):
    with pytest.raises(BadInputError, match="no smki database here"):
        open_database(database_target)  # nothing there yet, and not asked to create
    connection = open_database(database_target, create=True)
    versions = [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [version for version, _, _ in MIGRATIONS]
    connection.close()
    again = open_database(database_target)
    assert [row["version"] for row in again.execute("SELECT version FROM schema_migrations ORDER BY version")] == versions
    again.execute("INSERT INTO schema_migrations VALUES (?, 'future', 'now')", (SCHEMA_VERSION + 1,))
    again.close()
    with pytest.raises(ConflictError, match="newer than this smki"):
        open_database(database_target)


def test_concurrent_first_opens_migrate_once(database_target):
    errors, barrier = [], threading.Barrier(4)

    def open_it():
        try:
            barrier.wait()
            open_database(database_target, create=True).close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert errors == []
    connection = open_database(database_target)
    assert [row[0] for row in connection.execute("SELECT version FROM schema_migrations ORDER BY version")] == \
        [version for version, _, _ in MIGRATIONS]


def test_records_round_trip_with_rows_like_sqlite_rows(database_target):
    connection = open_database(database_target, create=True)
    with transaction(connection):
        insert_certificate(connection, record())
        insert_certificate(connection, record("5B" * 16, key_usage="KA", issued_at="2026-01-02T00:00:00+00:00"))
        insert_certificate(connection, record("6C" * 16, certificate_type="device", entity_id="00DB1234567890A0", role=None))
    [found] = find_certificate(connection, "4a" * 16)
    assert type(found.der) is bytes and found.der == DER and found.policy_sha256 == "ab" * 32 and found.role == "02"
    row = connection.execute("SELECT serial_hex, der, role FROM certificates WHERE serial_hex = ?", ("5B" * 16,)).fetchone()
    assert row["serial_hex"] == row[0] == "5B" * 16 and row["DER"] == DER and tuple(row) == ("5B" * 16, DER, "02")
    assert dict(row) == {"serial_hex": "5B" * 16, "der": DER, "role": "02"} and list(row.keys()) == ["serial_hex", "der", "role"]
    assert connection.execute("SELECT serial_hex FROM certificates WHERE serial_hex = ?", ("00",)).fetchone() is None
    assert [r.serial_hex for r in list_certificates(connection, entity_id="90B3D51F30010000")] == ["4A" * 16, "5B" * 16]
    assert [r.serial_hex for r in list_certificates(connection, limit=1)] == ["4A" * 16]
    assert list_certificates(connection, status="R") == []
    assert [r.serial_hex for r in search_certificates(connection, entity_id="90B3D51F30010000", certificate_type="organisation",
                                                      key_usage="KA")] == ["5B" * 16]
    assert [r.certificate_type for r in search_certificates(connection, entity_id="00DB1234567890A0", certificate_type="device")] == ["device"]
    assert search_certificates(connection, entity_id="00DB1234567890A0", certificate_type="organisation") == []
    with pytest.raises(BadInputError, match="not hexadecimal"):
        find_certificate(connection, "XYZ")


def test_a_repeated_serial_is_a_conflict_and_the_transaction_rolls_back(database_target):
    connection = open_database(database_target, create=True)
    with transaction(connection):
        insert_certificate(connection, record())
    with pytest.raises(ConflictError, match="already recorded"):
        with transaction(connection):
            insert_certificate(connection, record(serial="5B" * 16))
            insert_certificate(connection, record())
    assert not connection.in_transaction
    assert [r.serial_hex for r in list_certificates(connection)] == ["4A" * 16]  # 5B... rolled back too
    with transaction(connection):  # the same serial from another issuer is a different certificate
        insert_certificate(connection, record(issuer_key_id="47D40AF3412904A0"))
    assert len(find_certificate(connection, "4A" * 16)) == 2
    with pytest.raises(StoreConflictError) as caught:  # a raw constraint error is smki's class on both backends
        connection.execute("INSERT INTO revocations VALUES (?, ?, ?, ?)", ("00", "00", "now", "keyCompromise"))
    assert caught.value.fault is StoreFault.CONSTRAINT and isinstance(caught.value.__cause__, Exception)


def test_a_failed_write_inside_a_transaction_is_undone_alone(database_target):
    """As in SQLite: a caller that catches a refused write goes on with its transaction."""
    connection = open_database(database_target, create=True)
    with transaction(connection):
        insert_certificate(connection, record())
        with pytest.raises(ConflictError):
            insert_certificate(connection, record())
        insert_certificate(connection, record("5B" * 16))
        assert connection.execute("UPDATE certificates SET status = 'E' WHERE issuer_key_id = ?", (ISSUER,)).rowcount == 2
    assert sorted((r.serial_hex, r.status) for r in list_certificates(connection)) == [("4A" * 16, "E"), ("5B" * 16, "E")]
    assert connection.execute("DELETE FROM certificates WHERE serial_hex = ?", ("5B" * 16,)).rowcount == 1  # autocommit


def test_revocations_and_crl_numbers(database_target):
    connection = open_database(database_target, create=True)
    at = datetime(2026, 3, 1, tzinfo=timezone.utc)
    with transaction(connection):
        for serial in ("6C" * 16, "4A" * 16, "5B" * 16):
            insert_certificate(connection, record(serial))
    with transaction(connection):
        record_revocation(connection, ISSUER, "6C" * 16, at, "keyCompromise")
        record_revocation(connection, ISSUER, "4A" * 16, at, "superseded")
    assert revoked_entries(connection, ISSUER) == [("4A" * 16, at.isoformat(), "superseded"), ("6C" * 16, at.isoformat(), "keyCompromise")]
    assert [r.serial_hex for r in list_certificates(connection, status="R")] == ["4A" * 16, "6C" * 16]
    with pytest.raises(ConflictError, match="already revoked"), transaction(connection):
        record_revocation(connection, ISSUER, "4A" * 16, at, "keyCompromise")
    with pytest.raises(BadInputError, match="no certificate"), transaction(connection):
        record_revocation(connection, ISSUER, "7D" * 16, at, "keyCompromise")
    numbers = []
    for _ in range(3):
        with transaction(connection):
            numbers.append(next_crl_number(connection, ISSUER, at))
    connection.close()
    reopened = open_database(database_target)
    with transaction(reopened):
        numbers.append(next_crl_number(reopened, ISSUER, at))
    assert numbers == [1, 2, 3, 4]
    with pytest.raises(RuntimeError), transaction(reopened):  # a rolled-back number is never used
        next_crl_number(reopened, ISSUER, at)
        raise RuntimeError("signing failed")
    with transaction(reopened):
        assert next_crl_number(reopened, ISSUER, at) == 5


def test_audit_trail_append_checkpoint_verify_export_and_tamper(database_target):
    connection = open_database(database_target, create=True)
    signer = SoftwareSigner()
    trail = AuditTrail(connection, signer, checkpoint_every=10)
    with pytest.raises(RuntimeError, match="inside the transaction"):
        trail.append(entry(0))
    with transaction(connection):
        assert trail.append(*(entry(n) for n in range(25))) == 25
        trail.checkpoint("end of test batch")
    with transaction(connection):  # a second checkpoint of the same head replaces the first
        trail.checkpoint("again")
    context, signature = connection.execute("SELECT context, signature FROM audit_checkpoints").fetchone()  # ON CONFLICT DO UPDATE
    assert context == "again" and type(signature) is bytes
    report = verify_trail(*rows_from_database(connection), signer.public_key)
    assert report.ok and (report.entries, report.checkpoints, report.last_signed_seq) == (25, 1, 25)
    exported = json.loads(export_trail(connection, "PEM"))
    assert len(exported["entries"]) == 25 and exported["entries"][0]["details"] == '{"n":0,"note":"50% ü ?"}'
    connection.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 7")
    report = verify_trail(*rows_from_database(connection), signer.public_key)
    assert not report.ok and report.first_broken_seq == 7 and "entry 7 was altered" in report.problem


def test_the_audit_commands_take_a_database_url(database_target, run_smki):
    connection = open_database(database_target, create=True)
    trail = AuditTrail(connection)
    with transaction(connection):
        trail.append(entry(1), entry(2, operation="policy.adopt"))
    connection.close()
    result = run_smki("audit", "verify", "--db", database_target, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["entries"] == 2
    shown = json.loads(run_smki("audit", "show", "--db", database_target, "--operation", "policy.adopt", "--json").stdout)
    assert [e["seq"] for e in shown] == [2]


def test_policy_adoption(database_target, tmp_path):
    connection = open_database(database_target, create=True)
    org = load_policy(POLICIES / "organisation.yaml")
    with pytest.raises(ConflictError, match="no organisation policy adopted"):
        require_adopted(connection, org)
    assert adopt(connection, org, "alice") is None
    require_adopted(connection, org)
    text = (POLICIES / "organisation.yaml").read_text()
    (tmp_path / "changed.yaml").write_text(text.replace('  version: "1.0"', '  version: "1.1"', 1))
    changed = load_policy(tmp_path / "changed.yaml")
    with pytest.raises(ConflictError, match="is not the adopted organisation policy"):
        require_adopted(connection, changed)
    previous = adopt(connection, changed, "bob")
    assert previous["version"] == "1.0" and previous["actor"] == "alice"
    assert adopted(connection, "organisation")["version"] == "1.1"
    require_adopted(connection, changed)
    assert connection.execute("SELECT COUNT(*) FROM adopted_policies").fetchone()[0] == 1
    assert [(r["actor"], json.loads(r["policy"])["version"]) for r in connection.execute("SELECT * FROM audit_entries ORDER BY seq")] == \
        [("alice", "1.0"), ("bob", "1.1")]


def test_concurrent_writers_keep_crl_numbers_increasing_and_the_chain_whole(database_target):
    """Writers on separate connections are serialised: no cRLNumber twice, no fork in the audit chain."""
    open_database(database_target, create=True).close()
    writers, rounds, errors = 4, 12, []
    barrier = threading.Barrier(writers)

    def write(name):
        try:
            connection = open_database(database_target)
            trail = AuditTrail(connection)
            barrier.wait()
            for _ in range(rounds):
                with transaction(connection):
                    number = next_crl_number(connection, ISSUER, datetime.now(timezone.utc))
                    trail.append(AuditEntry(name, "crl.issue", subject={"crl_number": number}))
            connection.close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"writer-{n}",)) for n in range(writers)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    assert errors == []
    connection = open_database(database_target)
    entries, checkpoints = rows_from_database(connection)
    assert [json.loads(e["subject"])["crl_number"] for e in entries] == list(range(1, writers * rounds + 1))
    assert verify_trail(entries, checkpoints, None).ok
