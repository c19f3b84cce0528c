"""The six GBCS profiles built with SoftHSM keys, checked on the DER against smki-profiles.md,
against the real ZAZ1 certificates, and with openssl."""

import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from asn1crypto import core, x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import openssl
from smki.errors import BadInputError
from smki.hsm.signer import SoftwareSigner
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles import (
    DEVICE_NOT_AFTER, DeviceCertificateParams, IssuingCaCertificateParams, OrganisationCertificateParams,
    RootCertificateParams, Validity, ca_name, device_certificate, issuing_ca_certificate, organisation_certificate,
    root_certificate, sign_certificate,
)
from smki.profiles.extensions import wrapped_apex_contingency_key
from smki.profiles.public_keys import check_subject_public_key_info

ORG_POLICY = "1.2.826.0.1.8641679.1.2.1.4"
DEVICE_POLICY = "1.2.826.0.1.1800000.1.2.1.4"
HW_TYPE = "1.2.826.0.1.8641679.1.2.2.1"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
KU, BC, CP, SKI, AKI, SAN = "2.5.29.15", "2.5.29.19", "2.5.29.32", "2.5.29.14", "2.5.29.35", "2.5.29.17"


def years(n):
    return START.replace(year=START.year + n) - timedelta(seconds=1)


# Kept by hand, not smki.testing: the certificate builders themselves are under test here.
@pytest.fixture(scope="module")
def hierarchy(request):
    """Root OCA -> Issuing OCA -> Organisation, Root DCA -> Issuing DCA -> Device, all CA keys in SoftHSM."""
    new_key = request.getfixturevalue("new_hsm_key")
    (_, root_oca), (_, root_dca), (_, issuing_oca), (_, issuing_dca) = (new_key() for _ in range(4))
    contingency = wrapped_apex_contingency_key(b"\xa6" * 88)
    certs = {}
    certs["root-oca"] = sign_certificate(root_certificate(RootCertificateParams(
        ca_name([("OU", "00"), ("CN", "ZA")]), (ORG_POLICY,), Validity(START, years(30)), 1, contingency), root_oca.public_key), root_oca)
    certs["root-dca"] = sign_certificate(root_certificate(RootCertificateParams(
        ca_name([("OU", "00"), ("CN", "ZD")]), (DEVICE_POLICY,), Validity(START, years(30)), 1), root_dca.public_key), root_dca)
    certs["issuing-oca"] = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(
        ca_name([("OU", "07"), ("CN", "Z1")]), (ORG_POLICY,), Validity(START, years(25))), issuing_oca.public_key, certs["root-oca"]), root_oca)
    certs["issuing-dca"] = sign_certificate(issuing_ca_certificate(IssuingCaCertificateParams(
        ca_name([("CN", "E357")]), (DEVICE_POLICY,), Validity(START, years(25))), issuing_dca.public_key, certs["root-dca"]), root_dca)
    subscriber = ec.generate_private_key(ec.SECP256R1())
    certs["organisation"] = sign_certificate(organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.DIGITAL_SIGNATURE, ORG_POLICY,
        Validity(START, years(10)), "GITTESTSUPPLIER"), subscriber.public_key(), certs["issuing-oca"]), issuing_oca)
    certs["device"] = sign_certificate(device_certificate(DeviceCertificateParams(
        EUI64.parse("00DB1234567890A0"), HW_TYPE, KeyUsage.DIGITAL_SIGNATURE, DEVICE_POLICY,
        Validity(START, DEVICE_NOT_AFTER)), ec.generate_private_key(ec.SECP256R1()).public_key(), certs["issuing-dca"]), issuing_dca)
    return certs


def der(certificate):
    return certificate.public_bytes(Encoding.DER)


def parsed(certificate):
    return asn1_x509.Certificate.load(der(certificate))


def extension_layout(certificate):
    """[(oid, critical)] in encoded order, read from the DER."""
    return [(e["extn_id"].dotted, e["critical"].native) for e in parsed(certificate)["tbs_certificate"]["extensions"]]


