"""The batch fast paths: the DER device template equals the profile builder byte for byte, and the
canonical CSR parser accepts only what the full parser accepts, with the same fields."""

import base64
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import csr_factory as f
from smki.errors import BadInputError
from smki.hsm.signer import SoftwareSigner
from smki.identifiers import EUI64, KeyUsage
from smki.profiles import DeviceCertificateParams, IssuingCaCertificateParams, device_certificate, issuing_ca_certificate, sign_certificate
from smki.profiles.device_template import DeviceCertificateTemplate, certificate_der, check_against_builder
from smki.profiles.lint import lint_certificate
from smki.profiles.names import ca_name
from smki.profiles.validity import DEVICE_NOT_AFTER, Validity
from smki.requests import parse_device_request
from smki.requests.canonical import canonical_fields
from smki.requests.csr import _parse_device_request

POLICY = "1.2.826.0.1.1800000.1.2.1.4"
HW_TYPES = ("1.2.826.0.1.8641679.1.2.2.1", "1.2.826.0.1.8641679.1.1.2.1", "1.3.6.1.4.1.99999.1")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def issuing_dca():
    key = SoftwareSigner()
    params = IssuingCaCertificateParams(ca_name([("CN", "E357")]), (POLICY,), Validity(START, START + timedelta(days=9000)))
    # Self-issued for this test: only the issuer's subject, SKI and validity matter to the template.
    issuer_stub = sign_certificate(issuing_ca_certificate(params, key.public_key, _self_stub(key, params)), key)
    return key, issuer_stub


def _self_stub(key, params):
    from smki.profiles import RootCertificateParams, root_certificate
    root = RootCertificateParams(params.subject, params.policy_oids, Validity(START, START + timedelta(days=9999)))
    return sign_certificate(root_certificate(root, key.public_key), key)


@pytest.mark.parametrize("usage", list(KeyUsage))
@pytest.mark.parametrize("hw_type", HW_TYPES)
def test_template_equals_the_profile_builder(issuing_dca, usage, hw_type):
    key, issuer = issuing_dca
    validity = Validity(START + timedelta(days=3), DEVICE_NOT_AFTER)
    template = DeviceCertificateTemplate.for_issuer(issuer, POLICY, validity)
    for device in ("00DB1234567890A0", "0000000000000001", "FFFFFFFFFFFFFFFF"):
        subject_key = ec.generate_private_key(ec.SECP256R1()).public_key()
        params = DeviceCertificateParams(EUI64.parse(device), hw_type, usage, POLICY, validity)
        draft = sign_certificate(device_certificate(params, subject_key, issuer), key)
        check_against_builder(template, params, subject_key, issuer, draft)  # raises on any byte of difference
        point = subject_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        tbs = template.tbs_certificate(draft.serial_number, point, EUI64.parse(device).octets, hw_type, usage.value)
        assembled = x509.load_der_x509_certificate(certificate_der(tbs, key.sign(tbs)))
        assembled.verify_directly_issued_by(issuer)
        assert assembled.tbs_certificate_bytes == draft.tbs_certificate_bytes
        kind, findings = lint_certificate(certificate_der(tbs, key.sign(tbs)), expected_policy_oids=(POLICY,),
                                          issuer_subject_der=issuer.subject.public_bytes())
        assert kind == "device" and findings == []


def test_a_template_that_drifts_from_the_profile_is_refused(issuing_dca):
    key, issuer = issuing_dca
    validity = Validity(START + timedelta(days=3), DEVICE_NOT_AFTER)
    other_policy = DeviceCertificateTemplate.for_issuer(issuer, "1.2.3.4", validity)
    subject_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    params = DeviceCertificateParams(EUI64.parse("00DB1234567890A0"), HW_TYPES[0], KeyUsage.KEY_AGREEMENT, POLICY, validity)
    draft = sign_certificate(device_certificate(params, subject_key, issuer), key)
    with pytest.raises(BadInputError, match="template differs"):
        check_against_builder(other_policy, params, subject_key, issuer, draft)


def test_template_refuses_a_validity_outside_the_issuer(issuing_dca):
    _, issuer = issuing_dca
    with pytest.raises(BadInputError, match="before its issuer"):
        DeviceCertificateTemplate.for_issuer(issuer, POLICY, Validity(START - timedelta(days=1), DEVICE_NOT_AFTER))


def _pem(der: bytes, label="CERTIFICATE REQUEST") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return f"-----BEGIN {label}-----\r\n".encode() + body + f"-----END {label}-----\r\n".encode()


