"""The application's caller middleware and request audit, in process: a handler marked @serves is reached only
by a subscriber the register identifies from its TLS client certificate (or a trusted proxy's header); every
refusal is audited; the audit buffer reaches the register in batches and at shutdown."""

from __future__ import annotations

import hashlib
import os
import http.client
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.identifiers import EUI64, RemotePartyRole
from smki.register import Interface, Subscriber, SubscriberRefused
from smki.web.app import make_app
from smki.web.context import AUDIT, CALLER, Outcome, run_blocking, serves
from smki.web.server import RunningService
from smki.web.settings import Limits, ServiceSettings, TlsSettings
from smki.web.tls import server_context
from test_web_service import make_credentials


class FakeRegister:
    """Knows one certificate (by SHA-256); keeps the audit entries it is given, batch by batch."""

    def __init__(self, known_der: bytes) -> None:
        self.known = hashlib.sha256(known_der).hexdigest()
        self.batches: list[list] = []
        self.threads: set[str] = set()

    def identify(self, der: bytes, interface: Interface) -> Subscriber:
        self.threads.add(threading.current_thread().name)
        if hashlib.sha256(der).hexdigest() != self.known:
            raise SubscriberRefused("unknown client certificate")
        return Subscriber("supplier-adhoc", EUI64.parse("90B3D51F30010000"), (RemotePartyRole.SUPPLIER,),
                          frozenset({Interface.ADHOC_DEVICE}))

    def audit_requests(self, entries) -> None:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(entries))

    @property
    def entries(self) -> list:
        return [entry for batch in self.batches for entry in batch]


class FakeServices:
    build = "test-build"

    def __init__(self, register: FakeRegister) -> None:
        self._register = register

    def register(self) -> FakeRegister:
        return self._register

    def health(self) -> dict[str, str]:
        return {"store": "ok"}


@serves(Interface.ADHOC_DEVICE)
async def adhoc(request: web.Request) -> web.Response:
    caller = request[CALLER]
    await run_blocking(request, lambda: None)
    request.app[AUDIT].record_for(request, Interface.ADHOC_DEVICE, operation="AdHocDeviceCSR", status="SUCCESS", client_id="req-1")
    return web.Response(text=f"{caller.subscriber.name} {caller.fingerprint}")


async def anyone(request: web.Request) -> web.Response:
    return web.Response(text=str(request[CALLER].subscriber))


def _serve(tls: TlsSettings, register: FakeRegister, context: ssl.SSLContext | None, flush_interval: float | None = None) -> RunningService:
    settings = ServiceSettings(path=None, tls=tls, limits=Limits())
    app = make_app(FakeServices(register), settings, route_modules=())
    if flush_interval is not None:
        app[AUDIT].FLUSH_INTERVAL = flush_interval
    app.router.add_post("/1.0/AdHocDeviceCSR", adhoc)
    app.router.add_get("/open", anyone)
    return RunningService(app, settings.limits, "127.0.0.1", 0, context).start()


