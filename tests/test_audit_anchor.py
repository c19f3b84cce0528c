"""The audit trail's head anchored in the HSM: a trail cut back with its state is refused.

Issue 12 items 5/6, second review: an attacker who can write the database deletes the trail's tail
with its checkpoints and rolls the state tables back to match; the chain, the checkpoints and
reconciliation all agree, and `ca crl` would sign a second CRL number 1 without the revocation.
The last checkpointed head lives in the audit key's token, beyond the database's reach.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from cryptography import x509

import csr_factory
from conftest import smki
from test_audit_hardening import copy_state, one_line

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
PIN = ["--pin-source", "env:SMKI_TEST_PIN"]


def _anchor(hsm_token, key_ref):
    from smki.hsm.anchor import TokenHeadAnchor
    from smki.hsm.session import open_session

    open_session(hsm_token.module, hsm_token.label, hsm_token.pin)  # the anchor uses the process's login
    return TokenHeadAnchor(hsm_token.module, hsm_token.label, key_ref.key_label, key_ref.key_id)


# -- the anchor itself, on the real SoftHSM token ------------------------------------------------------
def test_the_anchor_is_stored_and_loaded_as_one_private_token_data_object(hsm_token, new_hsm_key):
    from pkcs11 import Attribute, ObjectClass

    from smki.hsm.session import open_session

    key_ref, _ = new_hsm_key("anchor-lib-audit")
    anchor = _anchor(hsm_token, key_ref)
    assert anchor.load() is None  # nothing anchored yet
    anchor.store(3, "ab" * 32)
    assert anchor.load() == (3, "ab" * 32)
    anchor.store(1004, "cd" * 32)
    assert anchor.load() == (1004, "cd" * 32)
    session = open_session(hsm_token.module, hsm_token.label, hsm_token.pin)
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: anchor.label}))
    assert len(found) == 1 and found[0][Attribute.TOKEN] and found[0][Attribute.PRIVATE]  # the old value destroyed
    other_key, _ = new_hsm_key("anchor-lib-audit-2")  # another audit key: another trail, another anchor
    assert _anchor(hsm_token, other_key).load() is None


def test_an_anchor_that_holds_no_head_is_refused_not_ignored(hsm_token, new_hsm_key):
    from pkcs11 import Attribute, ObjectClass

    from smki.errors import HsmError
    from smki.hsm.session import open_session

    key_ref, _ = new_hsm_key("anchor-junk-audit")
    anchor = _anchor(hsm_token, key_ref)
    anchor.store(2, "ef" * 32)
    session = open_session(hsm_token.module, hsm_token.label, hsm_token.pin, rw=True)
    [stored] = session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: anchor.label})
    junk = {attribute: stored[attribute] for attribute in (Attribute.CLASS, Attribute.TOKEN, Attribute.PRIVATE, Attribute.LABEL, Attribute.APPLICATION)}
    stored.destroy()
    session.create_object({**junk, Attribute.VALUE: b'{"seq": 0}'})
    with pytest.raises(HsmError, match="holds no sequence number"):
        anchor.load()


def test_a_token_not_logged_in_is_refused_rather_than_read_as_no_anchor():
    from smki.errors import HsmError
    from smki.hsm.anchor import TokenHeadAnchor
    from smki.hsm.config import default_module_path

    with pytest.raises(HsmError, match="logged in"):
        TokenHeadAnchor(default_module_path(), "anchor-no-such-token", "audit", b"\x01").load()


def test_the_trail_checks_the_anchored_head(tmp_path, hsm_token, new_hsm_key):
    """At the library level: the anchor moves only after a commit, and a cut trail is refused by sequence number."""
    from smki.audit.trail import AuditEntry, AuditTrail
    from smki.errors import RefusedError
    from smki.store import open_database
    from smki.store.database import transaction

    key_ref, signer = new_hsm_key("anchor-trail-audit")
    connection = open_database(tmp_path / "smki.db", create=True)
    audit = AuditTrail(connection, signer, anchor=_anchor(hsm_token, key_ref))
    audit.check_anchor()  # no anchor yet
    with transaction(connection):
        audit.append(*(AuditEntry("t", "test.op", details={"n": n}) for n in range(5)))
        audit.checkpoint("test")
    audit.anchor_checkpointed()
    assert audit.anchor.load() == audit.head() and audit.head()[0] == 5
    audit.check_anchor()
    with transaction(connection):
        connection.execute("DELETE FROM audit_checkpoints")
        connection.execute("DELETE FROM audit_entries WHERE seq > 3")
    with pytest.raises(RefusedError, match="no longer holds entry 5"):
        audit.check_anchor()
    with transaction(connection):  # the tail written again: the same sequence numbers, other hashes
        audit.append(*(AuditEntry("t", "test.forged", details={"n": n}) for n in range(2)))
        audit.checkpoint("forged")
    audit.anchor_checkpointed()  # a trail that failed its check never moves the anchor
    with pytest.raises(RefusedError, match="holds a different entry 5"):
        audit.check_anchor()


# -- the reported rollback, end to end through the CLI ---------------------------------------------------
# Kept by hand, not smki.testing: every CLI operation here, key generation first, runs with --audit-key-uri, so that the
# state's head is anchored from its first entry; the kit's authorities keep no audit key.
@pytest.fixture(scope="module")
def anchored_authority(tmp_path_factory, hsm_token):
    """An Issuing OCA whose every operation is checkpointed by its audit key (so its head is anchored):
    two certificates issued, then (after `cut`) one revoked keyCompromise, CRL 1, a third issued, CRL 2."""
    d = tmp_path_factory.mktemp("anchor")
    state = ["--state", str(d / "state")]
    keys = {}
    for name, key_id in (("anc-audit", "ac01"), ("anc-root", "ac02"), ("anc-issuing", "ac03")):
        keys[name] = ["--token", hsm_token.label, "--key-label", name, "--key-id", key_id, *PIN]
    audit_uri = f"pkcs11:token={hsm_token.label};object=anc-audit;id=%ac%01"
    audited = [*state, "--audit-key-uri", audit_uri, "--audit-pin-source", "env:SMKI_TEST_PIN"]
    smki("hsm", "keygen", *keys["anc-audit"], *audited)  # the audit key signs the checkpoint of its own generation
    policy = ["--policy", str(POLICIES / "organisation.yaml")]
    smki("policy", "adopt", str(POLICIES / "organisation.yaml"), *audited)
    for name in ("anc-root", "anc-issuing"):
        smki("hsm", "keygen", *keys[name], *audited)
    smki("cert", "root", *keys["anc-root"], *audited, *policy, "--environment", "test", "--not-before", "2026-01-01", "--out", str(d / "root.pem"))
    smki("hsm", "pubkey", *keys["anc-issuing"][:6], "--out", str(d / "issuing.pub"))
    smki("cert", "issuing-ca", *keys["anc-root"], *audited, *policy, "--environment", "test", "--not-before", "2026-01-01",
         "--issuer-cert", str(d / "root.pem"), "--public-key", str(d / "issuing.pub"), "--out", str(d / "issuing.pem"))

    def issue(i: int) -> str:
        (d / f"r{i}.csr").write_bytes(csr_factory.organisation_csr(eui64=f"90B3D51F300300B{i}"))
        smki("ca", "issue-org", *keys["anc-issuing"], *audited, *policy, "--environment", "test", "--issuer-cert", str(d / "issuing.pem"),
             "--requester", "supplier", "--not-before", "2026-02-01", "--out", str(d / f"o{i}.pem"), str(d / f"r{i}.csr"))
        return f"{x509.load_pem_x509_certificate((d / f'o{i}.pem').read_bytes()).serial_number:032X}"

    serials = [issue(0), issue(1)]
    cut = _head(d / "state")[0]
    smki("ca", "revoke", *audited, *policy, serials[0], "--reason", "keyCompromise")
    crl_args = ["ca", "crl", *keys["anc-issuing"], *policy, "--issuer-cert", str(d / "issuing.pem"),
                "--audit-key-uri", audit_uri, "--audit-pin-source", "env:SMKI_TEST_PIN"]
    assert json.loads(smki(*crl_args, *state, "--out", str(d / "crl1.pem"), "--json").stdout)["crl_number"] == 1
    serials.append(issue(2))
    assert json.loads(smki(*crl_args, *state, "--out", str(d / "crl2.pem"), "--json").stdout)["crl_number"] == 2
    smki("hsm", "pubkey", "--key-uri", audit_uri, "--out", str(d / "audit.pub"))
    return d, serials, cut, crl_args, policy, audit_uri


def _head(state: Path) -> tuple[int, str]:
    with sqlite3.connect(state / "smki.db") as raw:
        return raw.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()


@pytest.fixture
def authority(anchored_authority, hsm_token, tmp_path):
    """The authority's state, copied; the anchor put back afterwards (one audit key anchors one trail, and
    a test that signs from its copy moves it)."""
    d, serials, cut, crl_args, policy, audit_uri = anchored_authority
    from smki.hsm.config import parse_pkcs11_uri

    anchor = _anchor(hsm_token, parse_pkcs11_uri(audit_uri))
    anchored = anchor.load()
    assert anchored == _head(d / "state")  # every run anchored its final checkpoint
    yield copy_state(d, tmp_path), anchor
    anchor.store(*anchored)


def _roll_back(state: Path, cut: int, issued_after_cut: list[str]) -> None:
    """The reviewer's reproduction: trail and checkpoints cut after `cut`, state rolled back to match."""
    with sqlite3.connect(state / "smki.db") as raw:
        raw.execute("PRAGMA foreign_keys = OFF")
        raw.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (cut,))
        raw.execute("DELETE FROM audit_entries WHERE seq > ?", (cut,))
        raw.execute("DELETE FROM revocations")
        raw.execute("UPDATE certificates SET status = 'I' WHERE status = 'R'")
        raw.execute("DELETE FROM crl_numbers")
        raw.executemany("DELETE FROM certificates WHERE serial_hex = ?", [(serial,) for serial in issued_after_cut])


