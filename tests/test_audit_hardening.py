"""Audit hardening (issue 12, items 4, 5, 6, 10): a rewritten or extended trail fails under a pinned key,
a removed tail is caught against a head recorded earlier, verification never writes, and an authority
refuses to sign a CRL from state its audit trail does not account for."""

import hashlib
import itertools
import json
import sqlite3

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit import AuditEntry, AuditTrail
from smki.audit.trail import GENESIS_HASH
from smki.errors import StoreError, StoreFault
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
        raw.execute("DROP TABLE listed_serials")  # the newest migration's table
        raw.execute("DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations)")
        versions = raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    for command in (["verify"], ["show"], ["export", "--out", str(tmp_path / "t.json")]):
        assert run_smki("audit", *command, "--db", str(db)).returncode == 0
    with sqlite3.connect(db) as raw:
        assert raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == versions
        assert raw.execute("SELECT name FROM sqlite_master WHERE name = 'listed_serials'").fetchone() is None
    # A reader that needs the current tables refuses the older store in one line, and migrates nothing either.
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(db) as source, sqlite3.connect(state / "smki.db") as copy:
        source.backup(copy)  # the whole store, its write-ahead log included
    listed = run_smki("ca", "list", "--state", str(state))
    assert listed.returncode == 5 and "older than this smki" in listed.stderr and len(listed.stderr.strip().splitlines()) == 1
    with sqlite3.connect(state / "smki.db") as raw:
        assert raw.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall() == versions


