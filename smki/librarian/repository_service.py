"""The SMKI Repository web service, as offered to parties.

    POST /services/certificatesearch?apikey=K    <CertificateSearchRequest>  -> <CertificateSearchResponse>
    POST /services/retrievecertificate?apikey=K  <CertificateDataRequest>    -> <CertificateDataResponse>
    GET  /certificates/<SERIAL>.cer?apikey=K     the DER certificate
    GET  /certificates/<ISSUER-SKI>/<SERIAL>.cer?apikey=K   the same, named as in the published layout
    GET  /crl/<NAME>.crl?apikey=K                a published CRL or ARL file (<dir>/crl/<NAME>.crl, or <dir>/<NAME>.crl)
    GET  /index.json?apikey=K                    the published directory's index (smki.librarian.publishing)

Content type application/xml. HTTP 402: nothing found; 401: invalid search parameters;
400: malformed XML or request framing; 403: missing or unknown apikey; 411: a body not framed by
Content-Length (Transfer-Encoding); 413: body over the limit; 414/431: request line or headers
over their limits; 503: too many connections. Request bodies are parsed with defusedxml: DTDs,
entity expansion and external entities are refused.

Limits, because every party and every attacker shares one process: a request (line, headers and
body) must arrive within `timeout` seconds of the server starting to wait for it, which also ends
idle keep-alive connections; a connection must start each request within `request_line_timeout`
(shorter); at most `max_connections` connections are served at once (each has a thread), and at
most `max_connections_per_client` from one client address, more are answered 503 and closed; headers are bounded in total, the body by
MAX_BODY_SIZE. A malformed request gets a 4xx and its connection is closed (what follows it on
the connection cannot be framed).
Element names follow shared/docs/smki-profiles.md; the search request's usage and status
elements are `CertificateUsage` (DS/KA) and `CertificateStatus` (P/I/N/E/R), as in the response.
"""

from __future__ import annotations

import base64
import http.client
import hmac
import re
import socket
import sqlite3
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from smki.errors import BadInputError
from smki.files import MAX_CRL_BYTES, read_input
from smki.identifiers import EUI64, CertificateType
from smki.store.certificates import CertificateRecord, RepositoryStatus, find_certificate, search_certificates

MAX_BODY_SIZE = 16 * 1024
MAX_HEADER_SIZE = 16 * 1024  # the request line and every header line together
MAX_QUERY_FIELDS = 8
REQUEST_TIMEOUT = 20.0  # seconds: for a request to arrive whole, once its first byte has
# Seconds a connection may wait before the first byte of a request (a new or an idle keep-alive one):
# an idle socket costs a thread and a connection slot, so holding one must not be free for long.
REQUEST_LINE_TIMEOUT = 5.0
MAX_CONNECTIONS = 256
# Connections from one client address at once default to a quarter of max_connections (64 of 256):
# one address cannot take every slot. (The benchmark, the only client, passes its own bound.)
MAX_PUBLISHED_INDEX_BYTES = 64 * 1024 * 1024  # index.json names every published file: a few MB for a large repository
_DIGITS = re.compile(r"[0-9]{1,15}")  # Content-Length: ASCII digits only (int() takes "+5", " 5", "1_0", Arabic digits)
STATUS_CODES = {status.value for status in RepositoryStatus}
_HEX_ID = re.compile(r"[0-9A-Fa-f]{1,40}")  # a serial or a key identifier, any case
_CRL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\.crl")


class ServiceError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class SearchQuery:
    entity_id: EUI64
    certificate_type: str  # organisation (CertificateSubjectName) or device (CertificateSubjectAltName)
    key_usage: str | None
    status: str | None


def _parse_xml(body: bytes, root_tag: str) -> ET.Element:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise ServiceError(HTTPStatus.BAD_REQUEST, f"malformed XML: {type(exc).__name__}") from None
    if root.tag != root_tag:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, f"expected <{root_tag}>, got <{root.tag}>")
    return root


