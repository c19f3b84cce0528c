"""The audit trail: tampering of every kind is detected at the right entry; state and entry commit together."""

import json

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit import AuditEntry, AuditTrail, verify_trail
from smki.audit.verify import rows_from_database
from smki.errors import BadInputError
from smki.hsm.signer import SoftwareSigner
from smki.store import open_database, transaction


def make_trail(tmp_path, signer, entries=10, checkpoint_every=1000, name="a.db"):
    connection = open_database(tmp_path / name, create=True)
    trail = AuditTrail(connection, signer, checkpoint_every)
    with transaction(connection):
        trail.append(*(AuditEntry("alice", "certificate.issue", subject={"serial": f"{i:032X}", "entity_id": "90B3D51F30010000"},
                                  details={"n": i}, policy={"name": "org", "version": "1.0", "sha256": "ab" * 32}) for i in range(entries)))
        trail.checkpoint("end of test batch")
    return connection, trail


def verify(connection, signer):
    return verify_trail(*rows_from_database(connection), signer.public_key)


@pytest.fixture(scope="module")
def audit_key(new_hsm_key):
    return new_hsm_key("audit")[1]  # checkpoints signed in SoftHSM, as in production


def test_an_intact_trail_verifies(tmp_path, audit_key):
    connection, _ = make_trail(tmp_path, audit_key)
    report = verify(connection, audit_key)
    assert report.ok and report.entries == 10 and report.checkpoints == 1 and report.last_signed_seq == 10


@pytest.mark.parametrize("tamper, seq, fragment", [
    ("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 4", 4, "entry 4 was altered"),
    ("UPDATE audit_entries SET details = '{\"n\": 99}' WHERE seq = 7", 7, "entry 7 was altered"),
    ("DELETE FROM audit_entries WHERE seq = 5", 5, "entry 5 expected, found entry 6"),
    ("UPDATE audit_entries SET seq = seq + 100 WHERE seq = 3", 3, "entry 3 expected"),
])
def test_altering_deleting_reordering_is_detected(tmp_path, audit_key, tamper, seq, fragment):
    connection, _ = make_trail(tmp_path, audit_key)
    connection.execute(tamper)
    report = verify(connection, audit_key)
    assert not report.ok and report.first_broken_seq == seq and fragment in report.problem


def test_swapping_two_entries_is_detected(tmp_path, audit_key):
    connection, _ = make_trail(tmp_path, audit_key)
    rows = {r["seq"]: dict(r) for r in connection.execute("SELECT * FROM audit_entries WHERE seq IN (3, 4)")}
    for seq, other in ((3, 4), (4, 3)):
        row = rows[other]
        connection.execute("UPDATE audit_entries SET time=?, actor=?, operation=?, subject=?, details=?, prev_hash=?, entry_hash=? WHERE seq=?",
                           (row["time"], row["actor"], row["operation"], row["subject"], row["details"], row["prev_hash"], row["entry_hash"], seq))
    report = verify(connection, audit_key)
    assert report.first_broken_seq == 3 and "does not chain" in report.problem


def test_inserting_a_forged_entry_is_detected(tmp_path, audit_key):
    """Even a forger who recomputes the chain after an insertion is caught by the signed checkpoint."""
    from smki.audit.trail import entry_hash
    connection, _ = make_trail(tmp_path, audit_key)
    entries, checkpoints = rows_from_database(connection)
    forged = AuditEntry("mallory", "certificate.revoke", subject={"serial": "00"})
    previous = entries[4]["entry_hash"]
    rebuilt = entries[:5]
    for row_entry in [forged] + [None] * (len(entries) - 5):
        seq = len(rebuilt) + 1
        if row_entry is None:
            source = entries[seq - 2]
            body = {"seq": seq, "time": source["time"], "actor": source["actor"], "operation": source["operation"],
                    "subject": json.loads(source["subject"]), "policy": json.loads(source["policy"]), "outcome": source["outcome"], "details": json.loads(source["details"])}
            row = {**source}
        else:
            body = row_entry.body(seq)
            row = {"time": row_entry.time, "actor": row_entry.actor, "operation": row_entry.operation, "subject": json.dumps(row_entry.subject),
                   "policy": None, "outcome": row_entry.outcome, "details": "{}"}
        current = entry_hash(previous, body)
        rebuilt.append({**row, "seq": seq, "prev_hash": previous, "entry_hash": current})
        previous = current
    report = verify_trail(rebuilt, checkpoints, audit_key.public_key)
    assert not report.ok and report.first_broken_seq == 10 and "signed another chain head" in report.problem


def test_truncating_the_tail_after_a_checkpoint_is_detected(tmp_path, audit_key):
    connection, _ = make_trail(tmp_path, audit_key)
    connection.execute("DELETE FROM audit_entries WHERE seq > 7")
    report = verify(connection, audit_key)
    assert not report.ok and report.first_broken_seq == 8 and "truncated after entry 7" in report.problem


