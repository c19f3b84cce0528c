"""`smki.issuing.IssuingAuthority` driven as a library: every public method, and the refusals the
CLI gives (same class, same message), each leaving a refused audit entry and nothing half-written."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

import csr_factory as f
from conftest import smki
from smki.errors import BadInputError, ConflictError, RefusedError
from smki.hsm.config import KeyRef
from smki.issuing import IssuingAuthority
from smki.operations.audited import open_state
from smki.policy import Environment, PolicyRefusal, load_policy
from smki.profiles import issuing_ca_certificate, root_certificate, sign_certificate
from smki.requests.outcomes import RequestRejected
from smki.profiles.lint.crl_rules import lint_crl

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
ORG_POLICY, DEVICE_POLICY = POLICIES / "organisation.yaml", POLICIES / "device.yaml"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Hierarchy:
    root: x509.Certificate
    root_key: KeyRef
    issuing: x509.Certificate
    issuing_key: KeyRef
    policy: Path


@dataclass(frozen=True)
class Pki:
    state: Path
    organisation: Hierarchy
    device: Hierarchy
    pin: str


def _hierarchy(policy_file: Path, new_hsm_key) -> Hierarchy:
    """A root and an Issuing CA certificate made from the policy with two fresh keys in the test token."""
    policy = load_policy(policy_file)
    (root_key, root_signer), (issuing_key, issuing_signer) = new_hsm_key(), new_hsm_key()
    root = sign_certificate(root_certificate(policy.root_certificate_params(Environment.TEST, START), root_signer.public_key), root_signer)
    issuing = sign_certificate(issuing_ca_certificate(policy.issuing_ca_certificate_params(Environment.TEST, START),
                                                      issuing_signer.public_key, root), root_signer)
    return Hierarchy(root, root_key, issuing, issuing_key, policy_file)


# Kept by hand, not smki.testing: IssuingAuthority's construction from parts is under test (each test swaps a certificate,
# key, policy or state for a wrong one), and one state adopts both policies.
@pytest.fixture(scope="module")
def pki(tmp_path_factory, hsm_token, new_hsm_key) -> Pki:
    state = tmp_path_factory.mktemp("issuing-authority") / "state"
    with IssuingAuthority(state, actor="tester") as authority:
        authority.adopt_policy(ORG_POLICY)
        authority.adopt_policy(DEVICE_POLICY)
    return Pki(state, _hierarchy(ORG_POLICY, new_hsm_key), _hierarchy(DEVICE_POLICY, new_hsm_key), hsm_token.pin)


def issuing(pki: Pki, hierarchy: Hierarchy, state: Path | None = None, **overrides) -> IssuingAuthority:
    parts = dict(certificate=hierarchy.issuing, key=hierarchy.issuing_key, pin=pki.pin, policy=hierarchy.policy, environment="test",
                 actor="tester")
    parts.update(overrides)
    return IssuingAuthority(state or pki.state, **parts)


def last_entry(state: Path) -> dict:
    connection = sqlite3.connect(state / "smki.db")
    operation, outcome, subject, details = connection.execute(
        "SELECT operation, outcome, subject, details FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
    connection.close()
    return {"operation": operation, "outcome": outcome, "subject": json.loads(subject), "details": json.loads(details)}


def certificate_count(state: Path) -> int:
    connection = sqlite3.connect(state / "smki.db")
    try:
        return connection.execute("SELECT COUNT(*) FROM certificates").fetchone()[0]
    finally:
        connection.close()


def assert_refused_cleanly(state: Path, before: int, operation: str, message: str, out: Path | None = None) -> None:
    """Nothing half-written: no new record, no file, and the refusal is in the audit trail with its message."""
    assert certificate_count(state) == before
    assert out is None or not out.exists()
    entry = last_entry(state)
    assert entry["operation"] == operation and entry["outcome"] == "refused" and message in entry["details"]["reason"]


def public_key() -> ec.EllipticCurvePublicKey:
    return ec.generate_private_key(ec.SECP256R1()).public_key()


# -- issuing ---------------------------------------------------------------------------------------

def test_issue_organisation_records_audits_and_writes(pki, tmp_path):
    csr = f.organisation_csr(eui64="90B3D51F30A10000")
    with issuing(pki, pki.organisation) as authority:
        issued = authority.issue_organisation(csr, requester="supplier", not_before="2026-02-01", out=tmp_path / "org.pem")
        assert authority.show(issued.serial_hex)[0].request_sha256 == issued.record.request_sha256
    assert x509.load_pem_x509_certificate((tmp_path / "org.pem").read_bytes()) == issued.certificate
    assert issued.certificate.issuer == pki.organisation.issuing.subject and issued.file == tmp_path / "org.pem"
    assert issued.summary()["serial"] == issued.serial_hex and issued.summary()["policy"]["version"] == load_policy(ORG_POLICY).version
    entry = last_entry(pki.state)
    assert entry["outcome"] == "success" and entry["subject"]["serial"] == issued.serial_hex and entry["subject"]["request"] == "request"


def test_issue_organisation_from_a_file_without_an_output(pki, tmp_path):
    (tmp_path / "req.csr").write_bytes(f.organisation_csr(eui64="90B3D51F30A20000", usage="key_agreement"))
    with issuing(pki, pki.organisation) as authority:
        issued = authority.issue_organisation(tmp_path / "req.csr", requester="supplier")
    assert issued.file is None and issued.pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert last_entry(pki.state)["subject"]["request"] == str(tmp_path / "req.csr")


def test_certify_organisation_and_device(pki, tmp_path):
    with issuing(pki, pki.organisation) as authority:
        org = authority.certify_organisation(public_key(), role="supplier", entity_id="90-B3-D5-1F-30-A3-00-00", usage="DS",
                                             common_name="LIBRARYTEST", out=tmp_path / "org.pem")
    with issuing(pki, pki.device) as authority:
        device = authority.certify_device(public_key(), device_id="00DB0000000A0001", device_type="ESME", usage="KA", requester="supplier")
    assert org.record.certificate_type == "organisation" and org.record.entity_id == "90B3D51F30A30000" and (tmp_path / "org.pem").exists()
    assert device.record.certificate_type == "device" and device.certificate.subject == x509.Name([])


def test_a_device_replacement_from_a_request(pki):
    key = ec.generate_private_key(ec.SECP256R1())
    with issuing(pki, pki.device) as authority:
        before = certificate_count(pki.state)
        with pytest.raises(PolicyRefusal, match="single_request_requires_existing"):
            authority.issue_device(f.device_csr(key, eui64="00DB0000000A0002"), requester="supplier", device_type="ESME")
        assert_refused_cleanly(pki.state, before, "certificate.issue.device", "single_request_requires_existing")
        first_key = ec.generate_private_key(ec.SECP256R1())
        authority.certify_device(first_key.public_key(), device_id="00DB0000000A0002", device_type="ESME", usage="KA", requester="supplier")
        replaced = authority.issue_device(f.device_csr(key, eui64="00DB0000000A0002"), requester="supplier", device_type="ESME")
        assert replaced.record.entity_id == "00DB0000000A0002"
        assert len(authority.list(entity_id="00DB0000000A0002")) == 2
        # A key already certified is a duplicate (CR:9999), as in a batch: refused, audited, nothing issued.
        before = certificate_count(pki.state)
        with pytest.raises(RequestRejected, match="CR:9999"):
            authority.issue_device(f.device_csr(first_key, eui64="00DB0000000A0002"), requester="supplier", device_type="ESME")
        assert_refused_cleanly(pki.state, before, "certificate.issue.device", "CR:9999")


def test_a_batch(pki, tmp_path):
    batch = tmp_path / "batch.zip"
    with zipfile.ZipFile(batch, "w") as archive:
        for number in range(3):
            archive.writestr(f"m{number}.csr", f.device_csr(eui64=f"00DB0000000B000{number}"))
        archive.writestr("bad.csr", b"not a request")
    seen = []
    with issuing(pki, pki.device) as authority:
        result = authority.issue_batch(batch, response=tmp_path / "response.zip", status=tmp_path / "status.csv", requester="supplier",
                                       device_type="ESME", not_before="2026-02-01", workers=1, progress=lambda n, total: seen.append((n, total)))
    assert result.issued == 3 and result.entries == 4 and sum(n for n, _ in seen) == 4 and {total for _, total in seen} == {4}
    assert result.summary()["totals"] == {"error": 1, "success": 3} and (tmp_path / "status.csv").exists()
    with zipfile.ZipFile(tmp_path / "response.zip") as archive:
        assert sorted(archive.namelist()) == ["m0.crt", "m1.crt", "m2.crt"]


def test_a_batch_refuses_an_existing_output(pki, tmp_path):
    batch = tmp_path / "batch.zip"
    with zipfile.ZipFile(batch, "w") as archive:
        archive.writestr("m.csr", f.device_csr(eui64="00DB0000000C0001"))
    (tmp_path / "status.csv").write_text("mine")
    before = certificate_count(pki.state)
    with issuing(pki, pki.device) as authority, pytest.raises(ConflictError, match="already exists; not overwriting it"):
        authority.issue_batch(batch, response=tmp_path / "response.zip", status=tmp_path / "status.csv", requester="supplier",
                              device_type="ESME", workers=1)
    assert_refused_cleanly(pki.state, before, "certificate.issue.device.batch", "already exists", tmp_path / "response.zip")
    with issuing(pki, pki.device) as authority, pytest.raises(BadInputError, match="name the same file"):
        authority.issue_batch(batch, response=batch, status=tmp_path / "other.csv", requester="supplier", device_type="ESME")


# -- refusals, as the CLI gives them -------------------------------------------------------------

def test_an_ineligible_requester(pki, tmp_path):
    before = certificate_count(pki.state)
    with issuing(pki, pki.organisation) as authority, pytest.raises(PolicyRefusal, match="policy 4.1 eligibility"):
        authority.issue_organisation(f.organisation_csr(), requester="networkOperator", out=tmp_path / "org.pem")
    assert_refused_cleanly(pki.state, before, "certificate.issue.organisation", "4.1", tmp_path / "org.pem")


def test_a_wrong_hw_type_is_refused_by_the_library_as_by_the_cli(pki, tmp_path):
    csr = f.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00",
                      [f.key_usage("key_agreement"), f.hardware_module_name_san(hw_type="1.2.3.4")])
    before = certificate_count(pki.state)
    with issuing(pki, pki.device) as authority, pytest.raises(PolicyRefusal) as refused:
        authority.issue_device(csr, requester="supplier", device_type="ESME", out=tmp_path / "d.pem")
    assert "hwType 1.2.3.4 is not the ESME hwType" in str(refused.value)
    assert_refused_cleanly(pki.state, before, "certificate.issue.device", "hwType 1.2.3.4", tmp_path / "d.pem")
    # The CLI says exactly what the library said.
    (tmp_path / "d.csr").write_bytes(csr)
    (tmp_path / "issuing.pem").write_bytes(pki.device.issuing.public_bytes(Encoding.PEM))
    key = pki.device.issuing_key
    result = smki("ca", "issue-device", "--token", key.token_label, "--key-label", key.key_label, "--key-id", key.key_id.hex(),
                  "--pin-source", "env:SMKI_TEST_PIN", "--state", str(pki.state), "--policy", str(DEVICE_POLICY), "--environment", "test",
                  "--issuer-cert", str(tmp_path / "issuing.pem"), "--requester", "supplier", "--device-type", "ESME",
                  "--out", str(tmp_path / "cli.pem"), str(tmp_path / "d.csr"), check=False)
    assert result.returncode == refused.value.exit_code and str(refused.value) in result.stderr


def test_over_the_device_cap(pki, tmp_path, new_hsm_key):
    # A policy of the same shape with a cap of 2, adopted in a state of its own.
    capped = tmp_path / "device-capped.yaml"
    capped.write_text(DEVICE_POLICY.read_text().replace("per_device_cap: 100", "per_device_cap: 2"))
    state = tmp_path / "capped-state"
    with issuing(pki, pki.device, state, policy=capped) as authority:
        authority.adopt_policy(capped)
        for _ in range(2):
            authority.certify_device(public_key(), device_id="00DB0000000D0001", device_type="ESME", usage="KA", requester="supplier")
        with pytest.raises(PolicyRefusal, match="cap"):
            authority.certify_device(public_key(), device_id="00DB0000000D0001", device_type="ESME", usage="KA", requester="supplier",
                                     out=tmp_path / "third.pem")
    assert_refused_cleanly(state, 2, "certificate.issue.device", "cap", tmp_path / "third.pem")


def test_the_wrong_key(pki, tmp_path):
    before = certificate_count(pki.state)
    with issuing(pki, pki.organisation, key=pki.organisation.root_key) as authority, \
            pytest.raises(BadInputError, match="does not match the issuer certificate's public key"):
        authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A40000", usage="DS", out=tmp_path / "o.pem")
    assert_refused_cleanly(pki.state, before, "certificate.issue.organisation", "does not match", tmp_path / "o.pem")


def test_an_unadopted_policy(pki, tmp_path):
    state = tmp_path / "fresh"
    open_state(state).close()  # as `smki hsm keygen --state` leaves it, before `smki policy adopt`
    with issuing(pki, pki.organisation, state) as authority, pytest.raises(ConflictError, match="no organisation policy adopted"):
        authority.issue_organisation(f.organisation_csr(), requester="supplier", out=tmp_path / "o.pem")
    assert_refused_cleanly(state, 0, "certificate.issue.organisation", "smki policy adopt", tmp_path / "o.pem")
    with issuing(pki, pki.organisation, state) as authority, pytest.raises(ConflictError, match="no organisation policy adopted"):
        authority.revoke("01", "keyCompromise")


def test_an_existing_output_file(pki, tmp_path):
    (tmp_path / "o.pem").write_text("mine")
    before = certificate_count(pki.state)
    with issuing(pki, pki.organisation) as authority, pytest.raises(ConflictError, match="already exists; not overwriting it"):
        authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A50000", usage="DS", out=tmp_path / "o.pem")
    assert (tmp_path / "o.pem").read_text() == "mine"
    assert_refused_cleanly(pki.state, before, "certificate.issue.organisation", "already exists")


def test_bad_plain_values_are_refused_as_the_cli_refuses_them(pki):
    with issuing(pki, pki.organisation, environment="staging") as authority, pytest.raises(BadInputError, match="unknown environment 'staging'"):
        authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A60000", usage="DS")
    assert last_entry(pki.state)["outcome"] == "refused"
    with issuing(pki, pki.organisation) as authority, pytest.raises(BadInputError, match="unknown key usage"):
        authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A60000", usage="XX")
    with issuing(pki, pki.organisation) as authority, pytest.raises(BadInputError, match="not hexadecimal"):
        authority.revoke("XYZ", "keyCompromise")


def test_signing_without_the_parts_names_what_is_missing(pki):
    with IssuingAuthority(pki.state, policy=ORG_POLICY) as authority, pytest.raises(BadInputError, match="certificate="):
        authority.issue_crl()
    with IssuingAuthority(pki.state, certificate=pki.organisation.issuing) as authority, pytest.raises(BadInputError, match="policy="):
        authority.issue_crl()


# -- revocation and the CRL ----------------------------------------------------------------------

def test_revoke_reject_and_the_crl(pki, tmp_path):
    with issuing(pki, pki.organisation) as authority:
        first = authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A70000", usage="DS")
        second = authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A70000", usage="KA")
        before = authority.issue_crl()
        revocation = authority.revoke(int(first.serial_hex, 16), "keyCompromise")
        assert (revocation.serial_hex, revocation.method, revocation.reason) == (first.serial_hex, "crl", "keyCompromise")
        with pytest.raises(ConflictError, match="already revoked"):
            authority.revoke(first.serial_hex, "keyCompromise")
        with pytest.raises(PolicyRefusal, match="4.9 reasons"):
            authority.revoke(second.serial_hex, "certificateHold")
        assert last_entry(pki.state)["outcome"] == "refused"
        rejected = authority.reject(second.serial_hex)
        assert rejected.reason == "unspecified" and authority.show(second.serial_hex)[0].status == "R"
        crl = authority.issue_crl(out=tmp_path / "crl.pem")
    assert crl.number == before.number + 1 and crl.list_type == "crl" and crl.entries >= 2
    assert {entry.serial_number for entry in crl.crl} >= {int(first.serial_hex, 16), int(second.serial_hex, 16)}
    assert x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes()).public_bytes(Encoding.DER) == crl.der
    assert (tmp_path / "crl.pem").read_bytes() == crl.pem == crl.crl.public_bytes(Encoding.PEM)
    assert lint_crl(crl.der, pki.organisation.issuing.subject.public_bytes())[1] == []
    assert crl.summary()["crl_number"] == crl.number and crl.summary()["file"] == str(tmp_path / "crl.pem")
    entry = last_entry(pki.state)
    assert entry["operation"] == "crl.issue" and entry["outcome"] == "success"


def test_revoking_an_unknown_serial(pki):
    with issuing(pki, pki.organisation) as authority, pytest.raises(BadInputError, match="no certificate with serial FFFF in this authority's records"):
        authority.revoke("ffff", "keyCompromise")
    entry = last_entry(pki.state)
    assert entry["operation"] == "certificate.revoke" and entry["outcome"] == "refused" and entry["subject"]["serial"] == "FFFF"


def test_a_device_policy_does_not_reject(pki):
    with issuing(pki, pki.device) as authority:
        device = authority.certify_device(public_key(), device_id="00DB0000000E0001", device_type="ESME", usage="KA", requester="supplier")
        with pytest.raises(PolicyRefusal, match="does not revoke rejected certificates"):
            authority.reject(device.serial_hex)
        assert authority.show(device.serial_hex)[0].status != "R"


def test_a_root_issues_its_arl(pki, tmp_path):
    with issuing(pki, pki.organisation, certificate=pki.organisation.root, key=pki.organisation.root_key) as authority:
        arl = authority.issue_crl(out=tmp_path / "arl.pem")
    assert arl.list_type == "arl" and arl.entries == 0 and arl.crl.is_signature_valid(pki.organisation.root.public_key())
    assert last_entry(pki.state)["operation"] == "arl.issue"


def test_the_crl_with_the_wrong_key_is_refused(pki, tmp_path):
    with issuing(pki, pki.organisation, key=pki.organisation.root_key) as authority, \
            pytest.raises(BadInputError, match="signing key does not match the issuer certificate"):
        authority.issue_crl(out=tmp_path / "crl.pem")
    assert not (tmp_path / "crl.pem").exists() and last_entry(pki.state)["outcome"] == "refused"


# -- records, reconciliation, adoption -----------------------------------------------------------

def test_show_list_and_reconcile_read_only(pki, tmp_path):
    with issuing(pki, pki.organisation) as authority:
        issued = authority.certify_organisation(public_key(), role="supplier", entity_id="90B3D51F30A80000", usage="DS")
    with IssuingAuthority(pki.state) as reader:
        assert [r.serial_hex for r in reader.show(int(issued.serial_hex, 16))] == [issued.serial_hex]
        assert [r.serial_hex for r in reader.list(entity_id="90B3D51F30A80000", certificate_type="organisation")] == [issued.serial_hex]
        reconciliation = reader.reconcile()
        assert reconciliation.agree and reconciliation.summary()["agree"] is True and reconciliation.issuers
        with pytest.raises(BadInputError, match="no certificate with serial"):
            reader.show("ABCDEF")
    with pytest.raises(Exception):
        IssuingAuthority(tmp_path / "none").list()
    assert not (tmp_path / "none" / "smki.db").exists()


def test_adopt_policy_and_state(pki, tmp_path):
    state = tmp_path / "state"
    with IssuingAuthority(state) as authority:
        first = authority.adopt_policy(ORG_POLICY)
        again = authority.adopt_policy(load_policy(ORG_POLICY))
        assert first["replaces"] is None and again["replaces"]["version"] == first["version"]
        with pytest.raises(RefusedError, match="needs its audit key"):
            authority.adopt_state()
    assert last_entry(state)["operation"] == "state.adopt" and last_entry(state)["outcome"] == "refused"
