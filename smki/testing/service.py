"""`TestService`: a real `smki serve` for integration tests, with lab TLS credentials and a client per role.

    import smki.testing

    with smki.testing.TestService.start() as service:            # a lab test PKI served over mutual TLS, on a free port
        client = service.client("supplier")                       # a ServiceClient with the supplier's client certificate
        answer = client.organisation(service.pki.organisation_csr("90-B3-D5-1F-30-01-00-00", role="supplier"))
        assert answer.ok and answer.certificate.issuer == service.pki.issuing_oca_certificate.subject

What runs is the operator's command, `smki serve --config FILE` in a child process (its worker processes,
each with its own HSM session, and its batch processor), configured as an operator would configure it: the authorities' config
files, a service file, the subscriber register, the lab TLS credentials of `smki tls lab-credentials`
(one client certificate per role: supplier, networkOperator, other, and the operator), each registered.
Its PKI is a `TestPKI` whose Certificate Policies are the shipped ones with the usage rules relaxed for a
lab (`lab_policies`): batches processed at any hour and approved without the Registration Authority,
no interval between ad hoc CSRs, no daily caps. Every other check of the policy stands, so an ad hoc
Device CSR still replaces: `service.known_device()` gives a device its first certificate first.

The secrets (the token PIN, the repository's API key) reach `smki serve` through its environment
(`env:` sources), never its command line; the service reads them once and its workers never see them.

With pytest, the `smki_service` fixture is one such service per run (one worker).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from smki.errors import BadInputError
from smki.identifiers import EUI64, PolicyKind, RemotePartyRole
from smki.operations.values import parsed
from smki.register.lab_credentials import DEFAULT_ROLES, OPERATOR, LabClient, make_lab_credentials
from smki.register.register import SubscriberRegister
from smki.shipped import builtin_policy_bytes
from smki.testing.pki import TestPKI, TestRequest, authority_name

PIN_ENV = "SMKI_TEST_SERVICE_PIN"  # the token PIN, as the authorities' files name its source (env:)
API_KEY_ENV = "SMKI_TEST_SERVICE_API_KEY"  # the repository's API key
START_TIMEOUT = 180.0  # seconds for `smki serve` to say it listens (each worker opens its actors first)
STOP_TIMEOUT = 60.0
BATCH_POLL_SECONDS = 0.2  # how often the service's batch processor looks for an approved batch (a lab wants answers soon)
VERSION = "1.0"  # the CSR web services' interface version, in their paths and messages
ADHOC_PATH = f"/{VERSION}/AdHocDeviceCSR"
ORGANISATION_PATH = f"/{VERSION}/OrganisationCSR"
BATCH_BASE = f"/{VERSION}/PortalCSRBatch"
XML = "application/xml;charset=UTF-8"
ROLE_HEADER = "X-SMKI-Role"

# A lab's usage rules (smki/data/policies: usage_rules): batches at any hour, approved without the RA, no interval
# between ad hoc CSRs (a window from 00:00 to 00:00 is the whole day), caps no test reaches.
LAB_USAGE_RULES = """\
usage_rules:                          # a LAB's usage rules (smki.testing.service): relaxed, never the SEC's
  timezone: Europe/London
  batch_window: always
  adhoc_interval:
    - {start: "00:00", end: "00:00", seconds: 0}
  portal_adhoc_daily_cap: 100000000
  batch_daily_cap: 100000000
  batches_at_a_time: 1000000
  auto_approved_requesters: ["*"]
"""
_USAGE_RULES_SECTION = re.compile(r"^usage_rules:.*?(?=^\S)", re.MULTILINE | re.DOTALL)
TERMINAL_BATCH_STATUSES = frozenset({"COMPLETED", "REJECTED", "TAMPERED", "FORMAT_ERROR", "WORKFLOW_ERROR"})


def lab_policy_text(kind: PolicyKind | str) -> str:
    """The shipped policy of a hierarchy with its usage rules replaced by LAB_USAGE_RULES (every other rule kept)."""
    shipped = builtin_policy_bytes(PolicyKind(kind)).decode("utf-8")
    without = _USAGE_RULES_SECTION.sub("", shipped + "\n__end__:")[: -len("\n__end__:")]
    return without.rstrip("\n") + "\n\n" + LAB_USAGE_RULES


def lab_policies(directory: Path | str) -> dict[PolicyKind, Path]:
    """Both hierarchies' lab policies written into `directory` (lab-organisation.yaml, lab-device.yaml), as
    `TestPKI.create(policies=...)` takes them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for kind in PolicyKind:
        path = directory / f"lab-{kind.value}.yaml"
        path.write_text(lab_policy_text(kind))
        written[kind] = path
    return written