def _single_text(root: ET.Element, tag: str) -> str | None:
    found = root.findall(tag)
    if len(found) > 1:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, f"<{tag}> given more than once")
    return (found[0].text or "").strip() if found else None


def parse_search_request(body: bytes) -> SearchQuery:
    root = _parse_xml(body, "CertificateSearchRequest")
    known = {"CertificateSubjectName", "CertificateSubjectAltName", "CertificateUsage", "CertificateStatus"}
    unknown = sorted({child.tag for child in root} - known)
    if unknown:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, f"unknown element(s) {', '.join(unknown)}")
    organisation, device = _single_text(root, "CertificateSubjectName"), _single_text(root, "CertificateSubjectAltName")
    if (organisation is None) == (device is None):
        raise ServiceError(HTTPStatus.UNAUTHORIZED, "give exactly one of CertificateSubjectName or CertificateSubjectAltName")
    try:
        entity_id = EUI64.parse(organisation if organisation is not None else device)
    except BadInputError as exc:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, str(exc)) from None
    usage, status = _single_text(root, "CertificateUsage"), _single_text(root, "CertificateStatus")
    if usage is not None and usage not in ("DS", "KA"):
        raise ServiceError(HTTPStatus.UNAUTHORIZED, f"CertificateUsage {usage!r} is not DS or KA")
    if status is not None and status not in STATUS_CODES:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, f"CertificateStatus {status!r} is not one of P, I, N, E, R")
    return SearchQuery(entity_id, CertificateType.ORGANISATION if organisation is not None else CertificateType.DEVICE, usage, status)


def parse_retrieve_request(body: bytes) -> str:
    root = _parse_xml(body, "CertificateDataRequest")
    if {child.tag for child in root} != {"CertificateSerial"}:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, "a CertificateDataRequest holds exactly one CertificateSerial")
    serial = _single_text(root, "CertificateSerial")
    if not serial or not _HEX_ID.fullmatch(serial):
        raise ServiceError(HTTPStatus.UNAUTHORIZED, f"CertificateSerial {serial!r} is not a hexadecimal serial")
    return serial.upper()


def _response(tag: str, status: HTTPStatus, message: str, audit_reference: str) -> ET.Element:
    root = ET.Element(tag)
    ET.SubElement(root, "ResponseCode").text = str(status.value)
    ET.SubElement(root, "ResponseMessage").text = message
    ET.SubElement(root, "AuditReference").text = audit_reference
    return root


def _xml_text(element: ET.Element) -> str:
    """What ET.tostring writes for these attribute-free, tail-free trees, in a fraction of its time."""
    inner = (escape(element.text) if element.text else "") + "".join(_xml_text(child) for child in element)
    return f"<{element.tag}>{inner}</{element.tag}>" if inner else f"<{element.tag} />"


def to_xml_bytes(element: ET.Element) -> bytes:
    """The response document: the same bytes as ET.tostring(element, encoding="utf-8", xml_declaration=True)."""
    return b"<?xml version='1.0' encoding='utf-8'?>\n" + _xml_text(element).encode()


def _role_decimal(record: CertificateRecord) -> str:
    return str(int(record.role, 16)) if record.role else ""


def search_response(records: list[CertificateRecord], audit_reference: str) -> ET.Element:
    root = _response("CertificateSearchResponse", HTTPStatus.OK, f"{len(records)} certificate(s) found", audit_reference)
    for record in records:
        result = ET.SubElement(root, "Result")
        for tag, value in (("CertificateSerial", record.serial_hex), ("CertificateStatus", record.status),
                           ("CertificateUsage", record.key_usage or ""), ("CertificateRole", _role_decimal(record))):
            ET.SubElement(result, tag).text = value
    return root


