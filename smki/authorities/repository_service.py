"""The SMKI Repository web service, as offered to parties.

    POST /services/certificatesearch?apikey=K    <CertificateSearchRequest>  -> <CertificateSearchResponse>
    POST /services/retrievecertificate?apikey=K  <CertificateDataRequest>    -> <CertificateDataResponse>
    GET  /certificates/<SERIAL>.cer?apikey=K     the DER certificate
    GET  /certificates/<ISSUER-SKI>/<SERIAL>.cer?apikey=K   the same, named as in the published layout
    GET  /crl/<NAME>.crl?apikey=K                a published CRL or ARL file (<dir>/crl/<NAME>.crl, or <dir>/<NAME>.crl)
    GET  /index.json?apikey=K                    the published directory's index (smki.authorities.publishing)

Content type application/xml. HTTP 402: nothing found; 401: invalid search parameters;
400: malformed XML; 403: missing or unknown apikey; 413: body over the limit. Request
bodies are parsed with defusedxml: DTDs, entity expansion and external entities are refused.
Element names follow shared/docs/smki-profiles.md; the search request's usage and status
elements are `CertificateUsage` (DS/KA) and `CertificateStatus` (P/I/N/E/R), as in the response.
"""

from __future__ import annotations

import base64
import hmac
import re
import sqlite3
import threading
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
from smki.identifiers import EUI64
from smki.store.certificates import CertificateRecord, find_certificate, search_certificates

MAX_BODY_SIZE = 16 * 1024
STATUS_CODES = {"P", "I", "N", "E", "R"}
_SERIAL = re.compile(r"[0-9A-Fa-f]{1,40}")
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
    return SearchQuery(entity_id, "organisation" if organisation is not None else "device", usage, status)


def parse_retrieve_request(body: bytes) -> str:
    root = _parse_xml(body, "CertificateDataRequest")
    if {child.tag for child in root} != {"CertificateSerial"}:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, "a CertificateDataRequest holds exactly one CertificateSerial")
    serial = _single_text(root, "CertificateSerial")
    if not serial or not _SERIAL.fullmatch(serial):
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
    subject_tag = "CertificateSubjectName" if record.certificate_type == "organisation" else "CertificateSubjectAltName"
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
        self._connect, self._api_keys, self.published_dir = connect, api_keys, published_dir
        self._local = threading.local()

    def connection(self) -> sqlite3.Connection:
        if not hasattr(self._local, "connection"):
            self._local.connection = self._connect()
        return self._local.connection

    def authorised(self, api_key: str | None) -> bool:
        return api_key is not None and any(hmac.compare_digest(api_key, known) for known in self._api_keys)

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
        if not _SERIAL.fullmatch(serial):
            raise ServiceError(HTTPStatus.UNAUTHORIZED, "not a hexadecimal serial")
        records = find_certificate(self.connection(), serial)
        if not records:
            raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "no certificate with that serial")
        return records[0].der

    def issuer_certificate_der(self, issuer_key_id: str, serial: str) -> bytes:
        if not (_SERIAL.fullmatch(issuer_key_id) and _SERIAL.fullmatch(serial)):
            raise ServiceError(HTTPStatus.UNAUTHORIZED, "not a hexadecimal issuer key identifier and serial")
        records = [r for r in find_certificate(self.connection(), serial) if r.issuer_key_id == issuer_key_id.upper()]
        if not records:
            raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "no certificate with that issuer and serial")
        return records[0].der

    def published_file(self, name: str) -> bytes:
        if not _CRL_NAME.fullmatch(name) or self.published_dir is None:
            raise ServiceError(HTTPStatus.NOT_FOUND, "no such file")
        # `smki librarian publish` keeps CRLs under crl/; a hand-made directory may hold them at the top.
        return self._read_published(self.published_dir / "crl" / name, self.published_dir / name)

    def published_index(self) -> bytes:
        if self.published_dir is None:
            raise ServiceError(HTTPStatus.NOT_FOUND, "no such file")
        return self._read_published(self.published_dir / "index.json")

    @staticmethod
    def _read_published(*candidates: Path) -> bytes:
        # Publishing renames complete files into place, so one read returns one whole version.
        for candidate in candidates:
            try:
                return candidate.read_bytes()
            except OSError:
                continue
        raise ServiceError(HTTPStatus.PAYMENT_REQUIRED, "not published")


_POST_ROUTES = {"/services/certificatesearch": ("search", "CertificateSearchResponse"),
                "/services/retrievecertificate": ("retrieve", "CertificateDataResponse")}


class _Handler(BaseHTTPRequestHandler):
    server_version = "smki-repository"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: with Nagle, a keep-alive client's delayed ACK stalls each answer 40 ms
    wbufsize = -1  # buffer the headers and body: one send per answer (handle_one_request flushes)
    service: RepositoryService

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep API keys out of stderr logs
        return

    def handle_expect_100(self) -> bool:
        answer = super().handle_expect_100()
        self.wfile.flush()  # the client waits for "100 Continue" before it sends the body
        return answer

    def _target(self) -> tuple[str, str | None]:
        parts = urlsplit(self.path)
        keys = parse_qs(parts.query).get("apikey")
        return parts.path, keys[0] if keys else None

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_xml(self, element: ET.Element, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, to_xml_bytes(element), "application/xml")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path, api_key = self._target()
        reference = uuid.uuid4().hex
        route = _POST_ROUTES.get(path)
        try:
            if route is None:
                raise ServiceError(HTTPStatus.NOT_FOUND, "no such service")
            if not self.service.authorised(api_key):
                raise ServiceError(HTTPStatus.FORBIDDEN, "missing or unknown apikey")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_SIZE:
                self.close_connection = True
                raise ServiceError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {MAX_BODY_SIZE} bytes")
            body = self.rfile.read(length)
            self._send_xml(getattr(self.service, route[0])(body, reference))
        except ServiceError as error:
            self._send_xml(_response(route[1] if route else "ErrorResponse", error.status, error.message, reference), error.status)

    def do_GET(self) -> None:  # noqa: N802
        path, api_key = self._target()
        try:
            if not self.service.authorised(api_key):
                raise ServiceError(HTTPStatus.FORBIDDEN, "missing or unknown apikey")
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
        except ServiceError as error:
            self._send(error.status, error.message.encode() + b"\n", "text/plain")


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the listen backlog; socketserver's 5 drops bursts of new connections (1 s SYN retries)

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is routine: one line, not socketserver's traceback."""
        import sys
        kind = sys.exc_info()[0]
        if kind is not None and issubclass(kind, (ConnectionError, TimeoutError)):
            sys.stderr.write(f"smki librarian serve: {client_address[0]}:{client_address[1]}: {kind.__name__}\n")
            return
        super().handle_error(request, client_address)


def make_server(service: RepositoryService, address: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading HTTP server for `service`; port 0 picks a free port (server.server_address)."""
    handler = type("RepositoryHandler", (_Handler,), {"service": service})
    server = _Server((address, port), handler)
    server.daemon_threads = True
    return server
