"""Audit hardening (issue 12, items 4, 5, 6, 10): a rewritten or extended trail fails under a pinned key,
a removed tail is caught against a head recorded earlier, verification never writes, and an authority
refuses to sign a CRL from state its audit trail does not account for."""

import hashlib
import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit import AuditEntry, AuditTrail
from smki.audit.trail import GENESIS_HASH
from smki.store import open_database, transaction

pytest_plugins = ["postgres_server"]  # `database_target`: SQLite and PostgreSQL


@pytest.fixture(scope="module")
def audit_key(new_hsm_key):
    return new_hsm_key("audit-hardening")[1]  # checkpoints signed in SoftHSM, as in production


def write_trail(path, signer, runs=(5, 5)):
    """A trail of several runs, each ended by a signed checkpoint (as AuditedOperation does)."""
    connection = open_database(path, create=True)
    trail = AuditTrail(connection, signer)
    for run, size in enumerate(runs):
        with transaction(connection):
            trail.append(*(AuditEntry("alice", "certificate.issue", subject={"serial": f"{run:04X}{i:028X}"}, details={"n": i})
                           for i in range(size)))
            trail.checkpoint(f"run {run}")
    return connection


def pem_file(tmp_path, signer):
    path = tmp_path / "audit.pub"
    path.write_bytes(signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def independent_entry_hash(previous: str, row) -> str:
    """SHA-256(prev_hash || canonical body), written here from the README's rule, not from the code under test."""
    body = {"seq": row["seq"], "time": row["time"], "actor": row["actor"], "operation": row["operation"],
            "subject": json.loads(row["subject"]), "policy": None if row["policy"] is None else json.loads(row["policy"]),
            "outcome": row["outcome"], "details": json.loads(row["details"])}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(bytes.fromhex(previous) + text.encode()).hexdigest()


def rechain(connection):
    """What a forger with write access does: recompute every prev_hash and entry_hash in order."""
    previous = GENESIS_HASH
    for row in connection.execute("SELECT * FROM audit_entries ORDER BY seq").fetchall():
        current = independent_entry_hash(previous, row)
        connection.execute("UPDATE audit_entries SET prev_hash = ?, entry_hash = ? WHERE seq = ?", (previous, current, row["seq"]))
        previous = current


def one_line(result, code):
    assert result.returncode == code, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr


# -- item 4: a rewritten trail, checkpoints and stored key deleted -------------------------------------
def test_a_rewritten_trail_without_checkpoints_fails_under_a_pinned_key(tmp_path, audit_key, run_smki):
    db = tmp_path / "a.db"
    connection = write_trail(db, audit_key)
    connection.execute("DELETE FROM audit_checkpoints")
    connection.execute("DELETE FROM audit_keys")
    connection.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 3")
    rechain(connection)
    connection.close()
    result = run_smki("audit", "verify", "--db", str(db), "--public-key", str(pem_file(tmp_path, audit_key)))
    assert result.returncode == 1 and "BROKEN at entry 1" in result.stdout and "no checkpoint signed" in result.stdout, result.stdout
    as_json = json.loads(run_smki("audit", "verify", "--db", str(db), "--public-key", str(pem_file(tmp_path, audit_key)), "--json").stdout)
    assert as_json["ok"] is False and as_json["first_broken_seq"] == 1 and as_json["head"] is None


def test_an_entry_appended_after_the_last_checkpoint_fails_under_a_pinned_key(tmp_path, audit_key, run_smki):
    db = tmp_path / "a.db"
    connection = write_trail(db, audit_key)
    forger = AuditTrail(connection)  # no audit key: the forger cannot sign a checkpoint
    with transaction(connection):
        forger.append(AuditEntry("mallory", "certificate.revoke", subject={"serial": "00"}))
    connection.close()
    result = run_smki("audit", "verify", "--db", str(db), "--public-key", str(pem_file(tmp_path, audit_key)), "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 1 and report["first_broken_seq"] == 11 and "entries 11 to 11" in report["problem"]


def test_a_fully_signed_trail_passes_under_a_pinned_key_and_prints_its_head(tmp_path, audit_key, run_smki):
    db = tmp_path / "a.db"
    write_trail(db, audit_key).close()
    with sqlite3.connect(db) as raw:
        raw.row_factory = sqlite3.Row
        rows = raw.execute("SELECT * FROM audit_entries ORDER BY seq").fetchall()
    previous = GENESIS_HASH
    for row in rows:
        previous = independent_entry_hash(previous, row)
    result = run_smki("audit", "verify", "--db", str(db), "--public-key", str(pem_file(tmp_path, audit_key)))
    assert result.returncode == 0 and f"head 10:{previous}" in result.stdout, result.stdout
    report = json.loads(run_smki("audit", "verify", "--db", str(db), "--public-key", str(pem_file(tmp_path, audit_key)), "--json").stdout)
    assert report["ok"] and report["head"] == f"10:{previous}"


# -- item 5: a tail removed with its checkpoints, checked against a head recorded earlier -------------
def test_a_removed_tail_is_caught_against_a_recorded_head(tmp_path, audit_key, run_smki):
    db, key = tmp_path / "a.db", pem_file(tmp_path, audit_key)
    write_trail(db, audit_key).close()
    recorded = json.loads(run_smki("audit", "verify", "--db", str(db), "--public-key", str(key), "--json").stdout)["head"]
    assert run_smki("audit", "export", "--db", str(db), "--out", str(tmp_path / "earlier.json")).returncode == 0
    assert run_smki("audit", "verify", "--db", str(db), "--public-key", str(key), "--expect-head", recorded).returncode == 0
    with sqlite3.connect(db) as raw:  # the whole last run goes: its entries and its checkpoint
        raw.execute("DELETE FROM audit_entries WHERE seq > 5")
        raw.execute("DELETE FROM audit_checkpoints WHERE seq > 5")
    for evidence in (["--expect-head", recorded], ["--since-export", str(tmp_path / "earlier.json")]):
        result = run_smki("audit", "verify", "--db", str(db), "--public-key", str(key), *evidence)
        assert result.returncode == 1 and "BROKEN at entry 6" in result.stdout and "tail was removed" in result.stdout, result.stdout


def test_a_rewritten_head_is_caught_against_a_recorded_head(tmp_path, audit_key, run_smki):
    db = tmp_path / "a.db"
    write_trail(db, audit_key, runs=(5,)).close()
    recorded = json.loads(run_smki("audit", "verify", "--db", str(db), "--json").stdout)["head"]
    with sqlite3.connect(db) as raw:
        raw.row_factory = sqlite3.Row
        raw.execute("DELETE FROM audit_checkpoints")
        raw.execute("DELETE FROM audit_keys")
        raw.execute("UPDATE audit_entries SET details = '{\"n\":7}' WHERE seq = 2")
        rechain(raw)
    result = run_smki("audit", "verify", "--db", str(db), "--expect-head", recorded)
    assert result.returncode == 1 and "BROKEN at entry 5" in result.stdout and "were rewritten" in result.stdout, result.stdout


@pytest.mark.parametrize("head", ["5", "x:" + "a" * 64, "5:" + "a" * 63, "5:" + "g" * 64, "-1:" + "a" * 64])
def test_a_malformed_expected_head_is_one_line(tmp_path, audit_key, run_smki, head):
    db = tmp_path / "a.db"
    write_trail(db, audit_key, runs=(2,)).close()
    one_line(run_smki("audit", "verify", "--db", str(db), "--expect-head", head), 3)


# -- item 10: reading never writes -----------------------------------------------------------------------
@pytest.mark.parametrize("command", [["verify"], ["show"], ["export", "--out", "OUT"]])
def test_reading_an_empty_file_refuses_it_and_writes_nothing(tmp_path, run_smki, command):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    args = [str(tmp_path / "out.json") if a == "OUT" else a for a in command]
    result = run_smki("audit", *args, "--db", str(empty))
    one_line(result, 3)
    assert "no smki store" in result.stderr
    assert empty.read_bytes() == b"" and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]


def test_reading_an_older_store_does_not_migrate_it(tmp_path, audit_key, run_smki):
    db = tmp_path / "a.db"
    write_trail(db, audit_key, runs=(3,)).close()
    with sqlite3.connect(db) as raw:  # as if written by an smki one migration older
        raw.execute("DROP TABLE certificate_status_changes")
        raw.execute("DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)")
        versions = raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    for command in (["verify"], ["show"], ["export", "--out", str(tmp_path / "t.json")]):
        assert run_smki("audit", *command, "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == versions
        assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'certificate_status_changes'").fetchone() is None


def test_verification_reads_either_backend_without_writing(database_target, audit_key, run_smki):
    connection = write_trail(database_target, audit_key, runs=(3,))
    before = [tuple(row) for row in connection.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq")]
    connection.close()
    report = json.loads(run_smki("audit", "verify", "--db", database_target, "--json").stdout)
    assert report["ok"] and report["head"] == f"3:{before[-1][1]}"
    shown = json.loads(run_smki("audit", "show", "--db", database_target, "--json").stdout)
    assert [row["seq"] for row in shown] == [1, 2, 3]
    reader = open_database(database_target, read_only=True)
    with pytest.raises(sqlite3.DatabaseError):
        reader.execute("DELETE FROM audit_entries")
    reader.close()
    again = open_database(database_target)
    assert [tuple(row) for row in again.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq")] == before
