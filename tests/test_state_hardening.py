"""Second review of issue 12's state fixes: the adopted policy reconciled with the audit trail (finding A),
stores read from read-only media without writing beside them (finding B), and a repeated multi-file lodge
completing what an earlier run began (finding C)."""

import hashlib
import json
import sqlite3
from pathlib import Path

import csr_factory
from conftest import smki
from test_audit_hardening import copy_state, one_line, org_authority, tamper  # noqa: F401 (org_authority: a fixture)

POLICIES = Path(__file__).resolve().parents[1] / "policies"


# -- finding A: the adopted_policies table is reconciled with the policy.adopt entries ----------------------
def evil_policy(tmp_path: Path) -> Path:
    """The organisation policy edited so that a Network Operator may request supplier certificates."""
    text = (POLICIES / "organisation.yaml").read_text()
    edited = text.replace("    networkOperator: [networkOperator]\n", "    networkOperator: [networkOperator, supplier]\n")
    assert edited != text
    path = tmp_path / "evil.yaml"
    path.write_text(edited)
    return path


def forge_adoption(state: Path, policy: Path) -> None:
    tamper(state, ("UPDATE adopted_policies SET sha256 = ?", (hashlib.sha256(policy.read_bytes()).hexdigest(),)))


def issue_org_args(org_authority, state: Path, policy: Path, out: Path) -> list[str]:
    d, _, crl_args, _ = org_authority
    issuing_key = crl_args[2:10]  # --token T --key-label L --key-id I --pin-source S
    (out.parent / "supplier.csr").write_bytes(csr_factory.organisation_csr(eui64="90B3D51F300200C1"))
    return ["ca", "issue-org", *issuing_key, "--state", str(state), "--policy", str(policy), "--environment", "test",
            "--issuer-cert", str(d / "issuing.pem"), "--requester", "networkOperator", "--not-before", "2026-02-01",
            "--out", str(out), str(out.parent / "supplier.csr")]


def test_an_adoption_row_edited_to_an_evil_policy_issues_nothing(org_authority, tmp_path):
    """Finding A as reported: the row names evil.yaml's sha256, no policy.adopt entry does."""
    state = copy_state(org_authority[0], tmp_path)
    evil = evil_policy(tmp_path)
    forge_adoption(state, evil)
    out = tmp_path / "supplier.pem"
    result = smki(*issue_org_args(org_authority, state, evil, out), check=False)
    one_line(result, 1)
    assert "adopted organisation policy" in result.stderr and "audit trail" in result.stderr, result.stderr
    assert not out.exists()
    with sqlite3.connect(state / "smki.db") as raw:
        last = raw.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
        organisation_certificates = raw.execute("SELECT COUNT(*) FROM certificates WHERE certificate_type = 'organisation'").fetchone()[0]
    assert last == ("certificate.issue.organisation", "refused") and organisation_certificates == 2


def test_the_genuine_policy_is_refused_too_while_the_row_is_edited(org_authority, tmp_path):
    state = copy_state(org_authority[0], tmp_path)
    forge_adoption(state, evil_policy(tmp_path))
    result = smki(*issue_org_args(org_authority, state, POLICIES / "organisation.yaml", tmp_path / "o.pem"), check=False)
    one_line(result, 1)
    assert "in the state but" in result.stderr


def test_the_evil_policy_adopted_openly_is_audited(org_authority, tmp_path):
    """The control: adopting evil.yaml through `smki policy adopt` is allowed, and the trail then says so."""
    state = copy_state(org_authority[0], tmp_path)
    evil = evil_policy(tmp_path)
    smki("policy", "adopt", str(evil), "--state", str(state))
    smki(*issue_org_args(org_authority, state, evil, tmp_path / "o.pem"))
    assert json.loads(smki("ca", "reconcile", "--state", str(state), "--json").stdout)["agree"] is True


def test_reconcile_reports_an_edited_or_deleted_adoption(org_authority, tmp_path):
    state = copy_state(org_authority[0], tmp_path)
    forge_adoption(state, evil_policy(tmp_path))
    edited = smki("ca", "reconcile", "--state", str(state), check=False)
    assert edited.returncode == 1 and "policy organisation: DIFFERS" in edited.stdout and "in the audit trail" in edited.stdout
    report = json.loads(smki("ca", "reconcile", "--state", str(state), "--json", check=False).stdout)
    assert report["agree"] is False and list(report["policies"]) == ["organisation"]
    tamper(state, ("DELETE FROM adopted_policies",))
    deleted = smki("ca", "reconcile", "--state", str(state), check=False)
    assert deleted.returncode == 1 and "is missing from the state" in deleted.stdout