@pytest.fixture(scope="module")
def credentials(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    paths = make_credentials(directory / "ours")
    other = make_credentials(directory / "other")  # another CA, and a client certificate it issued
    paths["other_client"], paths["other_client_key"] = other["client"], other["client_key"]
    return paths


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


@pytest.fixture
def tls_service(credentials):
    register = FakeRegister(_der(credentials["client"]))
    tls = TlsSettings(certificate=credentials["server"], key=credentials["server_key"], client_ca=credentials["ca"])
    service = _serve(tls, register, server_context(tls))
    yield service, register
    service.shutdown()


def _post(service: RunningService, credentials, *, client: str | None = "client") -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(credentials["ca"]))
    if client:
        context.load_cert_chain(str(credentials[client]), str(credentials[f"{client}_key"]))
    connection = http.client.HTTPSConnection(*service.address, context=context, timeout=10)
    try:
        connection.request("POST", "/1.0/AdHocDeviceCSR", b"<x/>", {"Content-Type": "application/xml"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _wait_for(condition, seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_known_client_certificate_reaches_the_handler_and_its_audit_entry_is_flushed(tls_service, credentials):
    service, register = tls_service
    status, text = _post(service, credentials)
    assert status == 200 and text == f"supplier-adhoc {hashlib.sha256(_der(credentials['client'])).hexdigest()}"
    _wait_for(lambda: register.entries)
    [entry] = register.entries
    assert (entry.interface, entry.operation, entry.subscriber, entry.status, entry.client_id, entry.outcome) == (
        "adhoc-device", "AdHocDeviceCSR", "supplier-adhoc", "SUCCESS", "req-1", Outcome.ANSWERED)
    assert register.threads == {next(iter(register.threads))} and next(iter(register.threads)).startswith("smki-actor")


def test_no_client_certificate_is_refused_403_in_one_line_and_audited(tls_service, credentials):
    service, register = tls_service
    status, text = _post(service, credentials, client=None)
    assert status == 403 and text.count("\n") == 1 and "client certificate" in text
    _wait_for(lambda: register.entries)
    [entry] = register.entries
    assert (entry.outcome, entry.interface, entry.subscriber, entry.fingerprint) == (Outcome.REFUSED, "adhoc-device", None, None)


def test_an_unknown_certificate_is_refused_and_one_from_another_ca_fails_the_handshake(tls_service, credentials):
    service, register = tls_service
    register.known = "0" * 64
    status, text = _post(service, credentials)
    assert status == 403 and "unknown client certificate" in text
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        _post(service, credentials, client="other_client")


def test_an_open_route_needs_no_certificate(tls_service, credentials):
    service, _ = tls_service
    context = ssl.create_default_context(cafile=str(credentials["ca"]))
    connection = http.client.HTTPSConnection(*service.address, context=context, timeout=10)
    connection.request("GET", "/open")
    assert connection.getresponse().read() == b"None"
    connection.request("GET", "/health")
    assert connection.getresponse().status == 200


def test_behind_a_proxy_the_header_is_believed_only_from_a_trusted_address(credentials):
    register = FakeRegister(_der(credentials["client"]))
    service = _serve(TlsSettings(proxy=True, trusted=("127.0.0.1",)), register, None)
    header = quote(credentials["client"].read_text())
    try:
        for source, expected in (("127.0.0.1", 200), ("127.0.0.2", 403)):
            with socket.create_connection(service.address, timeout=10, source_address=(source, 0)) as connection:
                connection.sendall(f"POST /1.0/AdHocDeviceCSR HTTP/1.1\r\nHost: x\r\nX-SSL-Client-Cert: {header}\r\n"
                                   f"Content-Length: 4\r\nConnection: close\r\n\r\n<x/>".encode())
                assert int(connection.recv(65536).split(b" ", 2)[1]) == expected, source
    finally:
        service.shutdown()


def test_entries_left_in_the_buffer_are_written_at_shutdown(credentials):
    register = FakeRegister(_der(credentials["client"]))
    tls = TlsSettings(certificate=credentials["server"], key=credentials["server_key"], client_ca=credentials["ca"])
    service = _serve(tls, register, server_context(tls), flush_interval=3600)  # no periodic flush: only the shutdown's
    _post(service, credentials)
    _post(service, credentials, client=None)
    assert register.batches == []
    service.shutdown()
    assert [len(batch) for batch in register.batches] == [2]


# -- a worker's actors, opened from the authorities' configuration files --------------------------------------------

def test_worker_services_open_the_issuing_dca_its_configuration_file_describes(smki_pki, tmp_path):
    """The service's issuing_dca file (as `smki ca` takes it) opens an Issuing Authority that issues with the DCA key;
    the PIN is read once, from its source, by read_secrets."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from smki.web.server import SecretName, WorkerServices, read_secrets
    from smki.web.settings import load_service_settings

    (tmp_path / "issuing-dca.yaml").write_text(f"""\
kind: issuing-dca
hsm:
  key_uri: "{smki_pki.key('issuing-dca').uri}"
  pin_source: env:SMKI_TEST_PIN
state: {smki_pki.state('issuing-dca')}
policy: "{smki_pki.policy_file('device')}"
environment: test
issuer_certificate: {smki_pki.certificate_file('issuing-dca')}
""")
    (tmp_path / "service.yaml").write_text("kind: service\nissuing_dca: issuing-dca.yaml\n")
    settings = load_service_settings(tmp_path / "service.yaml")
    secrets = read_secrets(settings)
    assert set(secrets) == {SecretName.DCA_PIN} and "SMKI_TEST_PIN" not in repr(secrets) and os.environ["SMKI_TEST_PIN"] not in repr(secrets)
    services = WorkerServices(settings, secrets)
    try:
        smki_pki.device_certificate("00DB1234567890C1")  # an ad hoc request replaces: the device has a certificate already
        issued = services.issuing_dca().issue_device(smki_pki.device_csr("00DB1234567890C1").der, requester="supplier", device_type="ESME")
        assert services.issuing_dca() is services.issuing_dca()  # opened once per worker
    finally:
        services.close()
    dca = smki_pki.issuing_dca_certificate
    dca.public_key().verify(issued.certificate.signature, issued.certificate.tbs_certificate_bytes, ec.ECDSA(issued.certificate.signature_hash_algorithm))
    assert issued.certificate.issuer == dca.subject


def _raw_post(service: RunningService, credentials, head: str, client: str | None = "client") -> int:
    """A POST to the ad hoc route with the request's head as given (framing the client library would not write)."""
    context = ssl.create_default_context(cafile=str(credentials["ca"]))
    if client:
        context.load_cert_chain(str(credentials[client]), str(credentials[f"{client}_key"]))
    with socket.create_connection(service.address, timeout=10) as raw, context.wrap_socket(raw, server_hostname=service.address[0]) as tls:
        tls.sendall(f"POST /1.0/AdHocDeviceCSR HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n{head}\r\n".encode())
        answer = b""
        while b"\r\n" not in answer and (chunk := tls.recv(4096)):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_a_request_refused_for_its_framing_is_audited_with_its_caller(tls_service, credentials):
    """Issue 15's bad input: a body over the limit and a chunked body each get their status AND an audit entry (the
    framing middleware answered before the caller middleware, unaudited). (A Content-Length aiohttp's own parser
    refuses, negative or not a number, is answered 400 before any route is matched: not audited, see the report.)"""
    service, register = tls_service
    over = f"Content-Length: {Limits().max_other_body_bytes + 1}\r\n"
    statuses = [_raw_post(service, credentials, head) for head in (over, "Transfer-Encoding: chunked\r\n")]
    assert statuses == [413, 411]
    assert _raw_post(service, credentials, over, client=None) == 413
    _wait_for(lambda: len(register.entries) >= 3)
    entries = register.entries
    assert [entry.status for entry in entries] == ["413", "411", "413"]
    assert all(entry.outcome is Outcome.REFUSED and entry.interface == "adhoc-device" for entry in entries)
    assert [entry.subscriber for entry in entries] == ["supplier-adhoc", "supplier-adhoc", None]
    assert entries[0].fingerprint == hashlib.sha256(_der(credentials["client"])).hexdigest() and entries[-1].fingerprint is None


def test_a_fault_on_a_path_with_control_characters_logs_one_escaped_line(credentials, caplog):
    """The errors middleware logged the decoded path and the exception's text as they were: a %0D%0A in the path (or
    in a message quoting the input) forged lines in the service's log."""
    async def broken(request: web.Request) -> web.Response:
        raise ValueError(f"cannot read {request.match_info['name']!s}")

    register = FakeRegister(_der(credentials["client"]))
    tls = TlsSettings(certificate=credentials["server"], key=credentials["server_key"], client_ca=credentials["ca"])
    settings = ServiceSettings(path=None, tls=tls, limits=Limits())
    app = make_app(FakeServices(register), settings, route_modules=())
    app.router.add_get("/broken/{name}", broken)
    service = RunningService(app, settings.limits, "127.0.0.1", 0, server_context(tls)).start()
    try:
        context = ssl.create_default_context(cafile=str(credentials["ca"]))
        connection = http.client.HTTPSConnection(*service.address, context=context, timeout=10)
        with caplog.at_level("ERROR", logger="smki.web"):
            connection.request("GET", "/broken/x%0D%0Asmki%20serve:%20worker%200:%20ERROR:%20forged%1B[2J")
            response = connection.getresponse()
            assert response.status == 500 and response.read() == b"internal error\n"
        connection.close()
    finally:
        service.shutdown()
    [message] = [record.getMessage() for record in caplog.records if "ValueError" in record.getMessage()]
    assert not any(ord(character) < 0x20 or ord(character) == 0x7F for character in message), repr(message)
    assert "/broken/x%0D%0Asmki serve" in message and "forged%1B[2J" in message