def extension_value(certificate, oid):
    for extension in parsed(certificate)["tbs_certificate"]["extensions"]:
        if extension["extn_id"].dotted == oid:
            return extension["extn_value"].parsed
    raise AssertionError(f"no extension {oid}")


def subject_layout(certificate):
    """[(attribute oid, ASN.1 universal tag of its value)] in encoded order."""
    layout = []
    for rdn in parsed(certificate)["tbs_certificate"]["subject"].chosen:
        for attribute in rdn:
            layout.append((attribute["type"].dotted, attribute["value"].dump()[0]))
    return layout


def load_fixture(fixtures_dir, name):
    return x509.load_pem_x509_certificate((fixtures_dir / name).read_bytes())


EXPECTED_LAYOUT = {
    "root-oca": [(KU, True), (BC, True), (CP, True), (SKI, False), ("1.3.6.1.5.5.7.1.20", False)],
    "root-dca": [(KU, True), (BC, True), (CP, True), (SKI, False)],
    "issuing-oca": [(KU, True), (BC, True), (CP, True), (SKI, False), (AKI, False)],
    "issuing-dca": [(KU, True), (BC, True), (CP, True), (SKI, False), (AKI, False)],
    "organisation": [(KU, True), (SKI, False), (CP, True), (AKI, False)],
    "device": [(KU, True), (SKI, False), (SAN, True), (CP, True), (AKI, False)],
}


@pytest.mark.parametrize("kind", list(EXPECTED_LAYOUT))
def test_every_rule_for_every_certificate(hierarchy, kind):
    certificate = hierarchy[kind]
    tbs = parsed(certificate)["tbs_certificate"]
    assert tbs["version"].native == "v3"
    # ecdsa-with-SHA256, parameters absent (not NULL), in both places.
    for algorithm in (tbs["signature"], parsed(certificate)["signature_algorithm"]):
        assert algorithm["algorithm"].dotted == "1.2.840.10045.4.3.2"
        assert algorithm.dump() == bytes.fromhex("300a06082a8648ce3d040302")
    # P-256 uncompressed point.
    spki = tbs["subject_public_key_info"]
    assert spki["algorithm"]["parameters"].chosen.dotted == "1.2.840.10045.3.1.7"
    point = spki["public_key"].contents[1:]
    assert len(point) == 65 and point[0] == 0x04
    # Extension order and criticality.
    assert extension_layout(certificate) == EXPECTED_LAYOUT[kind]
    # SKI: 8 octets, method 2 recomputed here from the point.
    ski = extension_value(certificate, SKI).native
    low = hashlib.sha1(point).digest()[-8:]
    assert ski == bytes([0x40 | (low[0] & 0x0F)]) + low[1:]
    # AKI: keyIdentifier only, equal to the issuer's SKI.
    if (AKI, False) in EXPECTED_LAYOUT[kind]:
        aki = extension_value(certificate, AKI)
        assert set(k for k, v in aki.native.items() if v is not None) == {"key_identifier"}
        assert len(aki["key_identifier"].native) == 8
    # Serial: 16 octets, positive.
    serial_der = tbs["serial_number"].dump()
    assert serial_der[1] == 16 and serial_der[2] < 0x80
    # certificatePolicies: critical, one OID for end entities.
    policies = extension_value(certificate, CP).native
    assert len(policies) == 1


def test_issuer_is_byte_identical_to_the_ca_subject(hierarchy):
    pairs = [("root-oca", "root-oca"), ("root-oca", "issuing-oca"), ("issuing-oca", "organisation"),
             ("root-dca", "issuing-dca"), ("issuing-dca", "device")]
    for issuer, subject in pairs:
        assert parsed(hierarchy[subject])["tbs_certificate"]["issuer"].dump() == parsed(hierarchy[issuer])["tbs_certificate"]["subject"].dump()


