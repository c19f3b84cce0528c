"""Lodging by key identifier, and `smki librarian find`, on certificates of the test PKI (smki.testing's `smki_pki`)."""

import json
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from smki.librarian.lodging import lodge_certificate
from smki.errors import ConflictError, RefusedError
from smki.hsm.signer import SoftwareSigner
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles import (DEVICE_NOT_AFTER, DeviceCertificateParams, IssuingCaCertificateParams, OrganisationCertificateParams,
                           RootCertificateParams, Validity, ca_name, device_certificate, issuing_ca_certificate,
                           organisation_certificate, root_certificate, sign_certificate)
from smki.store import open_database

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
POLICY = "1.2.826.0.1.8641679.1.2.1.4"


def build_hierarchy(root_key, issuing_key, root_name="ZA"):
    """A hand-made hierarchy with the test PKI's names, for impostors (the same names under other keys)."""
    root = sign_certificate(root_certificate(RootCertificateParams(ca_name([("OU", "00"), ("CN", root_name)]), (POLICY,), Validity(START, START.replace(year=2056))), root_key.public_key), root_key)
    issuing = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(ca_name([("OU", "07"), ("CN", "Z1")]), (POLICY,), Validity(START, START.replace(year=2051))), issuing_key.public_key, root), root_key)
    org = [sign_certificate(organisation_certificate(OrganisationCertificateParams(RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), usage, POLICY,
           Validity(START, START.replace(year=2036))), ec.generate_private_key(ec.SECP256R1()).public_key(), issuing), issuing_key) for usage in KeyUsage]
    device = sign_certificate(device_certificate(DeviceCertificateParams(EUI64.parse("00DB1234567890A0"), "1.2.826.0.1.8641679.1.2.2.1", KeyUsage.KEY_AGREEMENT, POLICY,
              Validity(START, DEVICE_NOT_AFTER)), ec.generate_private_key(ec.SECP256R1()).public_key(), issuing), issuing_key)
    return root, issuing, org, device


@pytest.fixture(scope="module")
def hierarchy(smki_pki):
    """The test PKI's Root OCA and Issuing OCA, an Organisation Certificate for each key usage, and a Device Certificate
    (its Issuing DCA and Root DCA are `smki_pki.intermediates[1]`, `smki_pki.anchors[1]`)."""
    org = [smki_pki.organisation_certificate("90B3D51F30010000", usage=usage).certificate for usage in KeyUsage]
    device = smki_pki.device_certificate("00DB1234567890A0", usage="KA").certificate
    return smki_pki.root_oca_certificate, smki_pki.issuing_oca_certificate, org, device


def test_lodging_chains_by_key_identifier(tmp_path, hierarchy, smki_pki):
    root, issuing, org, device = hierarchy
    root_dca, issuing_dca = smki_pki.root_dca_certificate, smki_pki.issuing_dca_certificate
    connection = open_database(tmp_path / "repo.db", create=True)
    with pytest.raises(RefusedError, match="issuer unknown"):
        lodge_certificate(connection, issuing)
    with pytest.raises(RefusedError, match="trusts it explicitly"):
        lodge_certificate(connection, root)
    with pytest.raises(RefusedError, match="issuer unknown"):
        lodge_certificate(connection, device)  # its Issuing DCA is not lodged
    for certificate in (root, root_dca):
        lodge_certificate(connection, certificate, trust_root=True)
    for certificate in (issuing, issuing_dca, *org, device):
        lodge_certificate(connection, certificate)
    with pytest.raises(ConflictError, match="already lodged"):
        lodge_certificate(connection, org[0])
    types = [row[0] for row in connection.execute("SELECT certificate_type FROM certificates ORDER BY rowid")]
    assert types == ["root", "root", "issuing-ca", "issuing-ca", "organisation", "organisation", "device"]


def test_same_names_other_key_is_refused(tmp_path, hierarchy):
    """An impostor CA with byte-identical names but another key: its leaves never chain to the real one."""
    root, issuing, _, _ = hierarchy
    _, impostor_issuing, impostor_org, _ = build_hierarchy(SoftwareSigner(), SoftwareSigner())
    connection = open_database(tmp_path / "repo.db", create=True)
    lodge_certificate(connection, root, trust_root=True)
    lodge_certificate(connection, issuing)
    assert impostor_org[0].issuer == issuing.subject  # the names match...
    with pytest.raises(RefusedError, match="issuer unknown"):
        lodge_certificate(connection, impostor_org[0])  # ...but its AKI names a key we do not have


def test_librarian_cli_lodge_and_find(tmp_path, hierarchy, run_smki, smki_pki):
    root, issuing, org, device = hierarchy
    files = []
    for name, certificate in (("root", root), ("issuing", issuing), ("org-ds", org[0]), ("org-ka", org[1]),
                              ("root-dca", smki_pki.root_dca_certificate), ("issuing-dca", smki_pki.issuing_dca_certificate), ("device", device)):
        (tmp_path / f"{name}.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
        files.append(str(tmp_path / f"{name}.pem"))
    db = str(tmp_path / "repo.db")
    result = run_smki("librarian", "lodge", "--db", db, "--trust-root", *files, "--json")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 7
    again = run_smki("librarian", "lodge", "--db", db, files[2])
    assert again.returncode == 0 and again.stdout.startswith(f"already lodged {files[2]}  serial "), again.stderr  # nothing to do
    found = json.loads(run_smki("librarian", "find", "--db", db, "--eui64", "90-B3-D5-1F-30-01-00-00", "--usage", "KA", "--json").stdout)
    assert [(r["role"], r["key_usage"], r["certificate_type"]) for r in found] == [("02", "KA", "organisation")]
    found = json.loads(run_smki("librarian", "find", "--db", db, "--eui64", "00DB1234567890A0", "--json").stdout)
    assert found[0]["certificate_type"] == "device" and found[0]["serial_hex"] == f"{device.serial_number:032X}"
    by_serial = json.loads(run_smki("librarian", "find", "--db", db, "--serial", f"{org[0].serial_number:x}", "--json").stdout)
    assert by_serial[0]["key_usage"] == "DS"
    assert run_smki("librarian", "find", "--db", db, "--eui64", "0000000000000009").returncode == 1
    bad = run_smki("librarian", "find", "--db", db, "--eui64", "12345")
    assert bad.returncode == 3 and bad.stderr.startswith("smki: error: malformed EUI-64")


def test_every_lodging_and_refusal_is_audited(tmp_path, hierarchy):
    from smki.audit.verify import rows_from_database, verify_trail
    root, issuing, org, _ = hierarchy
    connection = open_database(tmp_path / "repo.db", create=True)
    signer = SoftwareSigner()
    from smki.audit import AuditTrail
    audit = AuditTrail(connection, signer)
    lodge_certificate(connection, root, trust_root=True, audit=audit, actor="lib-op")
    with pytest.raises(RefusedError):
        lodge_certificate(connection, org[0], audit=audit, actor="lib-op")  # its issuer is not lodged yet
    entries, _ = rows_from_database(connection)
    assert [(e["operation"], e["outcome"], e["actor"]) for e in entries] == [("certificate.lodge", "success", "lib-op"), ("certificate.lodge", "refused", "lib-op")]
    assert json.loads(entries[1]["subject"])["serial"] == f"{org[0].serial_number:032X}"
    assert "issuer unknown" in json.loads(entries[1]["details"])["reason"]
    assert connection.execute("SELECT COUNT(*) FROM certificates").fetchone()[0] == 1
    assert verify_trail(entries, [], signer.public_key).ok
