"""Librarian hardening (issue 12): repository status whatever the lodging order, the web service
under malformed and hostile requests, publishing repeated after a crash, CRL names in any case.

CA keys are SoftHSM keys; the web service runs on loopback and is spoken to with raw sockets
where a well-behaved client library would not send what an attacker sends.
"""

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given, strategies as st

from conftest import smki as run_cli
from smki.librarian.bulk import full_lines
from smki.librarian.crl_lodging import lodge_crl
from smki.librarian.lodging import lodge_certificate
from smki.librarian.repository_service import RepositoryService
from smki.web.server import serve_repository
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.profiles import OrganisationCertificateParams, Validity, organisation_certificate, sign_certificate
from smki.profiles.serials import serial_hex
from smki.store import find_certificate, list_certificates, open_database, search_certificates
from test_librarian_publishing import POLICY, START, Pki, make_crl

pytest_plugins = ["postgres_server"]  # `database_target`: the status tests run on SQLite and PostgreSQL

API_KEY = "hardening-test-key"


@pytest.fixture(scope="module")
def pki(smki_pki_2026):
    """The Organisation hierarchy of the test PKI from 2026-01-01; the leaves below are made by hand from that date,
    because the tests assert on their fixed validity (30 days: expired by now)."""
    return Pki.of_test_pki(smki_pki_2026)


def organisation(pki, eui64: str, *, days: int = 3650):
    """An Organisation Certificate of the PKI's Issuing CA, valid `days` from 2026-01-01 (30: expired by now)."""
    return sign_certificate(organisation_certificate(OrganisationCertificateParams(
        RemotePartyRole.SUPPLIER, EUI64.parse(eui64), KeyUsage.DIGITAL_SIGNATURE, POLICY, Validity(START, START + timedelta(days=days))),
        ec.generate_private_key(ec.SECP256R1()).public_key(), pki.issuing), pki.issuing_signer)


def serial_of(certificate) -> str:
    return serial_hex(certificate.serial_number)


def status_of(connection, certificate) -> str:
    [record] = find_certificate(connection, serial_of(certificate))
    return record.status


@pytest.fixture(scope="module")
def leaves(pki):
    """revoked-before-lodging, dropped-from-the-later-list, live, expired, expired-and-revoked."""
    return {"revoked": organisation(pki, "90B3D51F300200A1"), "dropped": organisation(pki, "90B3D51F300200A2"),
            "live": organisation(pki, "90B3D51F300200A3"), "expired": organisation(pki, "90B3D51F300200A4", days=30),
            "expired-revoked": organisation(pki, "90B3D51F300200A5", days=30)}


# -- item 1: repository status follows the lodged lists and validity, whatever the order -------------------------


def lodge_lists_then_certificates(connection, pki, leaves):
    """Every list first, every certificate after: the order that used to leave revoked certificates 'in use'."""
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_crl(connection, make_crl(pki.root, pki.root_signer, 1, revoked=[pki.issuing.serial_number]))  # ARL names the Issuing CA
    # The Issuing CA must be lodged before its own lists can be checked; its ARL entry was lodged before it.
    lodge_certificate(connection, pki.issuing)
    first = [leaves[name].serial_number for name in ("revoked", "dropped", "expired-revoked")]
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 1, revoked=first))
    # A later list from the same issuer that no longer names "dropped" (an entry may leave a list): still revoked.
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[leaves["revoked"].serial_number]))
    for certificate in leaves.values():
        lodge_certificate(connection, certificate)


EXPECTED = {"revoked": "R", "dropped": "R", "live": "I", "expired": "E", "expired-revoked": "R"}


def test_certificates_lodged_after_their_lists_are_revoked(database_target, pki, leaves):
    connection = open_database(database_target, create=True)
    lodge_lists_then_certificates(connection, pki, leaves)
    assert {name: status_of(connection, c) for name, c in leaves.items()} == EXPECTED
    assert status_of(connection, pki.issuing) == "R"  # the ARL lodged before the Issuing CA certificate
    assert status_of(connection, pki.root) == "I"
    revoked = {r.serial_hex for r in list_certificates(connection, status="R")}
    assert revoked == {serial_of(leaves[n]) for n in ("revoked", "dropped", "expired-revoked")} | {serial_of(pki.issuing)}
    assert {r.serial_hex for r in list_certificates(connection, status="E")} == {serial_of(leaves["expired"])}
    found = search_certificates(connection, entity_id="90B3D51F300200A1", certificate_type="organisation", status="R")
    assert [r.serial_hex for r in found] == [serial_of(leaves["revoked"])]
    assert search_certificates(connection, entity_id="90B3D51F300200A1", certificate_type="organisation", status="I") == []
    bulk = {line["serial"]: line["status"] for line in map(json.loads, full_lines(connection))}
    assert {name: bulk[serial_of(c)] for name, c in leaves.items()} == EXPECTED


