"""The Ad Hoc Device CSR web service and Organisation CSR submission (smki.web.adhoc, smki.web.organisation)
through aiohttp's test client, against a real test PKI on SoftHSM: each status, the certificate checked with
openssl against the Issuing Authority's chain, nothing issued on a refusal, every request audited.

The test app stands in for web-core's: a middleware sets request[CALLER] from the X-Test-Caller header (the
caller middleware identifies it from the TLS client certificate in the service), and the actors are
IssuingAuthority objects of their own, opened in the handlers' single executor thread."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from lxml import etree

from smki import IssuingAuthority, KeyRef
from smki.identifiers import EUI64, RemotePartyRole
from smki.register import Interface, Subscriber, SubscriberStatus
from smki.testing import TestPKI
from smki.testing.service import lab_policies
from smki.web import adhoc, context, organisation
from smki.web import messages as m
from smki.web.context import CALLER, SERVICES, Caller

BUILD = "test-build-1"
SUPPLIER = Subscriber("acme-supplier", EUI64.parse("90-B3-D5-1F-30-01-00-00"), (RemotePartyRole.SUPPLIER,),
                      frozenset({Interface.ADHOC_DEVICE, Interface.ORGANISATION}))
TWO_ROLES = Subscriber("acme-both", EUI64.parse("90-B3-D5-1F-30-01-00-01"), (RemotePartyRole.SUPPLIER, RemotePartyRole.NETWORK_OPERATOR),
                       frozenset({Interface.ADHOC_DEVICE, Interface.ORGANISATION}))
BROKER = Subscriber("acme-acb", EUI64.parse("90-B3-D5-1F-30-01-00-02"), (RemotePartyRole.ACCESS_CONTROL_BROKER,),
                    frozenset({Interface.ADHOC_DEVICE, Interface.ORGANISATION}))
CALLERS = {subscriber.name: subscriber for subscriber in (SUPPLIER, TWO_ROLES, BROKER)}
AUDIT_KEY = web.AppKey("test.audit", object)


class Recorder:
    def __init__(self) -> None:
        self.entries: list[dict] = []

    def record(self, **entry) -> None:
        self.entries.append(entry)


class Services:
    """A worker's services for the test app: the test PKI's Issuing OCA and DCA as objects of their own."""

    build = BUILD

    def __init__(self, pki, dca_key: KeyRef | None = None) -> None:
        def authority(name: str, hierarchy: str, key: KeyRef | None = None) -> IssuingAuthority:
            return IssuingAuthority(pki.state(name), certificate=pki.certificate_file(name), key=key or pki.key(name),
                                    pin=pki.token.pin, policy=pki.policy_file(hierarchy), environment=pki.environment,
                                    actor="csr-web-service")
        self._oca = authority("issuing-oca", "organisation")
        self._dca = authority("issuing-dca", "device", dca_key)

    def issuing_oca(self):
        return self._oca

    def issuing_dca(self):
        return self._dca


@web.middleware
async def caller_from_header(request, handler):
    request[CALLER] = Caller(CALLERS[request.headers.get("X-Test-Caller", SUPPLIER.name)], "ab" * 32, "127.0.0.1")
    return await handler(request)


@pytest.fixture(scope="module")
def smki_pki(smki_token, tmp_path_factory):
    """This module's test PKI, under the lab's usage rules: the SEC's ad hoc interval (0.8 s per subscriber) would
    refuse a test's quick requests (tests/test_usage_rules.py checks that interval)."""
    directory = tmp_path_factory.mktemp("adhoc-lab-pki")
    with TestPKI.create(directory / "pki", token=smki_token, policies=lab_policies(directory / "policies")) as pki:
        yield pki


@pytest.fixture(scope="module")
def services(smki_pki):
    return Services(smki_pki)


@pytest.fixture
def recorder(monkeypatch):
    monkeypatch.setattr(context, "AUDIT", AUDIT_KEY, raising=False)  # web-core's recorder key, until it lands
    return Recorder()