def retrieve_response(record: CertificateRecord, audit_reference: str) -> ET.Element:
    root = _response("CertificateDataResponse", HTTPStatus.OK, "certificate found", audit_reference)
    body = ET.SubElement(root, "CertificateResponse")
    subject_tag = "CertificateSubjectName" if record.certificate_type == CertificateType.ORGANISATION else "CertificateSubjectAltName"
    entity = EUI64.parse(record.entity_id).hyphenated if record.entity_id else ""
    for tag, value in ((subject_tag, entity), ("CertificateSerial", record.serial_hex), ("CertificateStatus", record.status),
                       ("CertificateBody", base64.b64encode(record.der).decode()), ("CertificateRole", _role_decimal(record)),
                       ("CertificateUsage", record.key_usage or "")):
        ET.SubElement(body, tag).text = value
    return root


class RepositoryService:
    """The service's logic, independent of HTTP: answers one request on one database connection."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], api_keys: set[str], published_dir: Path | None = None) -> None:
        if not api_keys:
            raise BadInputError("the repository service needs at least one API key")
        self._connect, self.published_dir = connect, published_dir
        self._api_keys = tuple(key.encode("utf-8", "surrogateescape") for key in api_keys)  # compared as bytes
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        if not hasattr(self._local, "connection"):
            self._local.connection = self._connect()
        return self._local.connection

    def authorised(self, api_key: str | None) -> bool:
        """Compared as UTF-8 bytes (compare_digest refuses non-ASCII str) against every key, in constant time."""
        if api_key is None:
            return False
        offered = api_key.encode("utf-8", "surrogateescape")
        matched = False
        for known in self._api_keys:
            matched |= hmac.compare_digest(offered, known)
        return matched

    def search(self, body: bytes, audit_reference: str) -> ET.Element:
        query = parse_search_request(body)
        records = search_certificates(self.connection(), entity_id=query.entity_id.hex, certificate_type=query.certificate_type,
                                      key_usage=query.key_usage, status=query.status)
        if not records:
            raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "no certificate matches")
        return search_response(records, audit_reference)

    def retrieve(self, body: bytes, audit_reference: str) -> ET.Element:
        records = find_certificate(self.connection(), parse_retrieve_request(body))
        if not records:
            raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "no certificate with that serial")
        return retrieve_response(records[0], audit_reference)

    def certificate_der(self, serial: str) -> bytes:
        if not _HEX_ID.fullmatch(serial):
            raise ServiceError(HTTPStatus.UNAUTHORIZED, "not a hexadecimal serial")
        records = find_certificate(self.connection(), serial)
        if not records:
            raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "no certificate with that serial")
        return records[0].der

    def issuer_certificate_der(self, issuer_key_id: str, serial: str) -> bytes:
        if not (_HEX_ID.fullmatch(issuer_key_id) and _HEX_ID.fullmatch(serial)):
            raise ServiceError(HTTPStatus.UNAUTHORIZED, "not a hexadecimal issuer key identifier and serial")
        records = [r for r in find_certificate(self.connection(), serial) if r.issuer_key_id == issuer_key_id.upper()]
        if not records:
            raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "no certificate with that issuer and serial")
        return records[0].der

    def published_file(self, name: str) -> bytes:
        if not _CRL_NAME.fullmatch(name) or self.published_dir is None:
            raise ServiceError(HTTPStatus.NOT_FOUND, "no such file")
        stem = name[:-len(".crl")]
        if _HEX_ID.fullmatch(stem):
            # Published lists are named by the issuer's SKI in uppercase hex; hex names any case, as /certificates/ does.
            name = f"{stem.upper()}.crl"
        # `smki librarian publish` keeps CRLs under crl/; a hand-made directory may hold them at the top.
        return self._read_published(MAX_CRL_BYTES, self.published_dir / "crl" / name, self.published_dir / name)

    def published_index(self) -> bytes:
        if self.published_dir is None:
            raise ServiceError(HTTPStatus.NOT_FOUND, "no such file")
        return self._read_published(MAX_PUBLISHED_INDEX_BYTES, self.published_dir / "index.json")

    @staticmethod
    def _read_published(limit: int, *candidates: Path) -> bytes:
        """The first candidate that exists, read with its kind's bound. Publishing renames complete
        files into place, so one read returns one whole version. Anything else put there by hand (a
        device such as /dev/zero, a FIFO, a file over the bound) is refused on the descriptor opened:
        a 500 and one line on stderr, never a read without end."""
        for candidate in candidates:
            if not candidate.exists():  # follows links: a dangling one is not published either
                continue
            try:
                return read_input(candidate, limit)
            except BadInputError as exc:
                sys.stderr.write(f"smki librarian serve: published file refused: {exc}\n")
                raise ServiceError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error") from None
        raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "not published")


_POST_ROUTES = {"/services/certificatesearch": ("search", "CertificateSearchResponse"),
                "/services/retrievecertificate": ("retrieve", "CertificateDataResponse")}


class _RequestReader:
    """The connection's input, read within the request's limits.

    http.server reads the request line and headers with readline, the body is read with read:
    here both check the request's deadline before each socket read (the socket's own timeout
    bounds one read, so a request that trickles in a byte at a time is cut off too), and readline
    counts the header bytes against MAX_HEADER_SIZE. Each socket read is at most one recv.
    """

    def __init__(self, stream, connection: socket.socket, timeout: float, request_line_timeout: float) -> None:
        self._stream, self._connection = stream, connection
        self._timeout, self._request_line_timeout = timeout, request_line_timeout
        self._deadline, self._header_bytes, self._waiting = float("inf"), 0, False

    def start_request(self) -> None:
        """Wait for a request: at most `request_line_timeout` for its first byte (the socket's timeout too)."""
        self._deadline, self._header_bytes, self._waiting = time.monotonic() + self._request_line_timeout, 0, True
        self._connection.settimeout(self._request_line_timeout)

    def _request_started(self) -> None:
        """The first byte is here: the whole request now has `timeout` to arrive."""
        self._deadline, self._waiting = time.monotonic() + self._timeout, False
        self._connection.settimeout(self._timeout)

    def _check_deadline(self) -> None:
        if time.monotonic() > self._deadline:
            raise TimeoutError(f"request not received within {self._timeout:g} s")

    def readline(self, limit: int = -1) -> bytes:
        """One line; `limit` (http.server's, 64 KiB) is above MAX_HEADER_SIZE, which bounds the line instead."""
        line = bytearray()
        while not line.endswith(b"\n"):
            self._check_deadline()
            buffered = self._stream.peek(1)  # what is buffered, or one recv when nothing is
            if not buffered:
                break  # end of stream
            if self._waiting:
                self._request_started()
            end = buffered.find(b"\n")
            line += self._stream.read(len(buffered) if end < 0 else end + 1)
            if self._header_bytes + len(line) > MAX_HEADER_SIZE:
                raise http.client.LineTooLong(f"request line and headers over {MAX_HEADER_SIZE} bytes")
        self._header_bytes += len(line)
        return bytes(line)

    def read(self, size: int) -> bytes:
        chunks, remaining = [], size
        while remaining > 0:
            self._check_deadline()
            chunk = self._stream.read1(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._stream.close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "smki-repository"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: with Nagle, a keep-alive client's delayed ACK stalls each answer 40 ms
    wbufsize = -1  # buffer the headers and body: one send per answer (handle_one_request flushes)
    timeout = REQUEST_TIMEOUT  # the socket's timeout: one read or write (make_server sets it)
    request_line_timeout = REQUEST_LINE_TIMEOUT  # before a request's first byte (make_server sets it)
    service: RepositoryService
    rfile: _RequestReader

    def setup(self) -> None:
        super().setup()
        self.rfile = _RequestReader(self.rfile, self.connection, self.timeout, self.request_line_timeout)

    def handle_one_request(self) -> None:
        self.rfile.start_request()
        try:
            super().handle_one_request()
        except http.client.LineTooLong:  # the request line (header lines are answered 431 by parse_request)
            self.requestline = self.request_version = self.command = ""
            self.close_connection = True
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long")

    def parse_request(self) -> bool:
        if not super().parse_request():
            self.close_connection = True
            return False
        return self._check_framing()

    def _check_framing(self) -> bool:
        """Take the body's length from the request's framing, or answer why not (False)."""
        try:
            self.body_length = self._body_length()
        except ServiceError as error:
            self.close_connection = True
            self.send_error(error.status, error.message)
            return False
        self.body_read = self.body_length == 0  # only POST reads a body: any other must end the connection
        return True

    def _body_length(self) -> int:
        """The body's length from the one framing this server accepts: at most one Content-Length, ASCII digits."""
        if self.headers.get_all("Transfer-Encoding"):
            raise ServiceError(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding is not accepted: send the body with Content-Length")
        lengths = self.headers.get_all("Content-Length") or []
        if len(lengths) > 1:
            raise ServiceError(HTTPStatus.BAD_REQUEST, "Content-Length given more than once")
        if not lengths:
            return 0
        if not _DIGITS.fullmatch(lengths[0]):
            raise ServiceError(HTTPStatus.BAD_REQUEST, "Content-Length is not a decimal number of bytes")
        length = int(lengths[0])
        if length > MAX_BODY_SIZE:
            raise ServiceError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_SIZE} bytes")
        return length

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep API keys out of stderr logs
        return

    def handle_expect_100(self) -> bool:
        if not self._check_framing():
            return False  # no "100 Continue" for a body that would be refused
        answer = super().handle_expect_100()
        self.wfile.flush()  # the client waits for "100 Continue" before it sends the body
        return answer

    def _target(self) -> tuple[str, str | None]:
        parts = urlsplit(self.path)
        try:
            keys = parse_qs(parts.query, max_num_fields=MAX_QUERY_FIELDS).get("apikey")
        except ValueError:
            raise ServiceError(HTTPStatus.BAD_REQUEST, f"more than {MAX_QUERY_FIELDS} query fields") from None
        if keys and len(keys) > 1:
            raise ServiceError(HTTPStatus.BAD_REQUEST, "apikey given more than once")
        return parts.path, keys[0] if keys else None

    def _authorise(self, api_key: str | None) -> None:
        if not self.service.authorised(api_key):
            raise ServiceError(HTTPStatus.FORBIDDEN, "missing or unknown apikey")

    def _read_body(self) -> bytes:
        body = self.rfile.read(self.body_length)
        self.body_read = True
        if len(body) < self.body_length:
            self.close_connection = True
            raise ServiceError(HTTPStatus.BAD_REQUEST, "request body shorter than its Content-Length")
        return body

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_xml(self, element: ET.Element, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, to_xml_bytes(element), "application/xml")

    def _answer(self, action: Callable[[], None], send_error: Callable[[ServiceError], None]) -> None:
        """Run `action`; any error it raises is answered (a fault of this server as 500, with one line on stderr)."""
        try:
            action()
            return
        except ServiceError as error:
            failure = error
        except (TimeoutError, ConnectionError):
            raise  # the client is too slow or gone: handle_one_request and handle_error end the connection
        except Exception as exc:  # noqa: BLE001 - a request must get an answer, not silence and a traceback
            sys.stderr.write(f"smki librarian serve: {self.command} {urlsplit(self.path).path}: {type(exc).__name__}: {exc}\n")
            failure = ServiceError(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
        if not self.body_read:
            self.close_connection = True  # the unread body would be taken for the next request
        send_error(failure)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        reference = uuid.uuid4().hex
        path = urlsplit(self.path).path
        route = _POST_ROUTES.get(path)

        def answer() -> None:
            _, api_key = self._target()
            if route is None:
                raise ServiceError(HTTPStatus.NOT_FOUND, "no such service")
            self._authorise(api_key)
            body = self._read_body()
            self._send_xml(getattr(self.service, route[0])(body, reference))

        self._answer(answer, lambda error: self._send_xml(
            _response(route[1] if route else "ErrorResponse", error.status, error.message, reference), error.status))

    def do_GET(self) -> None:  # noqa: N802
        if not self.body_read:
            self.close_connection = True  # a GET's body is never read: what follows it cannot be framed

        def answer() -> None:
            path, api_key = self._target()
            self._authorise(api_key)
            self._send_get(path)

        self._answer(answer, lambda error: self._send(error.status, error.message.encode() + b"\n", "text/plain"))

    def _send_get(self, path: str) -> None:
        if path.startswith("/certificates/") and path.endswith(".cer") and path.count("/") == 3:
            issuer_key_id, serial = path[len("/certificates/"):-4].split("/")
            self._send(HTTPStatus.OK, self.service.issuer_certificate_der(issuer_key_id, serial), "application/pkix-cert")
        elif path.startswith("/certificates/") and path.endswith(".cer"):
            self._send(HTTPStatus.OK, self.service.certificate_der(path[len("/certificates/"):-4]), "application/pkix-cert")
        elif path.startswith("/crl/"):
            self._send(HTTPStatus.OK, self.service.published_file(path[len("/crl/"):]), "application/pkix-crl")
        elif path == "/index.json":
            self._send(HTTPStatus.OK, self.service.published_index(), "application/json")
        else:
            raise ServiceError(HTTPStatus.NOT_FOUND, "no such resource")


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 1\r\n"
         b"Connection: close\r\n\r\ntoo many connections\n")


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog; socketserver's 5 drops bursts of new connections (1 s SYN retries)
    daemon_threads = True
    block_on_close = False  # server_close does not wait for idle keep-alive connections to time out

    def __init__(self, address, handler, max_connections: int, max_connections_per_client: int) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)  # one thread a connection: bounded
        self._per_client_limit = max_connections_per_client
        self._per_client: dict[str, int] = {}  # client address -> connections being served
        self._per_client_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        if not self._take_client_slot(client_address[0]):
            self._refuse(request)
            return
        if not self._slots.acquire(blocking=False):
            self._release_client_slot(client_address[0])
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            self._release_client_slot(client_address[0])
            raise

    def _take_client_slot(self, host: str) -> bool:
        with self._per_client_lock:
            if self._per_client.get(host, 0) >= self._per_client_limit:
                return False
            self._per_client[host] = self._per_client.get(host, 0) + 1
            return True

    def _release_client_slot(self, host: str) -> None:
        with self._per_client_lock:
            remaining = self._per_client[host] - 1
            if remaining:
                self._per_client[host] = remaining
            else:
                del self._per_client[host]  # the table holds only addresses with connections open

    def _refuse(self, request: socket.socket) -> None:
        """Over the limit: a 503 without a thread (never blocking the accepting loop), then close."""
        try:
            request.setblocking(False)
            request.send(_BUSY)
        except OSError:
            pass
        self.shutdown_request(request)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
            self._release_client_slot(client_address[0])

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is routine: one line, not socketserver's traceback."""
        kind = sys.exc_info()[0]
        if kind is not None and issubclass(kind, (ConnectionError, TimeoutError)):
            sys.stderr.write(f"smki librarian serve: {client_address[0]}:{client_address[1]}: {kind.__name__}\n")
            return
        super().handle_error(request, client_address)


def make_server(service: RepositoryService, address: str = "127.0.0.1", port: int = 0, *, timeout: float = REQUEST_TIMEOUT,
                max_connections: int = MAX_CONNECTIONS, max_connections_per_client: int | None = None,
                request_line_timeout: float = REQUEST_LINE_TIMEOUT) -> ThreadingHTTPServer:
    """A threading HTTP server for `service`; port 0 picks a free port (server.server_address).

    `timeout`: seconds for a request to arrive whole once it has started; `request_line_timeout`:
    seconds a connection (new or idle keep-alive) may take to start a request (at most `timeout`);
    `max_connections`: connections served at once; `max_connections_per_client`: from one client
    address (default a quarter of `max_connections`, at least 1). More are answered 503 at once.
    """
    per_client = max(1, max_connections // 4) if max_connections_per_client is None else max_connections_per_client
    handler = type("RepositoryHandler", (_Handler,), {"service": service, "timeout": timeout,
                                                       "request_line_timeout": min(request_line_timeout, timeout)})
    return _Server((address, port), handler, max_connections, per_client)