def test_verification_reads_either_backend_without_writing(database_target, audit_key, run_smki):
    connection = write_trail(database_target, audit_key, runs=(3,))
    before = [tuple(row) for row in connection.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq")]
    connection.close()
    report = json.loads(run_smki("audit", "verify", "--db", database_target, "--json").stdout)
    assert report["ok"] and report["head"] == f"3:{before[-1][1]}"
    shown = json.loads(run_smki("audit", "show", "--db", database_target, "--json").stdout)
    assert [row["seq"] for row in shown] == [1, 2, 3]
    reader = open_database(database_target, read_only=True)
    with pytest.raises(StoreError) as refused:  # the store's own error, on either backend
        reader.execute("DELETE FROM audit_entries")
    assert refused.value.fault is StoreFault.READ_ONLY
    reader.close()
    again = open_database(database_target)
    assert [tuple(row) for row in again.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq")] == before


# -- item 6: the state a CA signs from must be the state its audit trail records ----------------------
from pathlib import Path  # noqa: E402

from cryptography import x509  # noqa: E402

import csr_factory  # noqa: E402
from conftest import openssl, smki  # noqa: E402

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
PIN = ["--pin-source", "env:SMKI_TEST_PIN"]


_org_authorities = itertools.count()


# Kept by hand, not smki.testing: the root and the Issuing OCA share one state, as an older operator's did, and the
# reconcile and adopt-state tests (here, test_state_adoption, test_state_hardening) count its two issuers; the kit gives each authority its own.
@pytest.fixture(scope="module")
def org_authority(tmp_path_factory, hsm_token):
    """An Organisation root and Issuing OCA; two certificates issued, one revoked keyCompromise, CRL 1 issued."""
    d = tmp_path_factory.mktemp("reconcile")
    state = ["--state", str(d / "state")]
    policy = ["--policy", str(POLICIES / "organisation.yaml")]
    smki("policy", "adopt", str(POLICIES / "organisation.yaml"), *state)
    keys = {}
    instance = next(_org_authorities)  # other modules build their own (the session's token is shared: labels must differ)
    for name, key_id in (("rc-root-o", f"ad{instance:02x}01"), ("rc-issuing-o", f"ad{instance:02x}02")):
        label = f"{name}-{instance}"
        smki("hsm", "keygen", "--token", hsm_token.label, "--key-label", label, "--key-id", key_id, *PIN, *state)
        keys[name] = ["--token", hsm_token.label, "--key-label", label, "--key-id", key_id, *PIN]
    smki("cert", "root", *keys["rc-root-o"], *state, *policy, "--environment", "test", "--not-before", "2026-01-01", "--out", str(d / "root.pem"))
    smki("hsm", "pubkey", *keys["rc-issuing-o"][:6], "--out", str(d / "issuing.pub"))
    smki("cert", "issuing-ca", *keys["rc-root-o"], *state, *policy, "--environment", "test", "--not-before", "2026-01-01",
         "--issuer-cert", str(d / "root.pem"), "--public-key", str(d / "issuing.pub"), "--out", str(d / "issuing.pem"))
    serials = []
    for i in range(2):
        (d / f"r{i}.csr").write_bytes(csr_factory.organisation_csr(eui64=f"90B3D51F300200B{i}"))
        smki("ca", "issue-org", *keys["rc-issuing-o"], *state, *policy, "--environment", "test", "--issuer-cert", str(d / "issuing.pem"),
             "--requester", "supplier", "--not-before", "2026-02-01", "--out", str(d / f"o{i}.pem"), str(d / f"r{i}.csr"))
        serials.append(f"{x509.load_pem_x509_certificate((d / f'o{i}.pem').read_bytes()).serial_number:032X}")
    smki("ca", "revoke", *state, *policy, serials[0], "--reason", "keyCompromise")
    crl_args = ["ca", "crl", *keys["rc-issuing-o"], *policy, "--issuer-cert", str(d / "issuing.pem")]
    first = json.loads(smki(*crl_args, *state, "--out", str(d / "crl1.pem"), "--json").stdout)
    assert first["crl_number"] == 1 and first["entries"] == 1
    return d, serials, crl_args, policy


def copy_state(d: Path, tmp_path: Path) -> Path:
    """A private copy of the authority's state (SQLite's backup: the WAL included)."""
    (tmp_path / "state").mkdir()
    with sqlite3.connect(d / "state" / "smki.db") as source, sqlite3.connect(tmp_path / "state" / "smki.db") as target:
        source.backup(target)
    return tmp_path / "state"


def tamper(state: Path, *statements: tuple) -> None:
    with sqlite3.connect(state / "smki.db") as raw:
        raw.execute("PRAGMA foreign_keys = OFF")
        for statement in statements:
            raw.execute(*statement)


def test_an_untampered_state_signs_the_next_crl(org_authority, tmp_path):
    d, serials, crl_args, _ = org_authority
    state = copy_state(d, tmp_path)
    second = json.loads(smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl2.pem"), "--json").stdout)
    assert second["crl_number"] == 2 and second["entries"] == 1


def test_the_reported_unrevocation_is_refused(org_authority, tmp_path, run_smki):
    """Issue 12 item 6 as reported: revocations deleted, cRLNumber lowered; no CRL un-revokes the certificate."""
    d, serials, crl_args, _ = org_authority
    state = copy_state(d, tmp_path)
    tamper(state, ("DELETE FROM revocations",), ("UPDATE certificates SET status = 'I'",), ("UPDATE crl_numbers SET last_number = 0",))
    assert run_smki("audit", "verify", "--db", str(state / "smki.db")).returncode == 0  # the chain is untouched: why this check exists
    result = smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"), check=False)
    one_line(result, 1)
    assert "disagrees with its audit trail" in result.stderr and not (tmp_path / "crl.pem").exists()
    with sqlite3.connect(state / "smki.db") as raw:
        assert raw.execute("SELECT last_number FROM crl_numbers").fetchall() == [(0,)]  # no number consumed
        refused = raw.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
    assert refused == ("crl.issue", "refused")


@pytest.mark.parametrize("statements, fragment", [
    ([("DELETE FROM revocations",)], "revocation(s) the audit trail records are missing"),
    ([("UPDATE crl_numbers SET last_number = last_number - 1",)], "last cRLNumber is 0 in the state but 1"),
    ([("UPDATE crl_numbers SET last_number = 7",)], "last cRLNumber is 7 in the state but 1"),
    ([("UPDATE revocations SET reason = 'superseded'",)], "differ in time or reason"),
    ([("UPDATE certificates SET status = 'I' WHERE status = 'R'",)], "status R that disagrees"),
    ([("DELETE FROM certificates WHERE status = 'I' AND certificate_type = 'organisation'",)], "missing from the state"),
    ([("INSERT INTO certificates SELECT 'AB' || substr(serial_hex, 3), issuer_key_id, certificate_type, subject_key_id, entity_id, role,"
       " key_usage, 'R', not_before, not_after, policy_name, policy_version, policy_sha256, request_sha256, issued_at, der"
       " FROM certificates WHERE status = 'R'",),
      ("INSERT INTO revocations SELECT issuer_key_id, 'AB' || substr(serial_hex, 3), revoked_at, reason FROM revocations",)],
     "issued by no audited operation"),
])
def test_every_kind_of_edited_state_is_refused_before_signing(org_authority, tmp_path, statements, fragment):
    d, serials, crl_args, _ = org_authority
    state = copy_state(d, tmp_path)
    tamper(state, *statements)
    result = smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"), check=False)
    one_line(result, 1)
    assert fragment in result.stderr and not (tmp_path / "crl.pem").exists(), result.stderr


def test_a_revocation_on_edited_state_is_refused(org_authority, tmp_path):
    d, serials, _, policy = org_authority
    state = copy_state(d, tmp_path)
    tamper(state, ("UPDATE crl_numbers SET last_number = 0",))
    result = smki("ca", "revoke", "--state", str(state), *policy, serials[1], "--reason", "keyCompromise", check=False)
    one_line(result, 1)
    assert "disagrees with its audit trail" in result.stderr
    with sqlite3.connect(state / "smki.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM revocations").fetchone()[0] == 1


def test_the_crl_signed_from_reconciled_state_still_revokes(org_authority, tmp_path):
    """Independent check with openssl: the revoked certificate stays revoked on the next CRL."""
    d, serials, crl_args, _ = org_authority
    state = copy_state(d, tmp_path)
    smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"))
    chain = tmp_path / "chain.pem"
    chain.write_bytes((d / "root.pem").read_bytes() + (d / "issuing.pem").read_bytes())
    checked = openssl("verify", "-crl_check", "-CAfile", str(chain), "-CRLfile", str(tmp_path / "crl.pem"), str(d / "o0.pem"))
    assert checked.returncode != 0 and b"certificate revoked" in checked.stdout + checked.stderr


def test_reconciliation_at_the_store_level(tmp_path):
    from smki.errors import RefusedError
    from smki.store.certificates import CertificateRecord, insert_certificate
    from smki.store.reconcile import StateChange, reconcile_issuer
    from smki.store.revocations import next_crl_number, record_revocation
    from datetime import datetime, timezone

    connection = open_database(tmp_path / "s.db", create=True)
    trail = AuditTrail(connection)
    issuer, now = "AB" * 8, datetime(2026, 3, 1, tzinfo=timezone.utc)
    with transaction(connection):
        for n in range(3):
            serial = f"{n + 1:032X}"
            insert_certificate(connection, CertificateRecord(serial, issuer, "organisation", "CD" * 8, "I", "2026", "2027", b"x"))
            trail.append(AuditEntry("ca", "certificate.issue.organisation", details=StateChange().issue(issuer, serial).details()))
        record_revocation(connection, issuer, f"{2:032X}", now, "keyCompromise")
        trail.append(AuditEntry("ca", "certificate.revoke", details=StateChange().revoke(issuer, f"{2:032X}", now.isoformat(), "keyCompromise").details()))
        trail.append(AuditEntry("ca", "crl.issue", details=StateChange().crl(issuer, next_crl_number(connection, issuer, now)).details()))
        # A refused operation's entry and another issuer's records change nothing here.
        trail.append(AuditEntry("ca", "crl.issue", "refused", details=StateChange().crl(issuer, 99).details()))
        trail.append(AuditEntry("ca", "crl.issue", details=StateChange().crl("EF" * 8, 5).details()))
    reconcile_issuer(connection, issuer)
    connection.execute("UPDATE revocations SET revoked_at = '2026-03-02T00:00:00+00:00'")
    with pytest.raises(RefusedError, match="differ in time or reason"):
        reconcile_issuer(connection, issuer)


def test_an_arl_ceremony_on_edited_state_is_refused(tmp_path, hsm_token):
    from test_ceremony import SOURCES, workspace
    from test_ceremony import smki as ceremony_smki

    work = workspace(tmp_path, "RC")
    ceremony_smki("ceremony", "run", str(work / "ceremonies" / "root-oca.yaml"), *SOURCES)
    arl = work / "ceremonies" / "arl-oca.yaml"
    first = json.loads(ceremony_smki("ceremony", "run", str(arl), *SOURCES, "--json").stdout)
    assert first["facts"]["arl"]["crl_number"] == 1
    tamper(work / "state" / "root-oca", ("DELETE FROM crl_numbers",))
    again = work / "ceremonies" / "arl-oca-again.yaml"
    again.write_text(arl.read_text().replace("root-oca-arl-1", "root-oca-arl-again"))
    result = ceremony_smki("ceremony", "run", str(again), *SOURCES, check=False)
    one_line(result, 1)
    assert "last cRLNumber is 0 in the state but 1" in result.stderr and not (work / "out" / "root-oca-arl-again.pem").exists()


@pytest.mark.parametrize("command", [["ca", "list"], ["ca", "show", "01"]])
def test_ca_records_are_read_without_writing(tmp_path, command):
    (tmp_path / "state").mkdir()
    empty = tmp_path / "state" / "smki.db"
    empty.write_bytes(b"")
    result = smki(*command, "--state", str(tmp_path / "state"), check=False)
    one_line(result, 3)
    assert empty.read_bytes() == b"" and [p.name for p in (tmp_path / "state").iterdir()] == ["smki.db"]


# -- reconciliation as a property: any single edit of the state tables is caught, none is a false alarm ---
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

EDITS = {
    "delete a certificate": "DELETE FROM certificates WHERE rowid = (SELECT MIN(rowid) FROM certificates WHERE status = 'I')",
    "add a certificate": "INSERT INTO certificates SELECT 'FF' || substr(serial_hex, 3), issuer_key_id, certificate_type, subject_key_id,"
                         " entity_id, role, key_usage, 'I', not_before, not_after, policy_name, policy_version, policy_sha256,"
                         " request_sha256, issued_at, der FROM certificates LIMIT 1",
    "delete a revocation": "DELETE FROM revocations WHERE rowid = (SELECT MIN(rowid) FROM revocations)",
    "change a reason": "UPDATE revocations SET reason = reason || 'X' WHERE rowid = (SELECT MIN(rowid) FROM revocations)",
    "un-revoke a status": "UPDATE certificates SET status = 'I' WHERE rowid = (SELECT MIN(rowid) FROM certificates WHERE status = 'R')",
    "revoke a status": "UPDATE certificates SET status = 'R' WHERE rowid = (SELECT MIN(rowid) FROM certificates WHERE status = 'I')",
    "lower the cRLNumber": "UPDATE crl_numbers SET last_number = last_number - 1",
    "raise the cRLNumber": "UPDATE crl_numbers SET last_number = last_number + 1",
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(issued=st.integers(2, 12), revoked=st.integers(1, 6), crls=st.integers(1, 4), edit=st.sampled_from([None, *EDITS]))
def test_reconciliation_catches_any_single_edit(tmp_path_factory, issued, revoked, crls, edit):
    from datetime import datetime, timezone

    from smki.errors import RefusedError
    from smki.store.certificates import CertificateRecord, insert_certificate
    from smki.store.reconcile import StateChange, reconcile_issuer
    from smki.store.revocations import next_crl_number, record_revocation

    revoked = min(revoked, issued - 1)  # at least one certificate stays in use
    connection = open_database(tmp_path_factory.mktemp("p") / "s.db", create=True)
    trail, issuer = AuditTrail(connection), "AB" * 8
    with transaction(connection):
        serials = [f"{n + 1:032X}" for n in range(issued)]
        for serial in serials:
            insert_certificate(connection, CertificateRecord(serial, issuer, "organisation", "CD" * 8, "I", "2026", "2027", b"x"))
        trail.append(AuditEntry("ca", "certificate.issue.device.batch", details=StateChange().issue(issuer, *serials).details()))
        for n, serial in enumerate(serials[:revoked]):
            at = datetime(2026, 3, 1 + n, tzinfo=timezone.utc)
            record_revocation(connection, issuer, serial, at, "keyCompromise")
            trail.append(AuditEntry("ca", "certificate.revoke", details=StateChange().revoke(issuer, serial, at.isoformat(), "keyCompromise").details()))
        for _ in range(crls):
            number = next_crl_number(connection, issuer, datetime.now(timezone.utc))
            trail.append(AuditEntry("ca", "crl.issue", details=StateChange().crl(issuer, number).details()))
    if edit is None:
        reconcile_issuer(connection, issuer)
    else:
        connection.execute("PRAGMA foreign_keys = OFF")
        assert connection.execute(EDITS[edit]).rowcount == 1
        with pytest.raises(RefusedError, match="disagrees with its audit trail"):
            reconcile_issuer(connection, issuer)
    connection.close()