# -- answers ------------------------------------------------------------------------------------------------------

class ServiceHttpError(Exception):
    """The service answered with an HTTP status other than 200 (e.g. 403 for a refused client certificate)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text.strip()[:200]}")
        self.status, self.text = status, text


_SAFE_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)


def _xml(body: bytes) -> etree._Element:
    try:
        return etree.fromstring(body, _SAFE_PARSER)
    except etree.XMLSyntaxError as exc:
        raise BadInputError(f"the service's answer is not XML: {exc}") from None


def _der(text: str | None) -> bytes | None:
    return base64.b64decode(text, validate=True) if text else None


@dataclass(frozen=True)
class CsrAnswer:
    """An ad hoc Device CSR's or an Organisation CSR's answer: its Status, the certificate (DER) or the error."""

    status: str
    id: str | None
    transaction_id: int | None
    build: str | None
    certificate_der: bytes | None = None
    code: str | None = None
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" and self.certificate_der is not None

    @property
    def certificate(self) -> x509.Certificate:
        if self.certificate_der is None:
            raise BadInputError(f"no certificate in the answer: {self.status} {self.code or ''} {self.text or ''}".strip())
        return x509.load_der_x509_certificate(self.certificate_der)

    @classmethod
    def parse(cls, body: bytes) -> "CsrAnswer":
        root = _xml(body)
        transaction = root.findtext("TransactionId")
        return cls(status=root.findtext("Status") or "", id=root.get("ID"),
                   transaction_id=int(transaction) if transaction else None, build=root.findtext("Build"),
                   certificate_der=_der(root.findtext("Certificate")), code=root.findtext("Error/ErrorCode"),
                   text=root.findtext("Error/ErrorText"))


@dataclass(frozen=True)
class BatchSubmission:
    """A SubmitCSRBatchStatus: PENDING with the BatchId, or FORMAT_ERROR / WORKFLOW_ERROR with the error."""

    status: str
    id: str | None
    batch_id: int | None
    build: str | None
    code: str | None = None
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.batch_id is not None and self.code is None

    @classmethod
    def parse(cls, body: bytes) -> "BatchSubmission":
        root = _xml(body)
        batch_id = root.findtext("BatchId")
        return cls(status=root.findtext("BatchStatus") or "", id=root.get("ID"), batch_id=int(batch_id) if batch_id else None,
                   build=root.findtext("Build"), code=root.findtext("Error/ErrorCode"), text=root.findtext("Error/ErrorText"))


@dataclass(frozen=True)
class DeviceResult:
    """One DeviceCSR's result in a COMPLETED batch: its ID (the request's), Status, and certificate or error."""

    id: str
    status: str
    certificate_der: bytes | None = None
    code: str | None = None
    text: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" and self.certificate_der is not None


@dataclass(frozen=True)
class BatchResult:
    """A CSRBatchResult: the batch's status, and once COMPLETED one DeviceResult per DeviceCSR (in the batch's order)."""

    status: str
    id: str | None
    batch_id: int | None
    build: str | None
    results: tuple[DeviceResult, ...] = ()
    code: str | None = None
    text: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_BATCH_STATUSES

    def certificates(self) -> dict[str, bytes]:
        """The issued certificates (DER) by DeviceCSR ID."""
        return {result.id: result.certificate_der for result in self.results if result.ok}

    @classmethod
    def parse(cls, body: bytes) -> "BatchResult":
        root = _xml(body)
        batch_id = root.findtext("BatchId")
        results = tuple(DeviceResult(id=element.get("ID") or "", status=element.findtext("Status") or "",
                                     certificate_der=_der(element.findtext("Certificate")),
                                     code=element.findtext("Error/ErrorCode"), text=element.findtext("Error/ErrorText"))
                        for element in root.iterfind("DeviceCertificate"))
        return cls(status=root.findtext("BatchStatus") or "", id=root.get("ID"), batch_id=int(batch_id) if batch_id else None,
                   build=root.findtext("Build"), results=results, code=root.findtext("Error/ErrorCode"),
                   text=root.findtext("Error/ErrorText"))


@dataclass(frozen=True)
class ResponseZip:
    """A COMPLETED batch's response ZIP (its file name as the service gave it): certificates named like the requests, `.crt` (PEM, as
    `smki ca issue-batch` writes them; bare Base64 is read too)."""

    name: str | None
    data: bytes

    def certificates(self) -> dict[str, bytes]:
        """The certificates (DER) by member name."""
        with zipfile.ZipFile(io.BytesIO(self.data)) as archive:
            return {name: _certificate_file_der(archive.read(name)) for name in archive.namelist() if name.endswith(".crt")}


def _certificate_file_der(data: bytes) -> bytes:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return base64.b64decode(b"".join(data.split()), validate=True)


# -- the client -----------------------------------------------------------------------------------------------------

CsrInput = bytes | TestRequest  # a PKCS#10 as DER, or what TestPKI.device_csr / organisation_csr return


def _csr_der(csr: CsrInput) -> bytes:
    der = csr.der if isinstance(csr, TestRequest) else csr
    if not isinstance(der, (bytes, bytearray)) or not der.startswith(b"\x30"):
        raise BadInputError("a CSR for the client is its DER (bytes), or a TestRequest")
    return bytes(der)


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def _attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _batch_pairs(csrs: Mapping[str, CsrInput] | Iterable[CsrInput | tuple[str, CsrInput]]) -> list[tuple[str, bytes]]:
    """(DeviceCSR ID, DER) pairs from a mapping ID -> CSR, (ID, CSR) pairs, or bare CSRs (IDs csr-1, csr-2, ...)."""
    items = csrs.items() if isinstance(csrs, Mapping) else csrs
    pairs = []
    for index, item in enumerate(items, start=1):
        csr_id, csr = item if isinstance(item, tuple) else (f"csr-{index}", item)
        pairs.append((str(csr_id), _csr_der(csr)))
    return pairs


def adhoc_request_xml(csr: CsrInput, id: str) -> bytes:
    """A DeviceCertificateSigningRequest (SEC Appendix M, Appendix B)."""
    return (f'<?xml version="1.0" encoding="UTF-8"?><DeviceCertificateSigningRequest ID="{_attribute(id)}"><Version>{VERSION}'
            f"</Version><CertificateSigningRequest>{_b64(_csr_der(csr))}</CertificateSigningRequest>"
            "</DeviceCertificateSigningRequest>").encode("utf-8")


def batch_request_xml(pairs: Sequence[tuple[str, bytes]], id: str) -> bytes:
    """A SubmitCSRBatch (SEC Appendix M, Appendix E)."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><SubmitCSRBatch ID="{_attribute(id)}"><Version>{VERSION}</Version>']
    parts.extend(f'<DeviceCSR ID="{_attribute(csr_id)}">{_b64(der)}</DeviceCSR>' for csr_id, der in pairs)
    parts.append("</SubmitCSRBatch>")
    return "".join(parts).encode("utf-8")