def test_ca_names_are_printable_strings_in_order(hierarchy):
    printable = 0x13
    assert subject_layout(hierarchy["issuing-oca"]) == [("2.5.4.11", printable), ("2.5.4.3", printable)]
    assert subject_layout(hierarchy["issuing-dca"]) == [("2.5.4.3", printable)]


def test_device_certificate_specifics(hierarchy):
    tbs = parsed(hierarchy["device"])["tbs_certificate"]
    assert tbs["subject"].dump() == b"\x30\x00"
    assert tbs["validity"]["not_after"].dump() == b"\x18\x0f" + b"99991231235959Z"  # GeneralizedTime
    san = extension_value(hierarchy["device"], SAN)
    assert len(san) == 1 and san[0].name == "other_name"
    assert san[0].chosen["type_id"].dotted == "1.3.6.1.5.5.7.8.4"
    # otherName value [0] EXPLICIT HardwareModuleName ::= SEQUENCE { hwType OID, hwSerialNum OCTET STRING }
    fields = core.ObjectIdentifier(HW_TYPE).dump() + core.OctetString(bytes.fromhex("00DB1234567890A0")).dump()
    expected = b"\x30" + bytes([len(fields)]) + fields
    assert san[0].chosen["value"].dump() == b"\xa0" + bytes([len(expected)]) + expected


def test_root_ca_specifics(hierarchy):
    root = hierarchy["root-oca"]
    assert extension_value(root, BC).native == {"ca": True, "path_len_constraint": 1}
    assert extension_value(root, KU).native == {"key_cert_sign", "crl_sign"}
    assert extension_value(hierarchy["issuing-oca"], BC).native == {"ca": True, "path_len_constraint": 0}
    raw = [e for e in parsed(root)["tbs_certificate"]["extensions"] if e["extn_id"].dotted == "1.3.6.1.5.5.7.1.20"][0]
    wrapped = core.Sequence.load(raw["extn_value"].native)  # RFC 5934 WrappedApexContingencyKey
    assert core.Sequence.load(wrapped[0].dump())[0].dotted == "2.16.840.1.101.3.4.1.45"
    assert wrapped[1].native == b"\xa6" * 88


def test_organisation_subject_string_types(hierarchy):
    utf8, bit_string = 0x0C, 0x03
    assert subject_layout(hierarchy["organisation"]) == [("2.5.4.3", utf8), ("2.5.4.11", utf8), ("2.5.4.45", bit_string)]
    rdns = parsed(hierarchy["organisation"])["tbs_certificate"]["subject"].chosen
    assert rdns[2][0]["value"].dump() == bytes.fromhex("0309" "00" "90B3D51F30010000")


@pytest.mark.parametrize("ours, fixture", [
    ("organisation", "org-supplier-ds-90B3D51F30010000.pem"),
    ("device", "device-ds-00DB1234567890A0.pem"),
    ("issuing-oca", "issuing-oca-Z1.pem"),
])
def test_structure_equals_the_real_certificates(hierarchy, fixtures_dir, ours, fixture):
    real = load_fixture(fixtures_dir, fixture)
    built = hierarchy[ours]
    assert extension_layout(built) == extension_layout(real)
    assert subject_layout(built) == subject_layout(real)
    for oid in (KU, CP, BC):
        if (oid, True) in extension_layout(real):
            assert extension_value(built, oid).native == extension_value(real, oid).native
    # Same issuer name bytes where we used the same CA name, and sizes within a few bytes
    # (the only variable part is the DER length of the ECDSA signature, 70 to 72 bytes).
    size_delta = len(der(built)) - len(der(real))
    issuer_delta = len(parsed(built)["tbs_certificate"]["issuer"].dump()) - len(parsed(real)["tbs_certificate"]["issuer"].dump())
    assert abs(size_delta - issuer_delta) <= 3