def post(services, recorder, path: str, body: bytes, headers: dict | None = None):
    """POST `body` to the test app; (HTTP status, Content-Type, answer bytes)."""
    async def scenario():
        app = web.Application(middlewares=[caller_from_header])
        app[SERVICES] = services
        app[AUDIT_KEY] = recorder
        adhoc.add_routes(app)
        organisation.add_routes(app)
        async with TestClient(TestServer(app)) as client:
            response = await client.post(path, data=body, headers=headers or {})
            return response.status, response.headers.get("Content-Type"), await response.read()
    return asyncio.run(scenario())


def adhoc_request(csr_der: bytes, client_id: str = "client-1") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><DeviceCertificateSigningRequest ID="{client_id}"><Version>1.0</Version>'
            f"<CertificateSigningRequest>{base64.b64encode(csr_der).decode()}</CertificateSigningRequest>"
            "</DeviceCertificateSigningRequest>").encode()


def answer_of(body: bytes, schema: m.Schema) -> etree._Element:
    assert m.validate(body, schema) == []
    return etree.fromstring(body)


def issued_count(pki) -> int:
    return len(pki.issuing_dca.list()) + len(pki.issuing_oca.list())


def openssl_verify(tmp_path: Path, pki, certificate_der: bytes, hierarchy: str) -> str:
    root, issuing = {"device": ("root-dca", "issuing-dca"), "organisation": ("root-oca", "issuing-oca")}[hierarchy]
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(x509.load_der_x509_certificate(certificate_der).public_bytes(Encoding.PEM))
    result = subprocess.run(["openssl", "verify", "-CAfile", str(pki.certificate_file(root)), "-untrusted",
                             str(pki.certificate_file(issuing)), str(leaf)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


_serial = iter(range(0x100000, 0x200000))


def fresh_device(pki, with_certificate: bool = True) -> str:
    eui64 = f"00DB1234{next(_serial):08X}"
    if with_certificate:
        pki.device_certificate(eui64)
    return eui64


# -- the ad hoc service -----------------------------------------------------------------------------
def test_a_replacement_request_is_issued_and_verifies_against_the_issuing_dca(smki_pki, services, recorder, tmp_path):
    eui64 = fresh_device(smki_pki)
    request = smki_pki.device_csr(eui64, usage="KA")
    before = issued_count(smki_pki)
    status, content_type, body = post(services, recorder, adhoc.PATH, adhoc_request(request.der, "replace-1"))
    assert (status, content_type) == (200, m.CONTENT_TYPE)
    answer = answer_of(body, m.Schema.ADHOC)
    assert answer.get("ID") == "replace-1" and answer.findtext("Status") == "SUCCESS" and answer.findtext("Build") == BUILD
    assert int(answer.findtext("TransactionId")) > 0
    der = base64.b64decode(answer.findtext("Certificate"), validate=True)
    assert "OK" in openssl_verify(tmp_path, smki_pki, der, "device")
    certificate = x509.load_der_x509_certificate(der)
    assert certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) == \
        request.private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert issued_count(smki_pki) == before + 1
    assert smki_pki.issuing_dca.show(f"{certificate.serial_number:X}")  # recorded in the Issuing DCA's state
    assert recorder.entries == [dict(interface=Interface.ADHOC_DEVICE, operation="adhoc-submit", status="SUCCESS", code=None,
                                     client_id="replace-1", subscriber=SUPPLIER.name, fingerprint="ab" * 32, address="127.0.0.1")]


def test_transaction_ids_differ_between_answers(smki_pki, services, recorder):
    ids = {int(answer_of(post(services, recorder, adhoc.PATH, b"<bad/>")[2], m.Schema.ADHOC).findtext("TransactionId")) for _ in range(5)}
    assert len(ids) == 5 and min(ids) > 0


def refused(smki_pki, services, recorder, body: bytes, headers: dict | None = None, path: str = adhoc.PATH,
            schema: m.Schema = m.Schema.ADHOC) -> etree._Element:
    """The answer to a request that must be refused: HTTP 200, valid, no certificate, nothing issued, audited."""
    before = issued_count(smki_pki)
    status, _, answer_body = post(services, recorder, path, body, headers)
    answer = answer_of(answer_body, schema)
    assert status == 200 and answer.find("Certificate") is None and answer.find("Error/ErrorCode") is not None
    assert issued_count(smki_pki) == before
    assert recorder.entries[-1]["status"] == answer.findtext("Status") and recorder.entries[-1]["code"] == answer.findtext("Error/ErrorCode")
    return answer


def status_and_code(answer) -> tuple[str, str]:
    return answer.findtext("Status"), answer.findtext("Error/ErrorCode")


def test_a_device_with_no_certificate_is_unknown_device(smki_pki, services, recorder):
    request = smki_pki.device_csr(fresh_device(smki_pki, with_certificate=False))
    answer = refused(smki_pki, services, recorder, adhoc_request(request.der))
    assert status_and_code(answer) == ("UNKNOWN_DEVICE", "UD:UD1") and answer.get("ID") == "client-1"


@pytest.mark.parametrize("body, echoed", [
    (b"not xml at all", None), (b"<DeviceCertificateSigningResponse/>", None),
    (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><DeviceCertificateSigningRequest ID="a">'
     b"<Version>&x;</Version></DeviceCertificateSigningRequest>", None),
    (b'<DeviceCertificateSigningRequest ID="pem"><Version>1.0</Version><CertificateSigningRequest>-----BEGIN CERTIFICATE REQUEST-----'
     b"MAMCAQU=-----END CERTIFICATE REQUEST-----</CertificateSigningRequest></DeviceCertificateSigningRequest>", "pem")])
def test_bad_xml_is_format_error_with_the_id_when_it_could_be_read(smki_pki, services, recorder, body, echoed):
    answer = refused(smki_pki, services, recorder, body)
    assert status_and_code(answer) == ("FORMAT_ERROR", "FM:AA1") and answer.get("ID") == echoed


def test_a_body_over_64_kib_is_format_error(smki_pki, services, recorder):
    body = adhoc_request(b"\x30" * 10).replace(b"<Version>", b"<!--" + b"x" * (64 * 1024) + b"--><Version>")
    answer = refused(smki_pki, services, recorder, body)
    assert status_and_code(answer) == ("FORMAT_ERROR", "FM:AA4") and answer.get("ID") is None


def test_a_csr_that_is_no_pkcs10_or_badly_signed_is_csr_error(smki_pki, services, recorder):
    assert status_and_code(refused(smki_pki, services, recorder, adhoc_request(bytes([0x30, 3, 2, 1, 5])))) == ("CSR_ERROR", "CR:CR1")
    request = bytearray(smki_pki.device_csr(fresh_device(smki_pki)).der)
    request[-3] ^= 0x01  # inside the signature's s: the proof of possession fails
    assert status_and_code(refused(smki_pki, services, recorder, adhoc_request(bytes(request)))) == ("CSR_ERROR", "CR:0003")


def test_a_device_at_its_cap_is_an_issuance_anomaly(smki_pki, services, recorder):
    eui64 = fresh_device(smki_pki, with_certificate=False)
    for _ in range(100):  # the shipped device policy's per_device_cap
        smki_pki.device_certificate(eui64)
    answer = refused(smki_pki, services, recorder, adhoc_request(smki_pki.device_csr(eui64).der))
    assert status_and_code(answer) == ("ISSUANCE_ANOMALY", "CA:CA2")


def test_an_ineligible_requester_is_workflow_error(smki_pki, services, recorder):
    request = smki_pki.device_csr(fresh_device(smki_pki))
    answer = refused(smki_pki, services, recorder, adhoc_request(request.der), {"X-Test-Caller": BROKER.name})
    assert status_and_code(answer) == ("WORKFLOW_ERROR", "WF:WF2")
    assert recorder.entries[-1]["subscriber"] == BROKER.name


@pytest.mark.parametrize("role", [None, "accessControlBroker", "no-such-role"])
def test_a_role_the_caller_does_not_name_or_hold_is_workflow_error(smki_pki, services, recorder, role):
    headers = {"X-Test-Caller": TWO_ROLES.name} | ({"X-SMKI-Role": role} if role else {})
    answer = refused(smki_pki, services, recorder, adhoc_request(smki_pki.device_csr(fresh_device(smki_pki)).der), headers)
    assert status_and_code(answer) == ("WORKFLOW_ERROR", "WF:WF1")


def test_a_caller_with_several_roles_acts_for_the_one_it_names(smki_pki, services, recorder):
    request = smki_pki.device_csr(fresh_device(smki_pki))
    _, _, body = post(services, recorder, adhoc.PATH, adhoc_request(request.der),
                      {"X-Test-Caller": TWO_ROLES.name, "X-SMKI-Role": "networkOperator"})
    assert answer_of(body, m.Schema.ADHOC).findtext("Status") == "SUCCESS"


def test_an_hsm_failure_is_ca_error_and_says_nothing_of_it(smki_pki, recorder, caplog):
    broken = Services(smki_pki, dca_key=KeyRef(smki_pki.key("issuing-dca").token_label, "no-such-key", b"\x7f\x7f"))
    request = smki_pki.device_csr(fresh_device(smki_pki))
    answer = refused(smki_pki, broken, recorder, adhoc_request(request.der))
    assert status_and_code(answer) == ("CA_ERROR", "CA:0001")
    assert "no-such-key" not in answer.findtext("Error/ErrorText")


# -- Organisation CSRs --------------------------------------------------------------------------------
def _encodings(der: bytes) -> dict[str, bytes]:
    text = base64.b64encode(der).decode()
    wrap = lambda width, eol: eol.join(text[i:i + width] for i in range(0, len(text), width))  # noqa: E731
    return {"der": der,
            "pem-crlf-64": f"-----BEGIN CERTIFICATE REQUEST-----\r\n{wrap(64, chr(13) + chr(10))}\r\n-----END CERTIFICATE REQUEST-----\r\n".encode(),
            "new-pem-lf-76": f"-----BEGIN NEW CERTIFICATE REQUEST-----\n{wrap(76, chr(10))}\n-----END NEW CERTIFICATE REQUEST-----\n".encode(),
            "bare-one-line": text.encode(), "bare-lf-64": wrap(64, "\n").encode()}


@pytest.mark.parametrize("encoding", ["der", "pem-crlf-64", "new-pem-lf-76", "bare-one-line", "bare-lf-64"])
def test_an_organisation_csr_in_each_portal_encoding_is_issued(smki_pki, services, recorder, tmp_path, encoding):
    request = smki_pki.organisation_csr(SUPPLIER.eui64, role="supplier", usage="DS")  # the caller's own Entity Identifier
    status, content_type, body = post(services, recorder, organisation.PATH + "?ID=org-1", _encodings(request.der)[encoding])
    answer = answer_of(body, m.Schema.ORGANISATION)
    assert (status, content_type, answer.get("ID"), answer.findtext("Status")) == (200, m.CONTENT_TYPE, "org-1", "SUCCESS")
    der = base64.b64decode(answer.findtext("Certificate"), validate=True)
    assert "OK" in openssl_verify(tmp_path, smki_pki, der, "organisation")
    subject = x509.load_der_x509_certificate(der).subject
    assert [a.value for a in subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)] == ["02"]
    assert recorder.entries[-1]["interface"] is Interface.ORGANISATION and recorder.entries[-1]["status"] == "SUCCESS"


