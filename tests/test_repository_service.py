"""The SMKI Repository web service over a real HTTP socket on loopback."""

import base64
import http.client
import xml.etree.ElementTree as ET

import pytest

from smki.librarian.repository_service import RepositoryService
from smki.web.server import REPOSITORY_BODY_BYTES as MAX_BODY_SIZE
from smki.web.server import serve_repository
from smki.store import CertificateRecord, insert_certificate, open_database, transaction

KEY = "test-api-key-0123"


def record(serial, entity, certificate_type="organisation", usage="DS", role="02", status="I"):
    return CertificateRecord(serial_hex=serial, issuer_key_id="4F5688D7EC933BE2", certificate_type=certificate_type,
                             subject_key_id="40" * 8, status=status, not_before="2026-01-01T00:00:00+00:00",
                             not_after="2036-01-01T00:00:00+00:00", der=bytes.fromhex("3003020101") + serial.encode(),
                             entity_id=entity, role=role if certificate_type == "organisation" else None, key_usage=usage)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("repository")
    connection = open_database(directory / "repo.db", create=True)
    with transaction(connection):
        for r in (record("4A" * 16, "90B3D51F30010000", usage="DS"), record("4B" * 16, "90B3D51F30010000", usage="KA"),
                  record("4C" * 16, "90B3D51F30010000", usage="KA", status="R"),
                  record("5A" * 16, "00DB1234567890A0", certificate_type="device", usage="KA")):
            insert_certificate(connection, r)
    (directory / "published").mkdir()
    (directory / "published" / "organisation.crl").write_bytes(b"\x30\x00crl")
    service = RepositoryService(lambda: open_database(directory / "repo.db"), {KEY}, directory / "published")
    http_server = serve_repository(service)
    yield http_server.server_address
    http_server.shutdown()


def request(address, method, path, body=b"", api_key=KEY, headers=None):
    connection = http.client.HTTPConnection(*address, timeout=10)
    query = f"?apikey={api_key}" if api_key is not None else ""
    connection.request(method, path + query, body=body, headers={"Content-Type": "application/xml", **(headers or {})})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), data


def search(address, inner, **kw):
    return request(address, "POST", "/services/certificatesearch", f"<CertificateSearchRequest>{inner}</CertificateSearchRequest>".encode(), **kw)


def test_search_organisation_returns_every_match(server):
    status, content_type, body = search(server, "<CertificateSubjectName>90-B3-D5-1F-30-01-00-00</CertificateSubjectName><CertificateUsage>KA</CertificateUsage>")
    assert status == 200 and content_type == "application/xml"
    root = ET.fromstring(body)
    assert root.tag == "CertificateSearchResponse" and root.findtext("ResponseCode") == "200"
    assert len(root.findtext("AuditReference")) == 32
    results = [(r.findtext("CertificateSerial"), r.findtext("CertificateStatus"), r.findtext("CertificateUsage"), r.findtext("CertificateRole")) for r in root.findall("Result")]
    assert results == [("4B" * 16, "I", "KA", "2"), ("4C" * 16, "R", "KA", "2")]


def test_search_filters_by_status_and_finds_devices_by_alt_name(server):
    status, _, body = search(server, "<CertificateSubjectName>90B3D51F30010000</CertificateSubjectName><CertificateStatus>I</CertificateStatus>")
    assert [r.findtext("CertificateSerial") for r in ET.fromstring(body).findall("Result")] == ["4A" * 16, "4B" * 16]
    status, _, body = search(server, "<CertificateSubjectAltName>00-DB-12-34-56-78-90-A0</CertificateSubjectAltName>")
    assert status == 200 and ET.fromstring(body).find("Result").findtext("CertificateSerial") == "5A" * 16


def test_retrieve_certificate(server):
    status, _, body = request(server, "POST", "/services/retrievecertificate", f"<CertificateDataRequest><CertificateSerial>{'4a' * 16}</CertificateSerial></CertificateDataRequest>".encode())
    assert status == 200
    answer = ET.fromstring(body).find("CertificateResponse")
    assert answer.findtext("CertificateSubjectName") == "90-B3-D5-1F-30-01-00-00"
    assert base64.b64decode(answer.findtext("CertificateBody")) == bytes.fromhex("3003020101") + ("4A" * 16).encode()
    assert answer.findtext("CertificateRole") == "2" and answer.findtext("CertificateUsage") == "DS"
    assert [child.tag for child in answer][-1] == "ManufacturingFlag" and answer.findtext("ManufacturingFlag") == "false"


def test_the_api_key_as_a_header_and_never_twice(server):
    body = b"<CertificateSearchRequest><CertificateSubjectAltName>00DB1234567890A0</CertificateSubjectAltName></CertificateSearchRequest>"
    assert request(server, "POST", "/services/certificatesearch", body, api_key=None, headers={"X-API-Key": KEY})[0] == 200
    assert request(server, "POST", "/services/certificatesearch", body, api_key=None, headers={"X-API-Key": "wrong"})[0] == 403
    assert request(server, "POST", "/services/certificatesearch", body, headers={"X-API-Key": KEY})[0] == 400