def test_replacing_a_checkpoint_signature_is_detected(tmp_path, audit_key):
    connection, _ = make_trail(tmp_path, audit_key)
    other = SoftwareSigner()
    from smki.audit.trail import checkpoint_message
    row = connection.execute("SELECT * FROM audit_checkpoints").fetchone()
    forged = other.sign(checkpoint_message(row["seq"], row["head_hash"], row["time"], row["context"]))
    connection.execute("UPDATE audit_checkpoints SET signature = ?", (forged,))
    report = verify(connection, audit_key)
    assert not report.ok and report.first_broken_seq == 10 and "signature does not verify" in report.problem


def test_automatic_checkpoints_every_n_entries(tmp_path):
    signer = SoftwareSigner()
    connection, _ = make_trail(tmp_path, signer, entries=25, checkpoint_every=10)
    seqs = [row[0] for row in connection.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")]
    assert seqs == [25]  # one append of 25 crossed two boundaries: it checkpoints its head once; plus the explicit one
    trail = AuditTrail(connection, signer, 10)
    for _ in range(6):
        with transaction(connection):
            trail.append(AuditEntry("bob", "certificate.issue"))
    assert [row[0] for row in connection.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")] == [25, 30]
    assert verify(connection, signer).ok


def test_state_and_entry_commit_together_or_not_at_all(tmp_path):
    connection = open_database(tmp_path / "s.db", create=True)
    connection.execute("CREATE TABLE state (name TEXT)")
    trail = AuditTrail(connection)
    with pytest.raises(RuntimeError, match="crash"):
        with transaction(connection):
            connection.execute("INSERT INTO state VALUES ('half')")
            trail.append(AuditEntry("alice", "certificate.revoke"))
            raise RuntimeError("crash in the middle of the operation")
    assert connection.execute("SELECT COUNT(*) FROM state").fetchone()[0] == 0
    assert connection.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0] == 0
    with transaction(connection):
        connection.execute("INSERT INTO state VALUES ('whole')")
        trail.append(AuditEntry("alice", "certificate.revoke"))
    assert connection.execute("SELECT COUNT(*) FROM audit_entries").fetchone()[0] == 1
    with pytest.raises(RuntimeError, match="inside the transaction"):
        trail.append(AuditEntry("alice", "outside"))


@pytest.mark.parametrize("details", [{"pin": "1234"}, {"user_PIN": "x"}, {"nested": [{"passphrase": "x"}]}, {"share": "abandon"}])
def test_secrets_never_enter_the_trail(details):
    with pytest.raises(BadInputError, match="looks like a secret"):
        AuditEntry("alice", "key.activate", details=details)


def test_export_verifies_elsewhere_with_the_public_key_alone(tmp_path, audit_key, run_smki):
    connection, _ = make_trail(tmp_path, audit_key)
    pem = audit_key.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "audit.pub").write_bytes(pem)
    result = run_smki("audit", "export", "--db", str(tmp_path / "a.db"), "--out", str(tmp_path / "trail.json"))
    assert result.returncode == 0, result.stderr
    result = run_smki("audit", "verify", "--export", str(tmp_path / "trail.json"), "--public-key", str(tmp_path / "audit.pub"), "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["ok"] is True
    document = json.loads((tmp_path / "trail.json").read_text())
    document["entries"][2]["actor"] = "mallory"
    (tmp_path / "tampered.json").write_text(json.dumps(document))
    result = run_smki("audit", "verify", "--export", str(tmp_path / "tampered.json"), "--public-key", str(tmp_path / "audit.pub"))
    assert result.returncode == 1 and "BROKEN at entry 3" in result.stdout
    again = run_smki("audit", "export", "--db", str(tmp_path / "a.db"), "--out", str(tmp_path / "trail.json"))
    assert again.returncode == 5 and "already exists" in again.stderr


def test_audit_cli_bad_inputs(tmp_path, run_smki):
    def one_line(result, code):
        assert result.returncode == code and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    one_line(run_smki("audit", "verify", "--db", str(tmp_path / "absent.db")), 3)
    (tmp_path / "junk.db").write_bytes(b"junk" * 500)
    one_line(run_smki("audit", "verify", "--db", str(tmp_path / "junk.db")), 3)
    (tmp_path / "bad.pem").write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    make_trail(tmp_path, SoftwareSigner(), name="t.db")
    one_line(run_smki("audit", "verify", "--db", str(tmp_path / "t.db"), "--public-key", str(tmp_path / "bad.pem")), 3)
    (tmp_path / "x.json").write_text("{}")
    one_line(run_smki("audit", "verify", "--export", str(tmp_path / "x.json")), 3)


def test_show_filters(tmp_path, run_smki):
    make_trail(tmp_path, SoftwareSigner(), entries=3, name="t.db")
    rows = json.loads(run_smki("audit", "show", "--db", str(tmp_path / "t.db"), "--subject", f"{1:032X}", "--json").stdout)
    assert [r["seq"] for r in rows] == [2] and rows[0]["policy"]["version"] == "1.0"
    assert json.loads(run_smki("audit", "show", "--db", str(tmp_path / "t.db"), "--operation", "certificate.", "--json").stdout)[0]["actor"] == "alice"
