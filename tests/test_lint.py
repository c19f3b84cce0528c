"""Lint rules: the real fixtures and everything smki builds lint clean; each deliberately broken
certificate gives exactly its expected finding."""

import json
from pathlib import Path
from datetime import datetime, timezone

import pytest
from asn1crypto import core, keys as asn1_keys, x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID, ObjectIdentifier

from smki.errors import RefusedError
from smki.hsm.signer import SoftwareSigner
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles import (DEVICE_NOT_AFTER, DeviceCertificateParams, IssuingCaCertificateParams, OrganisationCertificateParams,
                           RootCertificateParams, Validity, ca_name, device_certificate, issuing_ca_certificate,
                           organisation_certificate, root_certificate, sign_certificate)
from smki.profiles.extensions import hardware_module_name
from smki.profiles.keyids import key_identifier
from smki.profiles.lint import lint_certificate, pre_issuance_check

ORG_OID, DEVICE_OID, HW = "1.2.826.0.1.8641679.1.2.1.4", "1.2.826.0.1.1800000.1.2.1.4", "1.2.826.0.1.8641679.1.2.2.1"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
# Kept by hand, not smki.testing: one software key as root and CA (names and dates the lint tests assert on), no HSM needed.
CA_KEY = SoftwareSigner()
# The CA asserts both hierarchies' OIDs, so that one CA can issue the organisation and device certificates linted here.
ROOT = sign_certificate(root_certificate(RootCertificateParams(ca_name([("OU", "00"), ("CN", "ZD")]), (DEVICE_OID, ORG_OID),
                                                               Validity(START, START.replace(year=2055))), CA_KEY.public_key), CA_KEY)
CA = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(ca_name([("CN", "E357")]), (DEVICE_OID, ORG_OID),
                                                                        Validity(START, START.replace(year=2050))), CA_KEY.public_key, ROOT), CA_KEY)
SUBJECT_KEY = ec.generate_private_key(ec.SECP256R1()).public_key()


def rules(der, **kwargs):
    return sorted(f.rule_id for f in lint_certificate(der, **kwargs)[1])


def der(certificate):
    return certificate.public_bytes(Encoding.DER)


def test_real_fixtures_lint_clean_with_the_test_oids(fixtures_dir):
    for path in sorted(fixtures_dir.glob("*.pem")):
        kind, findings = lint_certificate(der(x509.load_pem_x509_certificate(path.read_bytes())), expected_policy_oids=(ORG_OID, DEVICE_OID))
        assert findings == [], (path.name, findings)
        assert kind == {"device": "device", "issuing": "issuing-ca"}.get(path.name.split("-")[0], "organisation")


def test_fixtures_fail_under_other_oids(fixtures_dir):
    """The expected-OID rule can fail: production OIDs are not the test PKI's."""
    certificate = x509.load_pem_x509_certificate((fixtures_dir / "issuing-oca-Z1.pem").read_bytes())
    assert rules(der(certificate), expected_policy_oids=("1.2.826.0.1.8641679.1.1.1.4",)) == ["smki.cert.expected_policy_oid"]


def device_builder(**changes):
    """A correct device certificate builder, with one change applied by the caller."""
    return device_certificate(DeviceCertificateParams(EUI64.parse("00DB1234567890A0"), HW, KeyUsage.KEY_AGREEMENT, DEVICE_OID,
                                                      Validity(START, DEVICE_NOT_AFTER)), SUBJECT_KEY, CA)


def rebuild(builder, replace=None, subject=None, not_after=None, public_key=None, issuer=None):
    """Copy a builder's certificate with extensions replaced in place ({oid: (value, critical)}) or fields changed."""
    replace = replace or {}
    draft = builder.sign(CA_KEY.private_key, hashes.SHA256())
    new = (x509.CertificateBuilder().serial_number(draft.serial_number).issuer_name(issuer or draft.issuer)
           .subject_name(subject if subject is not None else draft.subject).not_valid_before(draft.not_valid_before_utc)
           .not_valid_after(not_after or draft.not_valid_after_utc).public_key(public_key or draft.public_key()))
    for extension in draft.extensions:
        value, critical = replace.get(extension.oid.dotted_string, (extension.value, extension.critical))
        new = new.add_extension(value, critical)
    return der(new.sign(CA_KEY.private_key, hashes.SHA256()))