def test_crl_downloads_need_no_key_but_a_wrong_key_is_still_refused(server):
    assert request(server, "GET", "/crl/organisation.crl", api_key=None)[:3:2] == (200, b"\x30\x00crl")
    assert request(server, "GET", "/crl/organisation.crl", api_key="wrong")[0] == 403
    assert request(server, "GET", "/index.json", api_key=None)[0] == 403


def test_not_found_is_402(server):
    status, _, body = search(server, "<CertificateSubjectName>0000000000000001</CertificateSubjectName>")
    assert status == 402 and ET.fromstring(body).findtext("ResponseCode") == "402"
    status, _, _ = request(server, "POST", "/services/retrievecertificate", b"<CertificateDataRequest><CertificateSerial>ABCDEF</CertificateSerial></CertificateDataRequest>")
    assert status == 402


@pytest.mark.parametrize("inner", [
    "<CertificateSubjectName>90-B3-D5-1F-30-01</CertificateSubjectName>",
    "<CertificateSubjectName>90B3D51F3001000Z</CertificateSubjectName>",
    "<CertificateSubjectName>90B3D51F30010000</CertificateSubjectName><CertificateSubjectAltName>00DB1234567890A0</CertificateSubjectAltName>",
    "",
    "<CertificateSubjectName>90B3D51F30010000</CertificateSubjectName><CertificateUsage>XX</CertificateUsage>",
    "<CertificateSubjectName>90B3D51F30010000</CertificateSubjectName><CertificateStatus>Q</CertificateStatus>",
    "<CertificateSubjectName>90B3D51F30010000</CertificateSubjectName><Surprise/>",
])
def test_invalid_parameters_are_401(server, inner):
    status, _, body = search(server, inner)
    assert status == 401 and ET.fromstring(body).findtext("ResponseCode") == "401"


def test_invalid_serial_is_401(server):
    status, _, _ = request(server, "POST", "/services/retrievecertificate", b"<CertificateDataRequest><CertificateSerial>not-hex</CertificateSerial></CertificateDataRequest>")
    assert status == 401


@pytest.mark.parametrize("api_key", [None, "wrong-key", ""])
def test_wrong_or_missing_apikey_is_refused(server, api_key):
    status, _, _ = search(server, "<CertificateSubjectName>90B3D51F30010000</CertificateSubjectName>", api_key=api_key)
    assert status == 403
    assert request(server, "GET", "/certificates/" + "4A" * 16 + ".cer", api_key=api_key)[0] == 403


BILLION_LAUGHS = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<CertificateSearchRequest><CertificateSubjectName>&lol2;</CertificateSubjectName></CertificateSearchRequest>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<CertificateSearchRequest><CertificateSubjectName>&x;</CertificateSubjectName></CertificateSearchRequest>"""


@pytest.mark.parametrize("body", [b"<CertificateSearchRequest><unclosed>", b"not xml at all", BILLION_LAUGHS, EXTERNAL, b""])
def test_malformed_xml_and_entities_are_refused(server, body):
    status, _, answer = request(server, "POST", "/services/certificatesearch", body)
    assert status == 400 and b"root:" not in answer and b"lollol" not in answer


def test_oversized_body_is_refused(server):
    body = b"<CertificateSearchRequest>" + b" " * MAX_BODY_SIZE + b"</CertificateSearchRequest>"
    status, _, _ = request(server, "POST", "/services/certificatesearch", body)
    assert status == 413


def test_plain_downloads(server):
    status, content_type, body = request(server, "GET", "/certificates/" + "5A" * 16 + ".cer")
    assert status == 200 and content_type == "application/pkix-cert" and body.endswith(("5A" * 16).encode())
    status, content_type, body = request(server, "GET", "/crl/organisation.crl")
    assert status == 200 and content_type == "application/pkix-crl" and body == b"\x30\x00crl"
    assert request(server, "GET", "/crl/../repo.db")[0] in (402, 404)
    assert request(server, "GET", "/certificates/" + "77" * 16 + ".cer")[0] == 402
    assert request(server, "GET", "/nothing")[0] == 404


def test_a_client_hanging_up_mid_request_is_one_line_not_a_traceback(server, capfd):
    import socket
    import struct
    import time
    client = socket.create_connection(server)
    client.sendall(f"POST /services/certificatesearch?apikey={KEY} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n<Cert".encode())
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    client.close()
    time.sleep(0.3)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    # The server still answers afterwards.
    answer = search(server, "<CertificateSubjectAltName>00-DB-12-34-56-78-90-A0</CertificateSubjectAltName>")
    assert answer[0] in (200, 402)
