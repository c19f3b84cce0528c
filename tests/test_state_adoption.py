"""`smki ca reconcile` reports whether an authority's state agrees with its audit trail, and
`smki ca adopt-state` lets an authority whose trail predates state records sign again: once,
signed by its audit key, and never over a trail that records state changes."""

import json
import sqlite3

import pytest

from conftest import smki
from test_audit_hardening import copy_state, one_line, org_authority, rechain, tamper  # noqa: F401 (org_authority: a fixture)

PIN = ["--audit-pin-source", "env:SMKI_TEST_PIN"]


@pytest.fixture
def audit_key_uri(new_hsm_key):
    """A new audit key per test: one audit key anchors one trail, and each test signs from its own copy."""
    return new_hsm_key()[0].uri


def legacy(state):
    """The trail as an smki before state records wrote it: no `state` in any entry's details, chain recomputed."""
    with sqlite3.connect(state / "smki.db") as raw:
        raw.row_factory = sqlite3.Row
        for seq, details in raw.execute("SELECT seq, details FROM audit_entries").fetchall():
            stripped = {key: value for key, value in json.loads(details).items() if key != "state"}
            raw.execute("UPDATE audit_entries SET details = ? WHERE seq = ?",
                        (json.dumps(stripped, sort_keys=True, separators=(",", ":"), ensure_ascii=False), seq))
        rechain(raw)


def test_reconcile_reports_agreement_and_each_difference(org_authority, tmp_path):
    d, _, _, _ = org_authority
    state = copy_state(d, tmp_path)
    agreed = smki("ca", "reconcile", "--state", str(state), "--json")
    report = json.loads(agreed.stdout)
    assert report["agree"] is True and len(report["issuers"]) == 2 and not any(report["issuers"].values())
    tamper(state, ("DELETE FROM revocations",))
    differs = smki("ca", "reconcile", "--state", str(state), check=False)
    assert differs.returncode == 1 and "revocation(s) the audit trail records are missing" in differs.stdout


def test_a_legacy_trail_is_adopted_once_signed_and_then_reconciled(org_authority, tmp_path, audit_key_uri):
    d, _, crl_args, _ = org_authority
    state = copy_state(d, tmp_path)
    legacy(state)
    refused = smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "refused.pem"), check=False)
    one_line(refused, 1)  # before adoption nothing is signed from the unrecorded state
    unsigned = smki("ca", "adopt-state", "--state", str(state), check=False)
    one_line(unsigned, 1)
    assert "audit key" in unsigned.stderr
    adopted = json.loads(smki("ca", "adopt-state", "--state", str(state), "--audit-key-uri", audit_key_uri, *PIN, "--json").stdout)
    issuing = [facts for facts in adopted.values() if facts["crl_number"] == 1]
    assert len(adopted) == 2 and issuing == [{"issued": 2, "revoked": 1, "crl_number": 1}]
    # Signed: the adoption ends with a checkpoint by the audit key.
    with sqlite3.connect(state / "smki.db") as raw:
        last_seq, last_checkpoint = raw.execute("SELECT (SELECT MAX(seq) FROM audit_entries), (SELECT MAX(seq) FROM audit_checkpoints)").fetchone()
    assert last_seq == last_checkpoint
    second = json.loads(smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl2.pem"), "--json").stdout)
    assert second["crl_number"] == 2 and second["entries"] == 1
    again = smki("ca", "adopt-state", "--state", str(state), "--audit-key-uri", audit_key_uri, *PIN, check=False)
    one_line(again, 5)
    # After adoption, an edit is caught as on any other trail.
    tamper(state, ("DELETE FROM revocations",))
    one_line(smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl3.pem"), check=False), 1)


def test_a_trail_that_records_state_is_never_adopted_over(org_authority, tmp_path, audit_key_uri):
    d, _, crl_args, _ = org_authority
    state = copy_state(d, tmp_path)
    tamper(state, ("DELETE FROM revocations",), ("UPDATE certificates SET status = 'I'",))
    refused = smki("ca", "adopt-state", "--state", str(state), "--audit-key-uri", audit_key_uri, *PIN, check=False)
    one_line(refused, 5)
    assert "already records state changes" in refused.stderr
    one_line(smki(*crl_args, "--state", str(state), "--out", str(tmp_path / "crl.pem"), check=False), 1)