def batch_zip(pairs: Sequence[tuple[str, bytes]]) -> bytes:
    """A portal batch file (SEC Appendix M, Appendix F): one `<ID>.csr` file of Base64 PKCS#10 per request."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for csr_id, der in pairs:
            archive.writestr(f"{csr_id}.csr", _b64(der))
    return buffer.getvalue()


class ServiceClient:
    """A small synchronous client of the CSR web services: one keep-alive mutual-TLS connection (stdlib http.client).

    Each method sends one request and returns its answer parsed into a frozen value (CsrAnswer, BatchSubmission,
    BatchResult, ResponseZip); an HTTP status other than 200 raises ServiceHttpError. `role` names the
    RemotePartyRole the caller acts for (X-SMKI-Role), needed only by a subscriber holding several.
    Not thread-safe: one client per thread.
    """

    def __init__(self, url: str, *, ca_file: Path | str, certificate: Path | str | None, key: Path | str | None,
                 role: RemotePartyRole | str | None = None, timeout: float = 120.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or not parts.port:
            raise BadInputError(f"a service URL is https://HOST:PORT, not {url!r}")
        self.url, self.host, self.port, self.timeout = url, parts.hostname, parts.port, timeout
        self._context = ssl.create_default_context(cafile=str(ca_file))
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        if certificate is not None:
            self._context.load_cert_chain(str(certificate), str(key))
        self._role = None if role is None else parsed(RemotePartyRole, role).camel_name
        self._connection: http.client.HTTPSConnection | None = None

    # -- transport -------------------------------------------------------------------------------------------
    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=self.timeout)
        return self._connection

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = XML) -> tuple[int, dict[str, str], bytes]:
        """One request over the kept connection ((status, headers, body)); a connection the server closed while
        idle is opened again once, for a request that cannot have reached it."""
        headers = {"Content-Type": content_type} if body is not None else {}
        if self._role is not None:
            headers[ROLE_HEADER] = self._role
        while True:
            reused = self._connection is not None
            connection = self._connect()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if not reused:  # a fresh connection refused: the service's answer, never resent
                    raise
                continue  # a kept connection the service had closed (its keep-alive timeout): once more, on a new one
            if response.will_close:
                self.close()
            return response.status, {name.lower(): value for name, value in response.getheaders()}, answer

    def _ok(self, method: str, path: str, body: bytes | None = None, content_type: str = XML) -> tuple[dict[str, str], bytes]:
        status, headers, answer = self.request(method, path, body, content_type)
        if status != 200:
            raise ServiceHttpError(status, answer.decode("utf-8", "replace"))
        return headers, answer

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the CSR web services ----------------------------------------------------------------------------------
    def adhoc(self, csr: CsrInput, id: str = "adhoc-1") -> CsrAnswer:
        """One ad hoc Device CSR (`POST /1.0/AdHocDeviceCSR`); `id` is the request's ID (1-32 characters)."""
        return CsrAnswer.parse(self._ok("POST", ADHOC_PATH, adhoc_request_xml(csr, id))[1])

    def organisation(self, csr: CsrInput | str, id: str | None = None) -> CsrAnswer:
        """One Organisation CSR (`POST /1.0/OrganisationCSR[?ID=...]`), sent as PEM (PEM text is sent as given)."""
        body = csr.encode("ascii") if isinstance(csr, str) else (
            b"-----BEGIN CERTIFICATE REQUEST-----\n" + base64.encodebytes(_csr_der(csr)) + b"-----END CERTIFICATE REQUEST-----\n")
        path = ORGANISATION_PATH + (f"?ID={quote(id, safe='')}" if id is not None else "")
        return CsrAnswer.parse(self._ok("POST", path, body, "application/pkcs10")[1])

    def submit_batch(self, csrs: Mapping[str, CsrInput] | Iterable[CsrInput | tuple[str, CsrInput]], id: str = "batch-1") -> BatchSubmission:
        """A SubmitCSRBatch (`POST /1.0/PortalCSRBatch/SubmitCSRBatch`): `csrs` a mapping ID -> CSR, (ID, CSR) pairs,
        or bare CSRs (their IDs then csr-1, csr-2, ...)."""
        return self.submit_batch_xml(batch_request_xml(_batch_pairs(csrs), id))

    def submit_batch_xml(self, body: bytes) -> BatchSubmission:
        """A SubmitCSRBatch already written (the benchmark's, or a deliberately wrong one)."""
        return BatchSubmission.parse(self._ok("POST", f"{BATCH_BASE}/SubmitCSRBatch", body)[1])

    def submit_batch_zip(self, csrs: Mapping[str, CsrInput] | Iterable[CsrInput | tuple[str, CsrInput]] | bytes,
                         id: str = "batch-zip-1") -> BatchSubmission:
        """A portal batch file (`POST /1.0/PortalCSRBatch/SubmitCSRBatchZip?ID=...`): `csrs` as submit_batch takes
        them (made into `<ID>.csr` files), or the ZIP's bytes."""
        data = csrs if isinstance(csrs, (bytes, bytearray)) else batch_zip(_batch_pairs(csrs))
        path = f"{BATCH_BASE}/SubmitCSRBatchZip?ID={quote(id, safe='')}"
        return BatchSubmission.parse(self._ok("POST", path, bytes(data), "application/zip")[1])

    def batch_result(self, batch_id: int) -> BatchResult:
        """The batch's CSRBatchResult (`GET /1.0/PortalCSRBatch/CSRBatchResult?BatchId=N`)."""
        return BatchResult.parse(self._ok("GET", f"{BATCH_BASE}/CSRBatchResult?BatchId={int(batch_id)}")[1])

    def wait_for_batch(self, batch_id: int, timeout: float = 120.0, interval: float = 0.2) -> BatchResult:
        """Poll until the batch is COMPLETED (or REJECTED, TAMPERED, or the poll fails): its last result.
        TimeoutError when it is still under way after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.batch_result(batch_id)
            if result.finished:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"batch {batch_id} is still {result.status} after {timeout:g} s")
            time.sleep(interval)

    def download_response_zip(self, batch_id: int) -> ResponseZip:
        """A COMPLETED batch's response ZIP (`GET /1.0/PortalCSRBatch/BatchResponseZip?BatchId=N`)."""
        headers, data = self._ok("GET", f"{BATCH_BASE}/BatchResponseZip?BatchId={int(batch_id)}")
        name = re.search(r'filename="?([^";]+)"?', headers.get("content-disposition", ""))
        return ResponseZip(name.group(1) if name else None, data)

    def batch_status_file(self, batch_id: int) -> str:
        """A COMPLETED batch's status records (`GET /1.0/PortalCSRBatch/BatchStatusFile?BatchId=N`), as text."""
        return self._ok("GET", f"{BATCH_BASE}/BatchStatusFile?BatchId={int(batch_id)}")[1].decode("utf-8")