def test_an_organisation_csr_for_a_role_the_requester_may_not_request_is_workflow_error(smki_pki, services, recorder):
    request = smki_pki.organisation_csr("90-B3-D5-1F-30-01-7F-01", role="networkOperator")
    answer = refused(smki_pki, services, recorder, request.der, path=organisation.PATH, schema=m.Schema.ORGANISATION)
    assert status_and_code(answer) == ("WORKFLOW_ERROR", "WF:WF2") and answer.get("ID") is None


@pytest.mark.parametrize("body, code", [(b"not a request", "CR:CR1"), (b"", "CR:CR1")])
def test_an_organisation_body_that_is_no_csr_is_csr_error(smki_pki, services, recorder, body, code):
    answer = refused(smki_pki, services, recorder, body, path=organisation.PATH, schema=m.Schema.ORGANISATION)
    assert status_and_code(answer) == ("CSR_ERROR", code)


@pytest.mark.parametrize("client_id", ["%01", "%EF%BF%BE", "%C2%85", "a%E2%80%AEb"])
def test_an_organisation_id_that_is_not_printable_is_format_error_and_the_answer_stays_xml(smki_pki, services, recorder, client_id):
    """The ID query parameter is echoed as the answer's ID attribute: "\x01" or U+FFFE made the answer not XML at all
    (a SUCCESS the client could not read, with a certificate issued). Now refused whole, unechoed."""
    request = smki_pki.organisation_csr(SUPPLIER.eui64, role="supplier", usage="DS")
    answer = refused(smki_pki, services, recorder, request.der, path=organisation.PATH + "?ID=" + client_id,
                     schema=m.Schema.ORGANISATION)  # refused: well-formed, schema-valid, nothing issued, audited
    assert status_and_code(answer) == ("FORMAT_ERROR", "FM:AA1") and answer.get("ID") is None