# These two leave the anchor where it is (nothing is signed from the copy), so they copy the state directly.
def test_the_reported_rollback_is_refused_before_signing(anchored_authority, tmp_path, run_smki):
    d, serials, cut, crl_args, policy, _ = anchored_authority
    state = copy_state(d, tmp_path)
    anchored_seq = _head(state)[0]  # every run anchors its final checkpoint (checked by the `authority` fixture)
    _roll_back(state, cut, serials[2:])
    # Everything the database alone can say agrees: why the anchor exists.
    verified = run_smki("audit", "verify", "--db", str(state / "smki.db"), "--public-key", str(d / "audit.pub"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert smki("ca", "reconcile", "--state", str(state), check=False).returncode == 0
    # The auditor, given the anchor, sees the cut.
    anchored = run_smki("audit", "verify", "--db", str(state / "smki.db"), "--public-key", str(d / "audit.pub"),
                        "--anchor-key-uri", crl_args[-3], *PIN)
    assert anchored.returncode == 1 and f"held entry {anchored_seq} when its head was recorded" in anchored.stdout, anchored.stdout + anchored.stderr
    before = sqlite3.connect(state / "smki.db").execute("SELECT COUNT(*) FROM audit_entries").fetchone()
    for _ in range(2):  # the refusal moves nothing: a second attempt is refused the same way
        result = smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"), check=False)
        one_line(result, 1)
        assert f"no longer holds entry {anchored_seq}" in result.stderr and not (tmp_path / "crl.pem").exists()
    revoked = smki("ca", "revoke", "--state", str(state), *policy, *crl_args[-4:], serials[1], "--reason", "keyCompromise", check=False)
    one_line(revoked, 1)
    assert f"entry {anchored_seq}" in revoked.stderr
    with sqlite3.connect(state / "smki.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM crl_numbers").fetchone()[0] == 0  # no cRLNumber consumed
        assert raw.execute("SELECT COUNT(*) FROM revocations").fetchone()[0] == 0
        assert raw.execute("SELECT COUNT(*) FROM audit_entries").fetchone() == before  # and nothing written


def test_a_trail_cut_and_rewritten_to_the_anchored_length_is_refused(anchored_authority, tmp_path):
    """Appending after the cut until the anchored sequence number exists again does not help: its hash differs."""
    d, serials, cut, crl_args, policy, audit_uri = anchored_authority
    state = copy_state(d, tmp_path)
    anchored_seq = _head(state)[0]
    _roll_back(state, cut, serials[2:])
    from smki.audit.trail import AuditEntry, AuditTrail
    from smki.store import open_database
    from smki.store.database import transaction

    connection = open_database(state / "smki.db")
    with transaction(connection):
        AuditTrail(connection).append(*(AuditEntry("mallory", "policy.adopt") for _ in range(anchored_seq - cut)))
    connection.close()
    result = smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"), check=False)
    one_line(result, 1)
    assert f"holds a different entry {anchored_seq}" in result.stderr and not (tmp_path / "crl.pem").exists()


def test_a_dry_run_checks_the_anchor_and_signs_no_checkpoint(anchored_authority, hsm_token, tmp_path):
    """A dry run with the audit key: the anchored head is checked as a real run checks it (a cut trail is
    refused), and nothing is appended, checkpointed or anchored."""
    from smki.hsm.config import parse_pkcs11_uri

    d, serials, cut, crl_args, policy, audit_uri = anchored_authority
    state = copy_state(d, tmp_path)
    anchor = _anchor(hsm_token, parse_pkcs11_uri(audit_uri))
    anchored = anchor.load()
    (tmp_path / "r.csr").write_bytes(csr_factory.organisation_csr(eui64="90B3D51F300300C0"))
    args = ["ca", "issue-org", "--token", hsm_token.label, "--key-label", "anc-issuing", "--key-id", "ac03", *PIN, "--state", str(state),
            "--audit-key-uri", audit_uri, "--audit-pin-source", "env:SMKI_TEST_PIN", *policy, "--environment", "test",
            "--issuer-cert", str(d / "issuing.pem"), "--requester", "supplier", "--not-before", "2026-02-01",
            "--out", str(tmp_path / "o.pem"), "--dry-run", str(tmp_path / "r.csr")]
    head = _head(state)
    assert json.loads(smki(*args, "--json").stdout)["dry_run"] is True
    with sqlite3.connect(state / "smki.db") as raw:
        checkpoints = raw.execute("SELECT MAX(seq) FROM audit_checkpoints").fetchone()[0]
    assert _head(state) == head and checkpoints == head[0] and anchor.load() == anchored and not (tmp_path / "o.pem").exists()
    _roll_back(state, cut, serials[2:])
    refused = smki(*args, check=False)
    one_line(refused, 1)
    assert f"no longer holds entry {anchored[0]}" in refused.stderr and anchor.load() == anchored


def test_an_untampered_state_signs_and_moves_the_anchor(anchored_authority, authority, tmp_path):
    d, serials, cut, crl_args, policy, _ = anchored_authority
    state, anchor = authority
    third = json.loads(smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl3.pem"), "--json").stdout)
    assert third["crl_number"] == 3 and third["entries"] == 1
    assert anchor.load() == _head(state)
    verified = smki("audit", "verify", "--db", str(state / "smki.db"), "--public-key", str(d / "audit.pub"),
                    "--anchor-key-uri", crl_args[-3], *PIN, "--json")
    assert json.loads(verified.stdout)["expected_heads"] == ["%d:%s" % _head(state)]


@pytest.mark.parametrize("crash", ["anchor behind the trail", "anchor never written"])
def test_a_crash_between_commit_and_anchor_write_still_signs(anchored_authority, authority, tmp_path, crash):
    """The anchor is written after the checkpoint commits: a crash in between leaves it behind (or absent)."""
    d, serials, cut, crl_args, policy, _ = anchored_authority
    state, anchor = authority
    if crash == "anchor behind the trail":
        with sqlite3.connect(state / "smki.db") as raw:
            anchor.store(*raw.execute("SELECT seq, entry_hash FROM audit_entries WHERE seq = ?", (cut,)).fetchone())
    else:
        from pkcs11 import Attribute, ObjectClass

        from smki.hsm.session import open_session
        from smki.hsm.store_lock import token_store_lock

        session = open_session(anchor.module_path, anchor.token_label, None, rw=True)
        with token_store_lock(anchor.module_path):
            for stored in session.get_objects({Attribute.CLASS: ObjectClass.DATA, Attribute.LABEL: anchor.label}):
                stored.destroy()
        assert anchor.load() is None
    third = json.loads(smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl3.pem"), "--json").stdout)
    assert third["crl_number"] == 3
    assert anchor.load() == _head(state)  # the anchor caught up


# -- a root's trail: ceremonies anchor the head in the root's token, and refuse a trail cut behind it ---------
def test_an_arl_ceremony_on_a_root_trail_cut_back_is_refused(tmp_path):
    from test_ceremony import PASSPHRASES, SOURCES, workspace

    def ceremony(name: str, check: bool = True):
        return smki("ceremony", "run", str(work / "ceremonies" / name), *SOURCES, check=check, env=PASSPHRASES)

    work = workspace(tmp_path, "ANCHOR")
    ceremony("root-oca.yaml")
    database = work / "state" / "root-oca" / "smki.db"
    cut = _head(database.parent)[0]
    ceremony("arl-oca.yaml")  # ARL number 1, anchored in the root's token
    anchored_seq = _head(database.parent)[0]
    with sqlite3.connect(database) as raw:  # the ARL's entry and checkpoint cut away, and its cRLNumber with them
        raw.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (cut,))
        raw.execute("DELETE FROM audit_entries WHERE seq > ?", (cut,))
        raw.execute("DELETE FROM crl_numbers")
    again = work / "ceremonies" / "arl-oca-again.yaml"
    again.write_text((work / "ceremonies" / "arl-oca.yaml").read_text().replace("root-oca-arl-1", "root-oca-arl-again"))
    refused = ceremony("arl-oca-again.yaml", check=False)
    one_line(refused, 1)
    assert f"no longer holds entry {anchored_seq}" in refused.stderr
    assert not (work / "out" / "root-oca-arl-again.pem").exists()
    with sqlite3.connect(database) as raw:
        assert raw.execute("SELECT COUNT(*) FROM crl_numbers").fetchone()[0] == 0


def test_the_auditor_is_told_when_a_key_anchors_no_head(anchored_authority, new_hsm_key, run_smki):
    d, *_ = anchored_authority
    never_used, _ = new_hsm_key("anchor-unused-audit")
    result = run_smki("audit", "verify", "--db", str(d / "state" / "smki.db"), "--anchor-key-uri", never_used.uri, *PIN)
    one_line(result, 1)
    assert "anchors no audit trail head" in result.stderr


def test_a_run_refused_on_a_copy_of_the_state_leaves_the_anchor(anchored_authority, authority, tmp_path):
    """A refused run changes no state, so it does not move the anchor: a copy tried and refused (as the demo
    does with an edited copy) does not lock the authority out of its own trail."""
    d, serials, cut, crl_args, policy, _ = anchored_authority
    state, anchor = authority
    with sqlite3.connect(state / "smki.db") as raw:
        raw.execute("DELETE FROM revocations")
    refused = smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"), check=False)
    one_line(refused, 1)
    assert "disagrees with its audit trail" in refused.stderr
    assert _head(state)[0] == _head(d / "state")[0] + 1  # the refusal is recorded (and signed) in the copy
    assert anchor.load() == _head(d / "state")
