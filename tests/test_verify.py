"""Path validation by AKI -> SKI: the real fixtures, the test PKI (smki.testing's `smki_pki`), revocation, impostors."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.hsm.signer import SoftwareSigner
from smki.profiles.crl import RevokedEntry, build_crl
from smki.profiles.pathvalidation import validate_path
from test_librarian import build_hierarchy, hierarchy  # noqa: F401 - the fixture, shared

AT = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)  # the test PKI's certificates start today
ORG_OID = "1.2.826.0.1.8641679.1.2.1.4"
DEVICE_OID = "1.2.826.0.1.1800000.1.2.1.4"


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_real_organisation_certificates_verify_against_z1(fixtures_dir):
    z1 = load(fixtures_dir / "issuing-oca-Z1.pem")
    at = datetime.fromtimestamp(1500000000, timezone.utc)
    for path in sorted(fixtures_dir.glob("org-*.pem")):
        result = validate_path(load(path), [z1], [], at=at, expected_policy_oids=(ORG_OID,))
        assert result.valid, (path.name, result.reason)
    expired = validate_path(load(fixtures_dir / "org-recovery-ds-90B3D51F30000001.pem"), [z1], [], at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert not expired.valid and "is not valid at 2026-01-01" in expired.reason
    orphan = validate_path(load(fixtures_dir / "device-ds-00DB1234567890A0.pem"), [z1], [], at=at)
    assert not orphan.valid and "no issuer with subjectKeyIdentifier 47D40AF3412904A0" in orphan.reason


@pytest.fixture(scope="module")
def pki(smki_pki, hierarchy):
    """The test PKI's Organisation hierarchy with the CA signers (its keys on the kit's token), and test_librarian's leaves."""
    root, issuing, org, device = hierarchy
    root_key, issuing_key = (smki_pki.token.signer(smki_pki.key(name)) for name in ("root-oca", "issuing-oca"))
    return root, root_key, issuing, issuing_key, org, device


def test_smki_hierarchy_validates_and_wrong_policy_fails(pki, smki_pki):
    root, _, issuing, _, org, device = pki
    assert validate_path(org[0], [root], [issuing], at=AT, expected_policy_oids=(ORG_OID,)).valid
    assert validate_path(device, [smki_pki.root_dca_certificate], [smki_pki.issuing_dca_certificate], at=AT,
                         expected_policy_oids=(DEVICE_OID,)).valid
    assert not validate_path(device, [root], [issuing], at=AT).valid  # the Device hierarchy does not chain to the Root OCA
    result = validate_path(org[0], [root], [issuing], at=AT, expected_policy_oids=("1.2.826.0.1.1800000.1.2.1.4",))
    assert not result.valid and "not 1.2.826.0.1.1800000.1.2.1.4" in result.reason


def test_an_impostor_with_the_same_names_does_not_validate(pki):
    root, _, issuing, _, _, _ = pki
    _, impostor_issuing, impostor_org, _ = build_hierarchy(SoftwareSigner(), SoftwareSigner())
    assert impostor_org[0].issuer == issuing.subject
    result = validate_path(impostor_org[0], [root], [issuing, impostor_issuing], at=AT)
    assert not result.valid  # its issuer (by key identifier) is the impostor CA, which does not chain to our root


def test_revocation_against_the_crl_and_the_arl(pki):
    root, root_key, issuing, issuing_key, org, _ = pki
    crl = build_crl(issuing, issuing_key, crl_number=1, this_update_utc=AT - timedelta(hours=1), next_update_utc=AT + timedelta(days=1),
                    entries=[RevokedEntry(org[0].serial_number, AT - timedelta(days=1), "keyCompromise")])
    result = validate_path(org[0], [root], [issuing], at=AT, crls=[crl])
    assert not result.valid and "is revoked" in result.reason
    assert validate_path(org[1], [root], [issuing], at=AT, crls=[crl]).valid
    stale = validate_path(org[1], [root], [issuing], at=AT + timedelta(days=3), crls=[crl])
    assert not stale.valid and "not current" in stale.reason
    arl = build_crl(root, root_key, crl_number=1, this_update_utc=AT - timedelta(hours=1), next_update_utc=AT + timedelta(days=365),
                    entries=[RevokedEntry(issuing.serial_number, AT - timedelta(days=1), "cACompromise")])
    result = validate_path(org[1], [root], [issuing], at=AT, crls=[arl])
    assert not result.valid and "CN=Z1" in result.reason and "is revoked" in result.reason


def test_verify_cli(pki, tmp_path, run_smki, fixtures_dir, smki_pki):
    root, _, issuing, issuing_key, org, device = pki
    for name, certificate in (("root", root), ("issuing", issuing), ("org", org[0]), ("device", device)):
        (tmp_path / f"{name}.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    at = str(int(AT.timestamp()))
    result = run_smki("verify", str(tmp_path / "device.pem"), "--anchor", str(smki_pki.certificate_file("root-dca")),
                      "--intermediate", str(smki_pki.certificate_file("issuing-dca")), "--at", at, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["chain"] == ["(empty subject)", "CN=E357", "CN=ZD,OU=00"]
    result = run_smki("verify", str(tmp_path / "org.pem"), "--anchor", str(tmp_path / "root.pem"), "--intermediate", str(tmp_path / "issuing.pem"), "--at", at, "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["chain"][1:] == ["CN=Z1,OU=07", "CN=ZA,OU=00"]
    crl = build_crl(issuing, issuing_key, crl_number=2, this_update_utc=AT - timedelta(hours=1), next_update_utc=AT + timedelta(days=1),
                    entries=[RevokedEntry(org[0].serial_number, AT - timedelta(days=1))])
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(Encoding.PEM))
    result = run_smki("verify", str(tmp_path / "org.pem"), "--anchor", str(tmp_path / "root.pem"), "--intermediate", str(tmp_path / "issuing.pem"),
                      "--crl", str(tmp_path / "crl.pem"), "--at", at)
    assert result.returncode == 1 and "INVALID" in result.stdout and "revoked" in result.stdout
    bad_at = run_smki("verify", str(tmp_path / "org.pem"), "--anchor", str(tmp_path / "root.pem"), "--at", "yesterday")
    assert bad_at.returncode == 3 and "--at: 'yesterday'" in bad_at.stderr
    (tmp_path / "junk.pem").write_text("junk")
    junk = run_smki("verify", str(tmp_path / "junk.pem"), "--anchor", str(tmp_path / "root.pem"))
    assert junk.returncode == 3 and junk.stderr == f"smki: error: {tmp_path / 'junk.pem'}: neither DER nor PEM\n"