@pytest.mark.parametrize("usage", ["digital_signature", "key_agreement"])
def test_canonical_path_gives_the_full_parser_fields(usage):
    der = f.device_csr(usage=usage, eui64="00DB0000000000FF")
    fast, full = canonical_fields(der), _parse_device_request(der, "x")
    assert fast is not None, "a factory-made device CSR is in the canonical shape"
    assert (fast.hw_serial, fast.hw_type_oid, fast.key_usage, fast.request_sha256) == (
        full.device_id.octets, full.hw_type_oid, full.key_usage.value, full.request_sha256)
    assert fast.public_key.public_numbers() == full.public_key.public_numbers()
    assert parse_device_request(_pem(der)) == parse_device_request(der)


def test_an_openssl_made_device_request_takes_the_canonical_path(tmp_path):
    import subprocess
    key = tmp_path / "k.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)], check=True)
    config = tmp_path / "req.cnf"
    config.write_text("[req]\ndistinguished_name=dn\nprompt=no\n[dn]\n[ext]\nkeyUsage=critical,keyAgreement\n"
                      "subjectAltName=critical,otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn\n"
                      "[hmn]\nhwType=OID:1.2.826.0.1.8641679.1.2.2.1\nhwSerialNum=FORMAT:HEX,OCTETSTRING:00DB1234567890A0\n")
    csr = subprocess.run(["openssl", "req", "-new", "-key", str(key), "-config", str(config), "-reqexts", "ext", "-outform", "DER",
                          "-subj", "/"], capture_output=True, check=True).stdout
    fast, full = canonical_fields(csr), _parse_device_request(csr, "x")
    assert fast is not None
    assert (fast.hw_serial, fast.key_usage, fast.hw_type_oid) == (full.device_id.octets, full.key_usage.value, full.hw_type_oid)


BROKEN = {
    "bad signature": lambda: f.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00",
                                         [f.key_usage("key_agreement"), f.hardware_module_name_san()], corrupt_signature=True),
    "two key usages": lambda: f.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00",
                                          [f.key_usage("key_agreement", "digital_signature"), f.hardware_module_name_san()]),
    "compressed point": lambda: (lambda k: f.build_csr(k, b"\x30\x00", [f.key_usage("key_agreement"), f.hardware_module_name_san()],
                                                       public_key_info=f.spki(k, PublicFormat.CompressedPoint)))(ec.generate_private_key(ec.SECP256R1())),
    "wrong curve": lambda: f.build_csr(ec.generate_private_key(ec.SECP384R1()), b"\x30\x00",
                                       [f.key_usage("key_agreement"), f.hardware_module_name_san()]),
    "no SAN": lambda: f.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00", [f.key_usage("key_agreement")]),
    "subject not empty": lambda: f.build_csr(ec.generate_private_key(ec.SECP256R1()), f.org_subject(),
                                             [f.key_usage("key_agreement"), f.hardware_module_name_san()]),
    "short hwSerialNum": lambda: f.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00",
                                             [f.key_usage("key_agreement"), f.hardware_module_name_san(eui64="00DB12345678")]),
    "version 1": lambda: f.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00",
                                     [f.key_usage("key_agreement"), f.hardware_module_name_san()], version=1),
    "trailing byte": lambda: f.device_csr() + b"\x00",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_canonical_path_never_accepts_a_broken_request(case):
    assert canonical_fields(BROKEN[case]()) is None


def test_learnt_layouts_accept_only_what_the_walker_would():
    import smki.requests.canonical as canonical
    canonical._LAYOUTS.clear()
    good = f.device_csr(usage="key_agreement", eui64="00DB0000000000C1")
    assert canonical_fields(good) is not None and len(canonical._LAYOUTS) == 1
    # Same layout, other key, serial and usage: taken by the learnt layout, same fields as the full parser.
    other = f.device_csr(usage="digital_signature", eui64="00DB0000000000C2")
    fast, full = canonical_fields(other), _parse_device_request(other, "x")
    assert len(canonical._LAYOUTS) == 1 and fast.key_usage == "DS" and fast.hw_serial == full.device_id.octets
    # Same layout but a broken signature, a usage outside the two allowed, a compressed-point marker: refused.
    broken = bytearray(other)
    broken[-1] ^= 1
    assert canonical_fields(bytes(broken)) is None
    usage_at = other.index(bytes.fromhex("03020780"))
    two_usages = other[:usage_at] + bytes.fromhex("03020588") + other[usage_at + 4:]
    assert canonical_fields(two_usages) is None
    point_at = other.index(bytes.fromhex("034200")) + 3
    compressed_marker = other[:point_at] + b"\x02" + other[point_at + 1:]
    assert canonical_fields(compressed_marker) is None
    # The learnt layout never widens what is accepted: every broken request still fails.
    for make in BROKEN.values():
        assert canonical_fields(make()) is None
