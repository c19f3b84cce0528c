"""The SMKI Repository web service's answers, independent of HTTP (smki.web.repository carries them).

    search    <CertificateSearchRequest>  -> <CertificateSearchResponse>
    retrieve  <CertificateDataRequest>    -> <CertificateDataResponse> (with <ManufacturingFlag>, as DCC's)
    certificate_der, issuer_certificate_der   the DER certificate
    published_file    a published CRL or ARL file (<dir>/crl/<NAME>.crl, or <dir>/<NAME>.crl)
    published_index   the published directory's index (smki.librarian.publishing)

A refusal is a ServiceError carrying its HTTP status: 402 nothing found; 401 invalid search
parameters; 400 malformed XML; 403 missing or unknown apikey; 404 no such file. Request bodies are
parsed with defusedxml: DTDs, entity expansion and external entities are refused.
Element names follow shared/docs/smki-profiles.md; the search request's usage and status
elements are `CertificateUsage` (DS/KA) and `CertificateStatus` (P/I/N/E/R), as in the response.
"""

from __future__ import annotations

import base64
import hmac
import re
import sqlite3
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from smki.errors import BadInputError
from smki.files import MAX_CRL_BYTES, read_input
from smki.identifiers import EUI64, CertificateType
from smki.store.certificates import CertificateRecord, RepositoryStatus, find_certificate, search_certificates

MAX_PUBLISHED_INDEX_BYTES = 64 * 1024 * 1024  # index.json names every published file: a few MB for a large repository
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


def error_response(tag: str, error: ServiceError, audit_reference: str) -> ET.Element:
    """The answer to a refused request: `tag` with the refusal's code and message."""
    return _response(tag, error.status, error.message, audit_reference)


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
                       ("CertificateUsage", record.key_usage or ""),
                       # As DCC's service answers: smki issues no certificate under the manufacturing OIDs.
                       ("ManufacturingFlag", "false")):
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
