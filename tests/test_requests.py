"""PKCS#10 intake: every accepted encoding, proof of possession, and each field rule with its outcome code."""

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import PublicFormat

import csr_factory as f
from conftest import openssl
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.requests import Outcome, RequestRejected, parse_device_request, parse_organisation_request


def armour(der, label="CERTIFICATE REQUEST", width=64, newline=b"\n"):
    body = base64.b64encode(der)
    lines = [body[i:i + width] for i in range(0, len(body), width)]
    return newline.join([f"-----BEGIN {label}-----".encode(), *lines, f"-----END {label}-----".encode(), b""])


@pytest.fixture(scope="module")
def org_der():
    return f.organisation_csr()


def encodings(der):
    body = base64.b64encode(der)
    wrap = lambda width, nl: nl.join(body[i:i + width] for i in range(0, len(body), width))
    return {
        "der": der,
        "pem": armour(der),
        "new-pem": armour(der, "NEW CERTIFICATE REQUEST"),
        "pem-crlf": armour(der, newline=b"\r\n"),
        "pem-76": armour(der, width=76),
        "bare-one-line": body,
        "bare-64-lf": wrap(64, b"\n"),
        "bare-76-crlf": wrap(76, b"\r\n") + b"\r\n",
    }


@pytest.mark.parametrize("encoding", list(encodings(b"\x30\x00")))
def test_every_accepted_encoding(org_der, encoding):
    request = parse_organisation_request(encodings(org_der)[encoding])
    assert request.role is RemotePartyRole.SUPPLIER and request.entity_id == EUI64.parse("90B3D51F30010000")
    assert request.common_name == "GITTESTSUPPLIER" and request.key_usage is KeyUsage.DIGITAL_SIGNATURE


def test_an_openssl_made_device_request_is_accepted(tmp_path):
    """An independent producer: openssl req with an empty subject and the HardwareModuleName SAN."""
    (tmp_path / "req.cnf").write_text(
        "[req]\nprompt=no\ndistinguished_name=dn\nreq_extensions=ext\n[dn]\n[ext]\n"
        "keyUsage=critical,keyAgreement\nsubjectAltName=critical,otherName:1.3.6.1.5.5.7.8.4;SEQUENCE:hmn\n"
        f"[hmn]\nhwType=OID:{f.HW_TYPE}\nhwSerialNum=FORMAT:HEX,OCTETSTRING:00DB1234567890A0\n")
    assert openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(tmp_path / "k.pem")).returncode == 0
    made = openssl("req", "-new", "-key", str(tmp_path / "k.pem"), "-config", str(tmp_path / "req.cnf"), "-subj", "/", "-sha256", "-out", str(tmp_path / "d.csr"))
    assert made.returncode == 0, made.stderr
    request = parse_device_request((tmp_path / "d.csr").read_bytes())
    assert request.device_id == EUI64.parse("00DB1234567890A0") and request.hw_type_oid == f.HW_TYPE
    assert request.key_usage is KeyUsage.KEY_AGREEMENT


def test_a_good_device_request():
    request = parse_device_request(f.device_csr(usage="digital_signature"))
    assert request.device_id.hex == "00DB1234567890A0" and request.key_usage is KeyUsage.DIGITAL_SIGNATURE


KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize("data, outcome, fragment", [
    (b"", Outcome.NOT_DECODABLE, "empty"),
    (b"hello, world", Outcome.NOT_DECODABLE, "neither DER nor Base64"),
    (armour(b"\x30\x00")[:-30], Outcome.NOT_DECODABLE, "armour"),
    (b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", Outcome.NOT_DECODABLE, "armour"),
    (base64.b64encode(b"\x02\x01\x00"), Outcome.NOT_PKCS10, "not a DER SEQUENCE"),
    (b"\x30\x03\x02\x01\x00", Outcome.NOT_PKCS10, "not a PKCS#10"),
    (b"\x30" * 20000, Outcome.NOT_DECODABLE, "over the"),
])
def test_undecodable_requests(data, outcome, fragment):
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(data, "batch/x.csr")
    assert caught.value.outcome is outcome and fragment in str(caught.value)
    assert str(caught.value).startswith(f"batch/x.csr: {outcome.code} ")


@pytest.mark.parametrize("make, outcome, fragment", [
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("digital_signature")], version=1), Outcome.WRONG_VERSION, "version must be 0"),
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("digital_signature")], corrupt_signature=True), Outcome.BAD_SIGNATURE, "proof of possession"),
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("digital_signature")], public_key_info=f.spki(ec.generate_private_key(ec.SECP256R1()))), Outcome.BAD_SIGNATURE, "does not verify"),
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("digital_signature")], public_key_info=f.spki(KEY, PublicFormat.CompressedPoint)), Outcome.WRONG_KEY, "not uncompressed"),
    (lambda: f.build_csr(ec.generate_private_key(ec.SECP384R1()), f.org_subject(), [f.key_usage("digital_signature")]), Outcome.WRONG_KEY, "not P-256"),
    (lambda: f.build_csr(rsa.generate_private_key(65537, 2048), f.org_subject(), [f.key_usage("digital_signature")], algorithm="1.2.840.113549.1.1.11"), Outcome.WRONG_SIGNATURE_ALGORITHM, "not ecdsa-with-SHA256"),
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("digital_signature", "key_agreement")]), Outcome.WRONG_KEY_USAGE, "digital_signature, key_agreement"),
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("key_cert_sign")]), Outcome.WRONG_KEY_USAGE, "key_cert_sign"),
    (lambda: f.build_csr(KEY, f.org_subject(), []), Outcome.WRONG_KEY_USAGE, "no keyUsage"),
    (lambda: f.build_csr(KEY, f.org_subject(extra=[("2.5.4.10", f.UTF8, b"ACME")]), [f.key_usage("digital_signature")]), Outcome.WRONG_SUBJECT, "2.5.4.10 is not allowed"),
    (lambda: f.build_csr(KEY, f.org_subject(role="2"), [f.key_usage("digital_signature")]), Outcome.WRONG_SUBJECT, "not two uppercase hex digits"),
    (lambda: f.build_csr(KEY, f.name(("2.5.4.11", f.UTF8, b"02")), [f.key_usage("digital_signature")]), Outcome.WRONG_SUBJECT, "must hold OU"),
    (lambda: f.build_csr(KEY, f.org_subject(uid_tag=f.OCTET_STRING), [f.key_usage("digital_signature")]), Outcome.MALFORMED_IDENTIFIER, "not a BIT STRING"),
    (lambda: f.build_csr(KEY, f.org_subject(eui64="90B3D51F300100"), [f.key_usage("digital_signature")]), Outcome.MALFORMED_IDENTIFIER, "7 octets"),
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("digital_signature"), f.hardware_module_name_san()]), Outcome.UNEXPECTED_EXTENSION, "2.5.29.17"),
])
def test_organisation_request_rules(make, outcome, fragment):
    with pytest.raises(RequestRejected) as caught:
        parse_organisation_request(make())
    assert caught.value.outcome is outcome, str(caught.value)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("make, outcome, fragment", [
    (lambda: f.build_csr(KEY, f.org_subject(), [f.key_usage("key_agreement"), f.hardware_module_name_san()]), Outcome.WRONG_SUBJECT, "must be empty"),
    (lambda: f.build_csr(KEY, b"\x30\x00", [f.key_usage("key_agreement")]), Outcome.WRONG_SUBJECT_ALT_NAME, "no subjectAltName"),
    (lambda: f.build_csr(KEY, b"\x30\x00", [f.key_usage("key_agreement"), f.hardware_module_name_san(eui64="00DB12345678")]), Outcome.MALFORMED_IDENTIFIER, "6 octets"),
    (lambda: f.build_csr(KEY, b"\x30\x00", [f.key_usage("key_agreement", "digital_signature"), f.hardware_module_name_san()]), Outcome.WRONG_KEY_USAGE, "exactly"),
    (lambda: f.build_csr(KEY, b"\x30\x00", [f.key_usage("key_agreement"), ("2.5.29.17", True, f.tlv(0x30, f.tlv(0x82, b"meter.example")))]), Outcome.WRONG_SUBJECT_ALT_NAME, "exactly one otherName"),
])
def test_device_request_rules(make, outcome, fragment):
    with pytest.raises(RequestRejected) as caught:
        parse_device_request(make())
    assert caught.value.outcome is outcome, str(caught.value)
    assert fragment in str(caught.value)


def test_request_digest_identifies_the_request(org_der):
    import hashlib
    assert parse_organisation_request(armour(org_der)).request_sha256 == hashlib.sha256(org_der).hexdigest()