# -- the service ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientCredential:
    """A lab client certificate: the role it was made for, its register name, EUI-64 and files."""

    role: str  # a RemotePartyRole's camel name, or "operator"
    name: str
    eui64: EUI64
    certificate: Path
    key: Path

    @classmethod
    def of(cls, client: LabClient) -> "ClientCredential":
        role = OPERATOR if client.name == f"lab-{OPERATOR}" else client.role.camel_name
        return cls(role, client.name, client.eui64, client.certificate, client.key)


def _yaml(value: Path | str) -> str:
    """A path or URI as a YAML scalar (JSON's quoted string is one): any directory name a test gives stays one value."""
    return json.dumps(str(value))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _authority_file(path: Path, pki: TestPKI, hierarchy: PolicyKind) -> Path:
    """An Issuing Authority's configuration file, as its operator writes one (kind issuing-oca or issuing-dca)."""
    name = authority_name("issuing", hierarchy)
    key = pki.key(name)
    return _write(path, f"""\
kind: {name}
state: {_yaml(pki.state(name))}
issuer_certificate: {_yaml(pki.certificate_file(name))}
hsm: {{key_uri: {_yaml(key.uri)}, pin_source: "env:{PIN_ENV}"}}
policy: {_yaml(pki.policy_file(hierarchy))}
environment: {pki.environment.value}
defaults: {{actor: csr-web-service}}
""")