def test_our_organisation_builder_reproduces_a_real_tbs_shape(fixtures_dir):
    """Rebuilding the real supplier certificate's fields under the real Z1 gives the same subject and issuer bytes."""
    real = load_fixture(fixtures_dir, "org-supplier-ds-90B3D51F30010000.pem")
    z1 = load_fixture(fixtures_dir, "issuing-oca-Z1.pem")
    builder = organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.DIGITAL_SIGNATURE, ORG_POLICY,
        Validity(real.not_valid_before_utc, real.not_valid_after_utc), "GITTESTSUPPLIER"), real.public_key(), z1)
    rebuilt = sign_certificate(builder, SoftwareSigner())
    for field in ("subject", "issuer", "validity", "subject_public_key_info"):
        assert parsed(rebuilt)["tbs_certificate"][field].dump() == parsed(real)["tbs_certificate"][field].dump()
    # Extensions equal byte for byte (same key -> same SKI; same issuer -> same AKI).
    assert parsed(rebuilt)["tbs_certificate"]["extensions"].dump() == parsed(real)["tbs_certificate"]["extensions"].dump()


def test_openssl_verifies_both_chains(hierarchy, tmp_path):
    for name, certificate in hierarchy.items():
        (tmp_path / f"{name}.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    for root, issuing, leaf in (("root-oca", "issuing-oca", "organisation"), ("root-dca", "issuing-dca", "device")):
        result = openssl("verify", "-x509_strict", "-attime", str(int(START.timestamp()) + 86400),
                         "-CAfile", str(tmp_path / f"{root}.pem"), "-untrusted", str(tmp_path / f"{issuing}.pem"),
                         str(tmp_path / f"{leaf}.pem"))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip().endswith(b": OK")


def test_openssl_rejects_a_chain_with_the_wrong_root(hierarchy, tmp_path):
    """The check above can fail: a device chained to the Organisation root does not verify."""
    for name, certificate in hierarchy.items():
        (tmp_path / f"{name}.pem").write_bytes(certificate.public_bytes(Encoding.PEM))
    result = openssl("verify", "-CAfile", str(tmp_path / "root-oca.pem"), "-untrusted", str(tmp_path / "issuing-dca.pem"),
                     str(tmp_path / "device.pem"))
    assert result.returncode != 0


def _spki(key, point_format):
    from asn1crypto import keys as asn1_keys
    info = asn1_keys.PublicKeyInfo.load(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))
    point = key.public_bytes(Encoding.X962, point_format)
    return asn1_keys.PublicKeyInfo({"algorithm": info["algorithm"], "public_key": point}).dump()


def test_public_key_intake():
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert check_subject_public_key_info(_spki(key, PublicFormat.UncompressedPoint)).public_numbers() == key.public_numbers()
    with pytest.raises(BadInputError, match="not uncompressed"):
        check_subject_public_key_info(_spki(key, PublicFormat.CompressedPoint))
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BadInputError, match="not P-256"):
        check_subject_public_key_info(p384)
    from cryptography.hazmat.primitives.asymmetric import rsa
    rsa_key = rsa.generate_private_key(65537, 2048).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BadInputError, match="not id-ecPublicKey"):
        check_subject_public_key_info(rsa_key)
    with pytest.raises(BadInputError, match="not a DER SubjectPublicKeyInfo"):
        check_subject_public_key_info(b"\x30\x03\x02\x01")


def test_profile_parameters_are_checked_where_they_enter(hierarchy):
    with pytest.raises(BadInputError, match="malformed policy OID"):
        IssuingCaCertificateParams(ca_name([("CN", "X")]), ("not.an.oid",), Validity(START, years(1)))
    with pytest.raises(BadInputError, match="notAfter must be 99991231235959Z"):
        DeviceCertificateParams(EUI64.parse("00DB1234567890A0"), HW_TYPE, KeyUsage.KEY_AGREEMENT, DEVICE_POLICY, Validity(START, years(5)))
    with pytest.raises(BadInputError, match="for CA certificates"):
        OrganisationCertificateParams(RemotePartyRole.ISSUING_AUTHORITY, EUI64.parse("90B3D51F30010000"), KeyUsage.KEY_AGREEMENT, ORG_POLICY, Validity(START, years(1)))
    with pytest.raises(BadInputError, match="lies outside the issuer"):
        organisation_certificate(OrganisationCertificateParams(
            RemotePartyRole.SUPPLIER, EUI64.parse("90B3D51F30010000"), KeyUsage.KEY_AGREEMENT, ORG_POLICY,
            Validity(START, years(40))), ec.generate_private_key(ec.SECP256R1()).public_key(), hierarchy["issuing-oca"])
    with pytest.raises(BadInputError, match="not a PrintableString"):
        ca_name([("CN", "Zé")])
    with pytest.raises(BadInputError, match="ends .* before it starts"):
        Validity(START, START - timedelta(days=1))


def test_pre_issuance_check_runs_before_the_hsm_signs(new_hsm_key, hierarchy):
    _, signer = new_hsm_key()
    calls = []
    original = signer.sign
    signer.sign = lambda data: calls.append("hsm") or original(data)

    def refuse(draft):
        calls.append(("lint", draft.serial_number))
        raise BadInputError("lint says no")

    builder = root_certificate(RootCertificateParams(ca_name([("CN", "R")]), (ORG_POLICY,), Validity(START, years(1))), signer.public_key)
    with pytest.raises(BadInputError, match="lint says no"):
        sign_certificate(builder, signer, pre_issuance_check=refuse)
    assert calls and calls[-1][0] == "lint" and "hsm" not in calls


def test_pkilint_rfc5280_reports_no_warning_or_error(hierarchy, fixtures_dir):
    from smki.profiles.lint.pkix import rfc5280_findings
    for name, certificate in hierarchy.items():
        assert rfc5280_findings(der(certificate)) == [], name
    for fixture in sorted(fixtures_dir.glob("*.pem")):  # the checker itself accepts the real certificates
        assert rfc5280_findings(der(load_fixture(fixtures_dir, fixture.name))) == [], fixture.name


def test_pkilint_check_can_fail(hierarchy):
    """A certificate with a non-critical basicConstraints on a CA: pkilint must flag it."""
    from smki.profiles.lint.pkix import rfc5280_findings
    from cryptography import x509 as cx
    signer = SoftwareSigner()
    builder = (cx.CertificateBuilder().serial_number(1).issuer_name(ca_name([("CN", "X")])).subject_name(ca_name([("CN", "X")]))
               .not_valid_before(START).not_valid_after(years(1)).public_key(signer.public_key)
               .add_extension(cx.KeyUsage(False, False, False, False, False, True, True, False, False), critical=False)
               .add_extension(cx.BasicConstraints(ca=True, path_length=None), critical=False))
    findings = rfc5280_findings(der(sign_certificate(builder, signer)))
    assert findings, "pkilint found nothing wrong with a CA lacking SKI and with non-critical basicConstraints"


def test_smki_lint_finds_nothing_in_any_profile(hierarchy):
    from smki.profiles.lint import lint_certificate
    for name, certificate in hierarchy.items():
        kind, findings = lint_certificate(der(certificate), expected_policy_oids=(ORG_POLICY, DEVICE_POLICY))
        assert findings == [] and kind == {"organisation": "organisation", "device": "device"}.get(name, name.split("-")[0].replace("issuing", "issuing-ca")), (name, findings)


def test_serials_drawn_together_are_each_sixteen_octets_positive_and_distinct():
    from asn1crypto import core

    from smki.profiles.serials import new_serial_numbers
    serials = new_serial_numbers(2000)
    assert len(set(serials)) == 2000
    for serial in serials:
        encoded = core.Integer(serial).dump()  # independent DER encoder
        assert encoded[1] == 16 and 0x40 <= encoded[2] < 0x80, encoded.hex()