KU_DS_KA = x509.KeyUsage(True, False, False, False, True, False, False, False, False)
KU_KA = x509.KeyUsage(False, False, False, False, True, False, False, False, False)


@pytest.mark.parametrize("name, make, expected", [
    ("non-critical keyUsage", lambda: rebuild(device_builder(), replace={"2.5.29.15": (KU_KA, False)}), ["smki.cert.key_usage_critical"]),
    ("two key usages", lambda: rebuild(device_builder(), replace={"2.5.29.15": (KU_DS_KA, True)}), ["smki.cert.key_usage_bits"]),
    ("20-byte SKI", lambda: rebuild(device_builder(), replace={"2.5.29.14": (x509.SubjectKeyIdentifier(b"\x01" * 20), False)}), ["smki.cert.subject_key_identifier"]),
    ("AKI with issuer and serial", lambda: rebuild(device_builder(), replace={"2.5.29.35": (x509.AuthorityKeyIdentifier(key_identifier(CA_KEY.public_key), [x509.DirectoryName(CA.issuer)], 5), False)}), ["smki.cert.authority_key_identifier"]),
    ("P-384 key", lambda: rebuild(device_builder(), public_key=ec.generate_private_key(ec.SECP384R1()).public_key()), ["smki.cert.public_key_p256", "smki.cert.public_key_uncompressed", "smki.cert.subject_key_identifier"]),
    ("subject on a device", lambda: rebuild(device_builder(), subject=ca_name([("CN", "meter")])), ["smki.device.subject_empty"]),
    ("device notAfter", lambda: rebuild(device_builder(), not_after=START.replace(year=2060)), ["smki.device.not_after"]),
    ("non-critical SAN", lambda: rebuild(device_builder(), replace={"2.5.29.17": (x509.SubjectAlternativeName([hardware_module_name(HW, EUI64.parse("00DB1234567890A0"))]), False)}), ["smki.device.hardware_module_name"]),
    ("two policy OIDs on a device", lambda: rebuild(device_builder(), replace={"2.5.29.32": (x509.CertificatePolicies([x509.PolicyInformation(ObjectIdentifier(DEVICE_OID), None), x509.PolicyInformation(ObjectIdentifier("1.2.3.4"), None)]), True)}), ["smki.cert.single_policy_oid"]),
])
def test_broken_device_variants(name, make, expected):
    assert rules(make(), certificate_type="device", expected_policy_oids=(DEVICE_OID,)) == expected, name


def test_a_correct_device_certificate_is_clean():
    assert rules(der(sign_certificate(device_builder(), CA_KEY)), expected_policy_oids=(DEVICE_OID,)) == []


def resign(der_bytes, mutate):
    """Change the TBS with asn1crypto, then sign it again with the CA key (for bytes cryptography will not write)."""
    certificate = asn1_x509.Certificate.load(der_bytes)
    tbs = mutate(certificate["tbs_certificate"])
    signature = CA_KEY.private_key.sign(tbs.dump(force=True), ec.ECDSA(hashes.SHA256()))
    return asn1_x509.Certificate({"tbs_certificate": tbs, "signature_algorithm": certificate["signature_algorithm"], "signature_value": signature}).dump(force=True)


def test_null_signature_parameters():
    def null(tbs):
        tbs["signature"] = asn1_x509.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa", "parameters": core.Null()})
        return tbs
    assert rules(resign(der(sign_certificate(device_builder(), CA_KEY)), null), expected_policy_oids=(DEVICE_OID,)) == ["smki.cert.signature_parameters_absent"]


def test_compressed_point():
    def compress(tbs):
        info = tbs["subject_public_key_info"]
        tbs["subject_public_key_info"] = asn1_keys.PublicKeyInfo({"algorithm": info["algorithm"], "public_key": SUBJECT_KEY.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)})
        return tbs
    assert rules(resign(der(sign_certificate(device_builder(), CA_KEY)), compress), expected_policy_oids=(DEVICE_OID,)) == ["smki.cert.public_key_uncompressed", "smki.cert.subject_key_identifier"]


def organisation(common_name="SUPPLIER"):
    return organisation_certificate(OrganisationCertificateParams(RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.DIGITAL_SIGNATURE, ORG_OID,
                                                                  Validity(START, START.replace(year=2036))), SUBJECT_KEY, CA)


def test_unique_identifier_as_octet_string():
    import csr_factory
    subject = csr_factory.org_subject(common_name="SUPPLIER", uid_tag=csr_factory.OCTET_STRING)  # 04 08 <EUI-64>

    # Splice the raw subject into the TBS field by field (asn1crypto would refuse to re-encode it).
    certificate = asn1_x509.Certificate.load(der(sign_certificate(organisation(), CA_KEY)))
    tbs = certificate["tbs_certificate"]
    fields = [tbs[name].dump() for name in ("version", "serial_number", "signature", "issuer", "validity")]
    fields += [subject] + [tbs[name].dump() for name in ("subject_public_key_info", "extensions")]
    tbs_der = csr_factory.tlv(0x30, b"".join(fields))
    signature = CA_KEY.private_key.sign(tbs_der, ec.ECDSA(hashes.SHA256()))
    broken = csr_factory.tlv(0x30, tbs_der + certificate["signature_algorithm"].dump() + csr_factory.tlv(0x03, b"\x00" + signature))
    assert bytes.fromhex("040890B3D51F30010000") in broken
    assert rules(broken, certificate_type="organisation", expected_policy_oids=(ORG_OID,)) == ["smki.organisation.subject"]


def test_issuer_not_byte_identical():
    utf8_issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "E357", _ASN1Type.UTF8String)])  # same text, other string type
    assert rules(rebuild(organisation(), issuer=utf8_issuer), issuer_subject_der=CA.subject.public_bytes()) == ["smki.cert.issuer_byte_identical"]
    assert rules(der(sign_certificate(organisation(), CA_KEY)), issuer_subject_der=CA.subject.public_bytes()) == []


def test_pre_issuance_lint_stops_a_bad_certificate_before_the_hsm_signs(new_hsm_key):
    _, hsm = new_hsm_key()
    signed = []
    original = hsm.sign
    hsm.sign = lambda data: signed.append(data) or original(data)
    other_ca = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "E357", _ASN1Type.UTF8String)]), (DEVICE_OID, ORG_OID), Validity(START, START.replace(year=2050))),
        CA_KEY.public_key, ROOT), CA_KEY)  # same name text, another string type
    bad = organisation_certificate(OrganisationCertificateParams(RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.DIGITAL_SIGNATURE,
                                                                 ORG_OID, Validity(START, START.replace(year=2036))), SUBJECT_KEY, other_ca)
    with pytest.raises(RefusedError, match="smki.cert.issuer_byte_identical"):
        sign_certificate(bad, hsm, pre_issuance_check=pre_issuance_check("organisation", (ORG_OID,), issuer=CA))
    assert signed == []
    with pytest.raises(RefusedError, match="smki.cert.expected_policy_oid"):
        sign_certificate(organisation(), hsm, pre_issuance_check=pre_issuance_check("organisation", (DEVICE_OID,)))
    assert signed == []


def test_lint_cli(tmp_path, run_smki, fixtures_dir):
    good = tmp_path / "good.pem"
    good.write_bytes(sign_certificate(device_builder(), CA_KEY).public_bytes(Encoding.PEM))
    (tmp_path / "bad.der").write_bytes(rebuild(device_builder(), subject=ca_name([("CN", "meter")])))
    (tmp_path / "truncated.der").write_bytes(good.read_bytes()[:0] + der(x509.load_pem_x509_certificate(good.read_bytes()))[:200])
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")
    (tmp_path / "notes.txt").write_text("not a certificate")
    (tmp_path / "gone.pem").symlink_to(tmp_path / "deleted-meanwhile.pem")  # unreadable (as root, chmod would not stop a read)
    result = run_smki("lint", str(tmp_path), "--environment", "test", "--json")
    assert result.returncode == 3  # some files unreadable; the others still checked
    by_file = {Path(r["file"]).name: r for r in json.loads(result.stdout)}
    assert by_file["good.pem"]["findings"] == []
    assert [f["rule"] for f in by_file["bad.der"]["findings"]] == ["smki.device.subject_empty"]
    assert "not a DER X.509 certificate" in by_file["truncated.der"]["error"]
    assert "invalid Base64" in by_file["garbage.pem"]["error"] and "neither DER nor PEM" in by_file["notes.txt"]["error"]
    assert by_file["gone.pem"]["error"] == "No such file or directory"
    result = run_smki("lint", str(tmp_path / "bad.der"))
    assert result.returncode == 1 and "smki.device.subject_empty" in result.stdout
    assert run_smki("lint", str(fixtures_dir / "issuing-oca-Z1.pem"), "--environment", "test").returncode == 0