class TestService:
    """A running `smki serve` for a TestPKI, over mutual TLS with lab credentials; `stop()` (or the context) ends it.

    `url` (the CSR web services and the repository: one service), `repository_url`, `ca_file` (the lab transport
    CA: the server's and the clients' trust anchor), `credentials[role]` and `client(role)`, `api_key` (the
    repository's), `pki` (the TestPKI served), `directory` (configs, register, logs: `log_file`, `access_log`).
    """

    __test__ = False

    def __init__(self, pki: TestPKI, directory: Path, process: subprocess.Popen, url: str, credentials: dict[str, ClientCredential],
                 ca_file: Path, api_key: str, *, owns_pki: bool) -> None:
        self.pki, self.directory, self.process, self.url = pki, directory, process, url
        self.credentials, self.ca_file, self.api_key = credentials, ca_file, api_key
        self._owns_pki = owns_pki
        self._temporary: Path | None = None
        self._clients: list[ServiceClient] = []
        self._devices = iter(range(0x00DB5E0000000000 + secrets.randbits(24) * 0x10000, 1 << 64))

    # -- starting and stopping -------------------------------------------------------------------------------------
    @classmethod
    def start(cls, pki: TestPKI | None = None, directory: Path | str | None = None, *, workers: int = 1,
              roles: Iterable[RemotePartyRole | str] = DEFAULT_ROLES, address: str = "127.0.0.1", token=None,
              extra_settings: str = "", repository: Path | str | None = None) -> "TestService":
        """Start `smki serve` in `directory` (default: a new directory in the PKI's). Without `pki`, a new TestPKI
        with the lab policies (`lab_policies`) is made (on `token`, default the process's shared test token) and
        closed with the service. A given `pki` is served under its own policies (make it with
        `policies=lab_policies(...)` for the lab's usage rules). `extra_settings`: more lines for the service file
        (e.g. `limits: {...}`). `repository`: the Librarian's database to serve (default the PKI's Librarian's)."""
        owns_pki, temporary = pki is None, None
        if pki is None:
            temporary = Path(tempfile.mkdtemp(prefix="smki-test-service-")) if directory is None else None
            directory = Path(directory or temporary).resolve()
            pki = TestPKI.create(directory / "pki", token=token, policies=lab_policies(directory / "policies"))
        directory = Path(directory) if directory is not None else pki.directory / f"service-{secrets.token_hex(3)}"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            service = cls._launch(pki, directory.resolve(), workers, roles, address, extra_settings, owns_pki,
                                  Path(repository) if repository is not None else pki.directory / "repository.db")
        except BaseException:
            if owns_pki:
                pki.close()
            if temporary is not None:
                shutil.rmtree(temporary, ignore_errors=True)
            raise
        service._temporary = temporary
        return service

    @classmethod
    def _launch(cls, pki: TestPKI, directory: Path, workers: int, roles, address: str, extra_settings: str, owns_pki: bool,
                repository: Path) -> "TestService":
        with SubscriberRegister(directory / "service.db", actor="test-service") as register:
            lab = make_lab_credentials(directory / "tls", roles=roles, register=register)
        credentials = {credential.role: credential for credential in map(ClientCredential.of, lab.clients)}
        published = pki.directory / "published"
        published.mkdir(exist_ok=True)
        for hierarchy in PolicyKind:
            _authority_file(directory / f"{authority_name('issuing', hierarchy)}.yaml", pki, hierarchy)
        _write(directory / "librarian.yaml", f"kind: librarian\ndatabase: {_yaml(repository.resolve())}\n")
        settings = _write(directory / "service.yaml", f"""\
kind: service
listen: {{address: {_yaml(address)}, port: 0}}
workers: {int(workers)}
tls: {{certificate: tls/server.pem, key: tls/server.key.pem, client_ca: tls/lab-transport-ca.pem}}
database: service.db
issuing_oca: issuing-oca.yaml
issuing_dca: issuing-dca.yaml
librarian: librarian.yaml
repository: {{api_key_source: "env:{API_KEY_ENV}", published: {_yaml(published)}}}
batches: {{processor: true, poll_seconds: {BATCH_POLL_SECONDS}}}
access_log: access.log
{extra_settings}""")
        api_key = secrets.token_hex(16)
        log_file = directory / "serve.log"
        with open(log_file, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", "serve", "--config", str(settings), "--json"],
                                       stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                       env={**os.environ, PIN_ENV: pki.token.pin, API_KEY_ENV: api_key}, start_new_session=True)
        url = cls._await_url(process, log_file)
        return cls(pki, directory, process, url, credentials, lab.ca_certificate, api_key, owns_pki=owns_pki)

    @staticmethod
    def _await_url(process: subprocess.Popen, log_file: Path) -> str:
        """The URL `smki serve --json` prints once every worker listens; its log's tail if it ends first."""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=START_TIMEOUT)
        line = process.stdout.readline() if ready else b""
        if not line:
            _end(process)
            tail = log_file.read_text(errors="replace")[-2000:]
            raise BadInputError(f"smki serve did not start (exit {process.returncode}): {tail.strip()}")
        return json.loads(line)["url"]

    def worker_pids(self) -> list[int]:
        """The process ids of `smki serve`'s children (its workers), while it runs."""
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return []
        return [int(pid) for pid in children]

    def stop(self) -> int:
        """SIGTERM, as an operator stops it (requests in flight answered, the request audit written); the exit status.
        Once: later calls return the same status. Closes the clients made here, and the PKI made by `start` (and
        removes the temporary directory it made)."""
        for client in self._clients:
            client.close()
        self._clients.clear()
        status = _end(self.process)
        if self._owns_pki:
            self._owns_pki = False
            self.pki.close()
        if self._temporary is not None:  # the directory `start` made (not one the caller gave)
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None
        return status

    def __enter__(self) -> "TestService":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- what a test uses ----------------------------------------------------------------------------------------------
    @property
    def repository_url(self) -> str:
        """The SMKI Repository web service's base (…/services/certificatesearch, …/retrievecertificate)."""
        return f"{self.url}/services"

    @property
    def log_file(self) -> Path:
        return self.directory / "serve.log"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        return parts.hostname, parts.port

    def credential(self, role: RemotePartyRole | str = "supplier") -> ClientCredential:
        """The lab client certificate for a role (its camel name or code), or "operator"."""
        name = role if role == OPERATOR else (role.camel_name if isinstance(role, RemotePartyRole) else RemotePartyRole.parse(role).camel_name)
        if name not in self.credentials:
            raise BadInputError(f"no lab client certificate for {name} (there are: {', '.join(sorted(self.credentials))})")
        return self.credentials[name]

    def organisation_csr(self, role: RemotePartyRole | str = "supplier", *, usage: str = "DS", **fields) -> TestRequest:
        """An Organisation CSR for the role's lab subscriber: its own Entity Identifier (the only one a party may
        request an Organisation Certificate for online) and role; `fields` as TestPKI.organisation_csr takes them."""
        credential = self.credential(role)
        return self.pki.organisation_csr(credential.eui64, role=credential.role, usage=usage, **fields)

    def client(self, role: RemotePartyRole | str | None = "supplier", *, timeout: float = 120.0) -> ServiceClient:
        """A ServiceClient presenting the role's client certificate (None: no client certificate), closed by `stop()`."""
        credential = self.credential(role) if role is not None else None
        client = ServiceClient(self.url, ca_file=self.ca_file, certificate=credential and credential.certificate,
                               key=credential and credential.key, timeout=timeout)
        self._clients.append(client)
        return client

    def ssl_context(self, role: RemotePartyRole | str | None = "supplier") -> ssl.SSLContext:
        """A client TLS context trusting the lab CA and presenting the role's certificate (for other HTTP clients)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if role is not None:
            credential = self.credential(role)
            context.load_cert_chain(str(credential.certificate), str(credential.key))
        return context

    def new_device(self) -> EUI64:
        """A device EUI-64 no test has used (from a range of this service's own)."""
        return EUI64(next(self._devices).to_bytes(8, "big"))

    def known_device(self, eui64: EUI64 | str | None = None, *, device_type: str = "ESME", usage: str = "DS") -> EUI64:
        """A device that already has a Device Certificate (issued in this process, untimed), so that an ad hoc
        request for it, a replacement, is eligible."""
        eui64 = self.new_device() if eui64 is None else EUI64.parse(eui64) if isinstance(eui64, str) else eui64
        self.pki.device_certificate(eui64, device_type=device_type, usage=usage)
        return eui64

    def replacement_csr(self, eui64: EUI64 | str | None = None, *, device_type: str = "ESME", usage: str = "DS") -> TestRequest:
        """A Device CSR for a known device (`known_device`): what the ad hoc service takes."""
        return self.pki.device_csr(self.known_device(eui64, device_type=device_type, usage=usage), usage=usage, device_type=device_type)


def _end(process: subprocess.Popen) -> int:
    """SIGTERM to `smki serve` (it stops its workers), then wait; SIGKILL to its whole session if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session (start_new_session): its workers with it
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode
