"""`smki ca`: certificates from CSRs under the policy, revocation, the CRL with a persisted number, records."""

import json
from pathlib import Path

import pytest
from cryptography import x509

import csr_factory as f
from conftest import openssl, smki
from smki.testing import Hierarchy, TestPKI, authority_name
from test_batch_issuance import START, issuing_options

POLICIES = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"


@pytest.fixture(scope="module")
def authority(tmp_path_factory, hsm_token):
    """A test PKI of this module's own (smki.testing), CA certificates from 2026-01-01: the tests issue with a fixed
    --not-before and count one device's certificates, so no other module shares its states."""
    with TestPKI.create(tmp_path_factory.mktemp("ca"), token=hsm_token, not_before=START) as pki:
        yield pki


def state(pki, hierarchy: Hierarchy) -> list[str]:
    return ["--state", str(pki.state(authority_name("issuing", hierarchy)))]


def org_issue(authority, csr_file, out, requester="supplier", check=True):
    return smki("ca", "issue-org", *issuing_options(authority, Hierarchy.ORGANISATION), "--environment", "test",
                "--requester", requester, "--not-before", "2026-02-01", "--out", str(out), str(csr_file), check=check)


def device_issue(authority, csr_file, out, device_type="ESME", check=True):
    return smki("ca", "issue-device", *issuing_options(authority), "--environment", "test", "--requester", "supplier",
                "--device-type", device_type, "--not-before", "2026-02-01", "--out", str(out), str(csr_file), check=check)


def test_organisation_certificate_from_a_csr(authority, tmp_path):
    (tmp_path / "req.csr").write_bytes(f.organisation_csr(usage="key_agreement", common_name=None, eui64="90B3D51F30020000", role="03"))
    org_issue(authority, tmp_path / "req.csr", tmp_path / "org.pem", requester="networkOperator")
    certificate = x509.load_pem_x509_certificate((tmp_path / "org.pem").read_bytes())
    assert certificate.extensions.get_extension_for_class(x509.KeyUsage).value.key_agreement
    lint = smki("lint", str(tmp_path / "org.pem"), "--environment", "test")
    assert "organisation: clean" in lint.stdout
    record = json.loads(smki("ca", "show", *state(authority, Hierarchy.ORGANISATION), f"{certificate.serial_number:x}", "--json").stdout)[0]
    import hashlib
    assert record["request_sha256"] == hashlib.sha256((tmp_path / "req.csr").read_bytes()).hexdigest() and record["role"] == "03"


@pytest.mark.parametrize("make, requester, code, fragment", [
    (lambda: f.build_csr(f.ec.generate_private_key(f.ec.SECP256R1()), f.org_subject(), [f.key_usage("digital_signature")], corrupt_signature=True), "supplier", 3, "CR:0003"),
    (lambda: f.organisation_csr(), "networkOperator", 1, "policy 4.1 eligibility"),
    (lambda: b"not a csr at all", "supplier", 3, "FM:0001"),
])
def test_organisation_refusals(authority, tmp_path, make, requester, code, fragment):
    (tmp_path / "req.csr").write_bytes(make())
    result = org_issue(authority, tmp_path / "req.csr", tmp_path / "org.pem", requester=requester, check=False)
    assert result.returncode == code and fragment in result.stderr and not (tmp_path / "org.pem").exists()


def test_device_single_request_needs_an_earlier_certificate(authority, tmp_path):
    key = f.ec.generate_private_key(f.ec.SECP256R1())
    (tmp_path / "d.csr").write_bytes(f.device_csr(key, eui64="00DB000000000001"))
    refused = device_issue(authority, tmp_path / "d.csr", tmp_path / "d.pem", check=False)
    assert refused.returncode == 1 and "single_request_requires_existing" in refused.stderr
    # The first certificate comes the batch-equivalent way, for the device's first key; then a replacement (a new key) is allowed.
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    first_key = f.ec.generate_private_key(f.ec.SECP256R1())
    (tmp_path / "dev.pub").write_bytes(first_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    smki("cert", "device", *issuing_options(authority), "--environment", "test", "--public-key", str(tmp_path / "dev.pub"), "--requester", "supplier",
         "--device-id", "00DB000000000001", "--device-type", "ESME", "--usage", "KA", "--not-before", "2026-02-01", "--out", str(tmp_path / "first.pem"))
    device_issue(authority, tmp_path / "d.csr", tmp_path / "d.pem")
    listed = json.loads(smki("ca", "list", *state(authority, Hierarchy.DEVICE), "--entity-id", "00DB000000000001", "--json").stdout)
    assert len(listed) == 2 and {r["certificate_type"] for r in listed} == {"device"}


def test_device_hw_type_must_match_the_policy(authority, tmp_path):
    key = f.ec.generate_private_key(f.ec.SECP256R1())
    (tmp_path / "d.csr").write_bytes(f.build_csr(key, b"\x30\x00", [f.key_usage("key_agreement"), f.hardware_module_name_san(hw_type="1.2.3.4")]))
    result = device_issue(authority, tmp_path / "d.csr", tmp_path / "d.pem", check=False)
    assert result.returncode == 1 and "hwType 1.2.3.4 is not the ESME hwType" in result.stderr


def test_revocation_and_the_crl(authority, tmp_path):
    policy = [*state(authority, Hierarchy.ORGANISATION), "--policy", str(POLICIES / "organisation.yaml")]
    serials = []
    for i, usage in enumerate(("digital_signature", "key_agreement")):
        (tmp_path / f"r{i}.csr").write_bytes(f.organisation_csr(usage=usage, eui64="90B3D51F300100A0"))
        org_issue(authority, tmp_path / f"r{i}.csr", tmp_path / f"o{i}.pem")
        serials.append(x509.load_pem_x509_certificate((tmp_path / f"o{i}.pem").read_bytes()).serial_number)
    assert smki("ca", "revoke", *policy, "FFFF", "--reason", "keyCompromise", check=False).returncode == 3
    bad_reason = smki("ca", "revoke", *policy, f"{serials[0]:X}", "--reason", "certificateHold", check=False)
    assert bad_reason.returncode == 1 and "4.9 reasons" in bad_reason.stderr
    smki("ca", "revoke", *policy, f"{serials[0]:X}", "--reason", "keyCompromise")
    again = smki("ca", "revoke", *policy, f"{serials[0]:X}", "--reason", "keyCompromise", check=False)
    assert again.returncode == 5 and "already revoked" in again.stderr
    crl_args = ["ca", "crl", *issuing_options(authority, Hierarchy.ORGANISATION)]
    first = json.loads(smki(*crl_args, "--out", str(tmp_path / "crl1.pem"), "--json").stdout)
    second = json.loads(smki(*crl_args, "--out", str(tmp_path / "crl2.pem"), "--json").stdout)
    assert second["crl_number"] == first["crl_number"] + 1 and second["entries"] >= 1
    text = openssl("crl", "-in", str(tmp_path / "crl2.pem"), "-noout", "-text").stdout.decode()
    assert f"Serial Number: {serials[0]:032X}" in text and "Key Compromise" in text and f"{serials[1]:032X}" not in text
    assert "clean" in smki("lint", str(tmp_path / "crl2.pem")).stdout
    chain = tmp_path / "chain.pem"
    chain.write_bytes(authority.certificate_file("root-oca").read_bytes() + authority.certificate_file("issuing-oca").read_bytes())
    revoked = openssl("verify", "-crl_check", "-CAfile", str(chain), "-CRLfile", str(tmp_path / "crl2.pem"), str(tmp_path / "o0.pem"))
    assert revoked.returncode != 0 and b"certificate revoked" in revoked.stdout + revoked.stderr
    good = openssl("verify", "-crl_check", "-CAfile", str(chain), "-CRLfile", str(tmp_path / "crl2.pem"), str(tmp_path / "o1.pem"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert smki(*crl_args, "--out", str(tmp_path / "crl2.pem"), check=False).returncode == 5  # never overwritten


def test_a_rejected_organisation_certificate_is_revoked_at_once(authority, tmp_path):
    (tmp_path / "r.csr").write_bytes(f.organisation_csr(eui64="90B3D51F300100B0"))
    org_issue(authority, tmp_path / "r.csr", tmp_path / "r.pem")
    serial = f"{x509.load_pem_x509_certificate((tmp_path / 'r.pem').read_bytes()).serial_number:032X}"
    rejected = json.loads(smki("ca", "reject", *state(authority, Hierarchy.ORGANISATION), "--policy", str(POLICIES / "organisation.yaml"), serial, "--json").stdout)
    assert rejected["method"] == "crl" and rejected["reason"] == "unspecified"
    assert json.loads(smki("ca", "show", *state(authority, Hierarchy.ORGANISATION), serial, "--json").stdout)[0]["status"] == "R"
    crl = tmp_path / "crl.pem"
    smki("ca", "crl", *issuing_options(authority, Hierarchy.ORGANISATION), "--out", str(crl))
    assert f"Serial Number: {serial}" in openssl("crl", "-in", str(crl), "-noout", "-text").stdout.decode()
    # The device policy does not revoke on rejection: the Issuing DCA refuses before it looks the serial up.
    refused = smki("ca", "reject", *state(authority, Hierarchy.DEVICE), "--policy", str(POLICIES / "device.yaml"), serial, check=False)
    assert refused.returncode == 1 and "revoke_on_rejection" in refused.stderr