def test_a_suspended_subscriber_value_is_not_what_the_handlers_check():
    """The caller middleware (web-core) refuses suspended subscribers before any handler runs; the handlers rely on it."""
    assert not SUPPLIER.__class__(SUPPLIER.name, SUPPLIER.eui64, SUPPLIER.roles, SUPPLIER.interfaces,
                                  SubscriberStatus.SUSPENDED).may_use(Interface.ADHOC_DEVICE)
    assert getattr(adhoc.submit, context.INTERFACE_ATTRIBUTE) is Interface.ADHOC_DEVICE
    assert getattr(organisation.submit, context.INTERFACE_ATTRIBUTE) is Interface.ORGANISATION


def test_the_same_request_twice_is_issued_once(smki_pki, services, recorder):
    request = smki_pki.device_csr(fresh_device(smki_pki))
    first = answer_of(post(services, recorder, adhoc.PATH, adhoc_request(request.der))[2], m.Schema.ADHOC)
    assert first.findtext("Status") == "SUCCESS"
    answer = refused(smki_pki, services, recorder, adhoc_request(request.der))
    assert status_and_code(answer) == ("CSR_ERROR", "CR:9999")


def test_an_organisation_csr_for_another_partys_entity_identifier_is_refused(smki_pki, services, recorder):
    """Online, a party may request Organisation Certificates only for its own Entity Identifier (its register
    entry's EUI-64): a supplier asking for one naming another supplier is refused, nothing issued, audited."""
    request = smki_pki.organisation_csr("90-B3-D5-1F-30-01-00-7E", role="supplier", usage="DS")
    before = issued_count(smki_pki)
    status, _, body = post(services, recorder, organisation.PATH, request.der)
    answer = answer_of(body, m.Schema.ORGANISATION)
    assert (status, answer.findtext("Status"), answer.findtext("Error/ErrorCode")) == (200, "WORKFLOW_ERROR", "WF:WF2")
    assert "90B3D51F3001007E" in answer.findtext("Error/ErrorText")
    assert issued_count(smki_pki) == before
    assert recorder.entries[-1]["code"] == "WF:WF2"