def test_status_is_the_same_in_either_order(database_target, pki, leaves):
    """Certificates first, lists after: the same statuses as lists first."""
    connection = open_database(database_target, create=True)
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_certificate(connection, pki.issuing)
    for certificate in leaves.values():
        lodge_certificate(connection, certificate)
    lodge_crl(connection, make_crl(pki.root, pki.root_signer, 1, revoked=[pki.issuing.serial_number]))
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 1,
                                   revoked=[leaves[n].serial_number for n in ("revoked", "dropped", "expired-revoked")]))
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 2, revoked=[leaves["revoked"].serial_number]))
    assert {name: status_of(connection, c) for name, c in leaves.items()} == EXPECTED
    assert status_of(connection, pki.issuing) == "R"


def _tables_made_after(version: int) -> list[str]:
    """The tables the store's later migrations create (read from their SQLite DDL), dependants first."""
    import re

    from smki.store.connection import Dialect
    from smki.store.schema import MIGRATIONS, Ddl

    tables = [table for number, _, sql in MIGRATIONS if number > version and isinstance(sql, Ddl)
              for statement in sql.statements(Dialect.SQLITE)
              for table in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", statement)]
    return tables[::-1]


def test_lists_lodged_before_the_upgrade_still_revoke(tmp_path, pki, leaves):
    """A database whose lists were lodged before serials were indexed (schema 6): the migration indexes them."""
    path = tmp_path / "repo.db"
    connection = open_database(path, create=True)
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_certificate(connection, pki.issuing)
    lodge_crl(connection, make_crl(pki.issuing, pki.issuing_signer, 1, revoked=[leaves["revoked"].serial_number]))
    connection.execute("DROP TABLE listed_serials")
    for table in _tables_made_after(7):  # a schema-6 database has none of the later migrations' tables either
        connection.execute(f"DROP TABLE {table}")
    connection.execute("DELETE FROM schema_migrations WHERE version >= 7")
    connection.close()
    connection = open_database(path)
    lodge_certificate(connection, leaves["revoked"])
    lodge_certificate(connection, leaves["live"])
    assert (status_of(connection, leaves["revoked"]), status_of(connection, leaves["live"])) == ("R", "I")


@given(st.integers(min_value=1, max_value=(1 << 160) - 1))
def test_the_store_writes_serials_as_the_profiles_do(number):
    from smki.store.lodged_crls import _serial_hex as store_serial_hex  # here: the module imports on older code too
    assert store_serial_hex(number) == serial_hex(number)


def post(address, path, body: bytes) -> tuple[int, ET.Element]:
    connection = http.client.HTTPConnection(*address, timeout=10)
    connection.request("POST", f"{path}?apikey={API_KEY}", body=body, headers={"Content-Type": "application/xml"})
    response = connection.getresponse()
    answer = response.status, ET.fromstring(response.read())
    connection.close()
    return answer


@pytest.fixture
def lodged_repository(tmp_path, pki, leaves):
    path = tmp_path / "repo.db"
    lodge_lists_then_certificates(open_database(path, create=True), pki, leaves)
    return path


def test_the_web_service_and_find_say_revoked(lodged_repository, leaves, run_smki):
    """As a DCC client asks: a search with status R finds the certificate, and retrieve says R."""
    server = serve_repository(RepositoryService(lambda: open_database(lodged_repository), {API_KEY}))
    try:
        search = b"<CertificateSearchRequest><CertificateSubjectName>90-B3-D5-1F-30-02-00-A1</CertificateSubjectName>" \
                 b"<CertificateStatus>R</CertificateStatus></CertificateSearchRequest>"
        status, answer = post(server.server_address, "/services/certificatesearch", search)
        assert status == 200
        assert [(r.findtext("CertificateSerial"), r.findtext("CertificateStatus")) for r in answer.findall("Result")] == [
            (serial_of(leaves["revoked"]), "R")]
        in_use = search.replace(b"<CertificateStatus>R<", b"<CertificateStatus>I<")
        assert post(server.server_address, "/services/certificatesearch", in_use)[0] == 402
        for name, expected in EXPECTED.items():
            retrieve = f"<CertificateDataRequest><CertificateSerial>{serial_of(leaves[name])}</CertificateSerial></CertificateDataRequest>"
            status, answer = post(server.server_address, "/services/retrievecertificate", retrieve.encode())
            assert (status, answer.find("CertificateResponse").findtext("CertificateStatus")) == (200, expected), name
    finally:
        server.shutdown()
    found = run_smki("librarian", "find", "--db", str(lodged_repository), "--status", "R", "--json")
    assert found.returncode == 0, found.stderr
    assert serial_of(leaves["revoked"]) in {r["serial_hex"] for r in json.loads(found.stdout)}
    expired = run_smki("librarian", "find", "--db", str(lodged_repository), "--status", "E", "--json")
    assert [r["serial_hex"] for r in json.loads(expired.stdout)] == [serial_of(leaves["expired"])]


# -- item 7: the web service under malformed, slow and numerous requests ------------------------------------------

TIMEOUT = 1.0  # the server's request timeout in these tests
MAX_CONNECTIONS = 8
SEARCH = b"<CertificateSearchRequest><CertificateSubjectName>90B3D51F30010000</CertificateSubjectName></CertificateSearchRequest>"


@pytest.fixture(scope="module")
def service(tmp_path_factory, pki):
    directory = tmp_path_factory.mktemp("service")
    connection = open_database(directory / "repo.db", create=True)
    lodge_certificate(connection, pki.root, trust_root=True)
    lodge_certificate(connection, pki.issuing)
    lodge_certificate(connection, pki.orgs[0])
    (directory / "published" / "crl").mkdir(parents=True)
    (directory / "published" / "crl" / f"{Pki.ski(pki.issuing)}.crl").write_bytes(b"\x30\x00issuing-list")
    server = serve_repository(RepositoryService(lambda: open_database(directory / "repo.db"), {API_KEY}, directory / "published"),
                         request_timeout=TIMEOUT, max_connections=MAX_CONNECTIONS,
                         # Every test here is one client, 127.0.0.1: the default per-client bound (a quarter) let a test's
                         # requests be refused 503 while the server still closed the previous test's connections (seen
                         # under load). The bounds are tested on `small_service` and in test_cli_hardening.py.
                         max_connections_per_client=MAX_CONNECTIONS)
    yield server.server_address
    server.shutdown()


def exchange(address, raw: bytes, *, wait: float = 5.0) -> bytes:
    """Send raw bytes (the write side left open, as a client awaiting its answer does) and read until the server
    closes or `wait` passes; what came back."""
    with socket.create_connection(address, timeout=wait) as client:
        client.sendall(raw)
        received, deadline = b"", time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = client.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and _complete(received):
                break
        return received


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


def status_code(response: bytes) -> int:
    assert response.startswith(b"HTTP/1."), response[:200]
    return int(response.split(b" ", 2)[1])


def post_raw(headers: str, body: bytes = SEARCH, target: str = f"/services/certificatesearch?apikey={API_KEY}") -> bytes:
    return f"POST {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode("latin-1") + body


MALFORMED = {
    "negative length": (post_raw("Content-Length: -1\r\n"), 400),
    "non-numeric length": (post_raw("Content-Length: abc\r\n"), 400),
    "signed length": (post_raw(f"Content-Length: +{len(SEARCH)}\r\n"), 400),
    "underscored length": (post_raw("Content-Length: 1_0\r\n"), 400),
    "list of lengths": (post_raw(f"Content-Length: {len(SEARCH)}, {len(SEARCH)}\r\n"), 400),
    "duplicate length": (post_raw(f"Content-Length: {len(SEARCH)}\r\nContent-Length: {len(SEARCH)}\r\n"), 400),
    "conflicting lengths": (post_raw(f"Content-Length: {len(SEARCH)}\r\nContent-Length: 5\r\n"), 400),
    "huge length": (post_raw("Content-Length: 99999999999999999999999\r\n"), 400),
    "length over the limit": (post_raw("Content-Length: 100000\r\n"), 413),
    "over the limit, expecting 100-continue": (post_raw("Content-Length: 100000\r\nExpect: 100-continue\r\n", b""), 413),
    "chunked body": (post_raw("Transfer-Encoding: chunked\r\n", b"5\r\n<Cert\r\n0\r\n\r\n"), 411),
    "chunked and length": (post_raw(f"Transfer-Encoding: chunked\r\nContent-Length: {len(SEARCH)}\r\n"), 411),
    "non-ASCII apikey": (post_raw(f"Content-Length: {len(SEARCH)}\r\n", target="/services/certificatesearch?apikey=%C3%A9t%C3%A9"), 403),
    # Raw (unescaped) non-ASCII bytes in the request line: aiohttp's HTTP parser refuses the request (RFC 9112) before any key check.
    "raw non-ASCII apikey": ("GET /certificates/00.cer?apikey=\u00e9\u00ff HTTP/1.1\r\nHost: x\r\n\r\n".encode("latin-1"), 400),
    "undecodable apikey": (b"GET /index.json?apikey=%FF%FE HTTP/1.1\r\nHost: x\r\n\r\n", 403),
    "apikey twice": (f"GET /index.json?apikey={API_KEY}&apikey=other HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    "too many query fields": (("GET /index.json?" + "&".join(f"f{i}=1" for i in range(50)) + " HTTP/1.1\r\nHost: x\r\n\r\n").encode(), 400),
    "oversized header": (post_raw(f"Content-Length: {len(SEARCH)}\r\nX-Big: {'a' * 20000}\r\n"), 431),
    "many headers": (post_raw(f"Content-Length: {len(SEARCH)}\r\n" + "".join(f"X-{i}: {'b' * 250}\r\n" for i in range(90))), 431),
    "oversized request line": (f"GET /{'c' * 20000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 414),
    "GET with a chunked body": (f"GET /index.json?apikey={API_KEY} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode(), 411),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_every_malformed_request_gets_a_4xx_at_once(service, capfd, case):
    raw, expected = MALFORMED[case]
    started = time.monotonic()
    response = exchange(service, raw)
    assert status_code(response) == expected
    assert time.monotonic() - started < TIMEOUT + 1  # answered, not left to a timeout (or to the client's EOF)
    if raw.startswith(b"POST") or b"chunked" in raw or expected in (414, 431):
        assert b"connection: close" in response.lower()  # what follows cannot be framed: the connection ends
    assert status_code(exchange(service, post_raw(f"Content-Length: {len(SEARCH)}\r\n"))) == 200  # still serving
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_cut_short_is_refused(service):
    with socket.create_connection(service, timeout=5) as client:
        client.sendall(post_raw(f"Content-Length: {len(SEARCH) + 10}\r\n"))
        client.shutdown(socket.SHUT_WR)  # end of stream before the promised length
        assert status_code(client.recv(65536)) == 400


def test_keep_alive_goes_on_after_a_refusal_with_its_body_read(service):
    """A request whose body was read (here: a wrong element, 401) leaves the connection usable."""
    bad = b"<CertificateSearchRequest><Surprise/></CertificateSearchRequest>"
    with socket.create_connection(service, timeout=5) as client:
        client.sendall(post_raw(f"Content-Length: {len(bad)}\r\n", bad) + post_raw(f"Content-Length: {len(SEARCH)}\r\n"))
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.rstrip().endswith(b">"):
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
    assert [int(part.split(b" ", 1)[0]) for part in received.split(b"HTTP/1.1 ")[1:]] == [401, 200]


def test_idle_connections_time_out(service):
    with socket.create_connection(service, timeout=TIMEOUT * 4) as client:
        started = time.monotonic()
        assert client.recv(1024) == b""  # the server closed it (a recv timeout here would raise)
        assert time.monotonic() - started < TIMEOUT * 3


def test_a_request_trickling_in_is_cut_off(service):
    """A slow client (a header byte every 0.2 s, each within the socket timeout) is closed by the request deadline."""
    with socket.create_connection(service, timeout=TIMEOUT * 4) as client:
        client.sendall(f"POST /services/certificatesearch?apikey={API_KEY} HTTP/1.1\r\n".encode())
        started, closed = time.monotonic(), False
        for _ in range(50):  # 10 s at most
            try:
                client.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
        assert closed and time.monotonic() - started < TIMEOUT * 2 + 1.5


@pytest.fixture
def small_service(tmp_path):
    """A service taking 4 connections at once, with a timeout long enough to hold them through the test."""
    open_database(tmp_path / "repo.db", create=True).close()
    server = serve_repository(RepositoryService(lambda: open_database(tmp_path / "repo.db"), {API_KEY}), request_timeout=30, max_connections=4)
    yield server.server_address
    server.shutdown()


def test_connections_are_bounded(small_service):
    """Past the limit a connection is answered 503 at once, with no thread; once the held ones end, service goes on."""
    held = [socket.create_connection(small_service, timeout=5) for _ in range(4)]
    try:
        for client in held:  # each is accepted and owned by a handler thread before the extra connections come
            client.sendall(b"GET /index.json")
        time.sleep(0.3)
        threads_before = threading.active_count()
        extra = [socket.create_connection(small_service, timeout=5) for _ in range(20)]
        try:
            answers = [status_code(client.recv(1024)) for client in extra]
        finally:
            for client in extra:
                client.close()
        assert answers == [503] * 20
        assert threading.active_count() <= threads_before
    finally:
        for client in held:
            client.close()
    time.sleep(0.3)
    assert status_code(exchange(small_service, post_raw(f"Content-Length: {len(SEARCH)}\r\n"))) == 402


# -- item 19: CRL names in any case ------------------------------------------------------------------------------


def test_crl_names_are_case_insensitive_like_certificate_names(service, pki):
    ski = Pki.ski(pki.issuing)
    for name in (ski, ski.lower(), ski[:4].lower() + ski[4:]):
        response = exchange(service, f"GET /crl/{name}.crl?apikey={API_KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_code(response) == 200 and response.endswith(b"\x30\x00issuing-list"), name
    serial = serial_of(pki.orgs[0])
    for path in (f"/certificates/{serial.lower()}.cer", f"/certificates/{ski.lower()}/{serial.lower()}.cer"):
        assert status_code(exchange(service, f"GET {path}?apikey={API_KEY} HTTP/1.1\r\nHost: x\r\n\r\n".encode())) == 200


# -- item 14: a publish lost to a crash is made by repeating the run ---------------------------------------------

# The real CLI, killed at once where it would publish: after the lodging's commit, before any file is written.
CRASH_BEFORE_PUBLISHING = ("import os, sys; import smki.librarian.librarian as librarian; "
                           "librarian.publish_repository = lambda *args, **kwargs: os._exit(9); "
                           "from smki.cli.main import main; main(sys.argv[1:])")


def crashing_smki(*args):
    return subprocess.run([sys.executable, "-c", CRASH_BEFORE_PUBLISHING, *args], capture_output=True, text=True, timeout=300,
                          cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_a_publish_lost_to_a_crash_is_made_by_the_repeated_run(tmp_path, pki):
    db, pub = str(tmp_path / "repo.db"), tmp_path / "pub"
    certificates = [write(tmp_path / f"c{i}.pem", c.public_bytes(Encoding.PEM)) for i, c in enumerate((pki.root, pki.issuing, *pki.orgs))]
    crashed = crashing_smki("librarian", "lodge", "--db", db, "--trust-root", *certificates, "--publish", str(pub))
    assert crashed.returncode == 9, crashed.stderr
    assert not (pub / "index.json").exists()

    repeated = run_cli("librarian", "lodge", "--db", db, "--trust-root", *certificates, "--publish", str(pub), check=False)
    assert repeated.returncode == 0 and repeated.stdout.count("already lodged") == 5, repeated.stderr
    assert f"published {pub}" in repeated.stdout
    assert json.loads((pub / "index.json").read_text())["certificates"]["count"] == 5

    crl = make_crl(pki.issuing, pki.issuing_signer, 1, revoked=[pki.orgs[0].serial_number])
    crl_file = write(tmp_path / "issuing.crl", crl)
    crashed = crashing_smki("librarian", "lodge-crl", "--db", db, crl_file, "--publish", str(pub))
    assert crashed.returncode == 9, crashed.stderr
    published_list = pub / "crl" / f"{Pki.ski(pki.issuing)}.crl"
    assert not published_list.exists()

    repeated = run_cli("librarian", "lodge-crl", "--db", db, crl_file, "--publish", str(pub), check=False)
    assert repeated.returncode == 0 and "already lodged" in repeated.stdout and f"published {pub}" in repeated.stdout, repeated.stderr
    assert published_list.read_bytes() == crl
    index = json.loads((pub / "index.json").read_text())
    assert [(c["issuer_key_id"], c["crl_number"]) for c in index["crls"]] == [(Pki.ski(pki.issuing), 1)]
