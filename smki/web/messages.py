"""The CSR web services' XML messages (SEC Appendix M, Appendices A-E), parsed and rendered: pure functions, no I/O.

- The ad hoc service: `parse_adhoc_request` (a `DeviceCertificateSigningRequest`) and `adhoc_response`.
- The batched service: `parse_batch_request` (a `SubmitCSRBatch`), `submit_batch_status` (its answer) and
  `batch_result` / `batch_result_chunks` (the poll's answer, up to 50,000 `DeviceCertificate` elements).
- Organisation CSR submission (smki's own answer, mirroring the ad hoc one): `organisation_response`.
- `Code`: every error code the services answer, in one table; the per-CSR codes of a request's own checks
  are smki.requests.outcomes' (`csr_error`), the same a batch file's status records carry.

Requests are checked against the XSDs in smki/data/schemas (compiled once per process) by lxml with no
entity resolution, no network, no DTD and no huge trees; a DOCTYPE is refused outright (billion laughs,
external entities). A request the service cannot answer raises `MessageRefused`, whose `error` is the
answer's ErrorCode and whose `request_id` is the client's ID when it could be read (None when the request
was too malformed to read it: the answer then carries no ID, as Appendices A and C show).

Answers are rendered as text, not trees: a batch result of 50,000 certificates renders in well under
half a second, and `batch_result_chunks` streams it. Every text a client or an exception supplies is
escaped; the tests validate every answer against the schema.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from smki.errors import BadInputError
from smki.requests.outcomes import Outcome
from smki.shipped import xml_schema

VERSION = "1.0"  # the interfaces' version: in the URLs, the schemas' file names and every message
CONTENT_TYPE = "application/xml;charset=UTF-8"
MAX_BATCH_CSRS = 50_000  # SEC L8.2; the policy's batch limit is what the service passes as `limit`
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


# -- statuses --------------------------------------------------------------------------------------
class AdhocStatus(enum.StrEnum):
    """An ad hoc answer's Status (Appendix A, "Response Status")."""

    SUCCESS = "SUCCESS"
    UNKNOWN_DEVICE = "UNKNOWN_DEVICE"  # UD: a replacement for a device that never had a certificate
    ISSUANCE_ANOMALY = "ISSUANCE_ANOMALY"  # CA: the Registration Authority must act first
    CSR_ERROR = "CSR_ERROR"  # CR: a corrupt or wrongly formed CSR
    CA_ERROR = "CA_ERROR"  # CA: an internal failure; resubmitting may work
    FORMAT_ERROR = "FORMAT_ERROR"  # FM: the request XML
    WORKFLOW_ERROR = "WORKFLOW_ERROR"  # WF: a workflow rule; resubmitting will not help


class OrganisationStatus(enum.StrEnum):
    """An Organisation CSR answer's Status: the ad hoc ones that can apply (no device to be unknown)."""

    SUCCESS = "SUCCESS"
    ISSUANCE_ANOMALY = "ISSUANCE_ANOMALY"
    CSR_ERROR = "CSR_ERROR"
    CA_ERROR = "CA_ERROR"
    FORMAT_ERROR = "FORMAT_ERROR"
    WORKFLOW_ERROR = "WORKFLOW_ERROR"


class BatchStatus(enum.StrEnum):
    """A batch's life cycle, as SubmitCSRBatchStatus and CSRBatchResult report it (Appendices C and D)."""

    PENDING = "PENDING"  # accepted, awaiting the Registration Authority's approval
    REJECTED = "REJECTED"  # rejected by the Registration Authority; goes no further
    PARSING = "PARSING"  # approved; being parsed
    QUEUED = "QUEUED"  # parsed, waiting to be processed
    PROCESSING = "PROCESSING"
    PAUSED = "PAUSED"  # outside the daily processing window
    COMPLETED = "COMPLETED"  # the answer carries one DeviceCertificate per DeviceCSR
    TAMPERED = "TAMPERED"  # the stored upload no longer matches its digest; goes no further
    FORMAT_ERROR = "FORMAT_ERROR"  # the submission or the poll itself failed: FM:
    WORKFLOW_ERROR = "WORKFLOW_ERROR"  # ... WF:

    @property
    def is_error(self) -> bool:
        return self in (BatchStatus.FORMAT_ERROR, BatchStatus.WORKFLOW_ERROR)


SUBMISSION_STATUSES = frozenset({BatchStatus.PENDING, BatchStatus.FORMAT_ERROR, BatchStatus.WORKFLOW_ERROR})


class CsrStatus(enum.StrEnum):
    """One DeviceCSR's outcome in a completed batch (Appendix D, "Batched CSR Result: Status values")."""

    SUCCESS = "SUCCESS"
    ISSUANCE_ANOMALY = "ISSUANCE_ANOMALY"  # CA:
    INELIGIBLE = "INELIGIBLE"  # IN: the eligibility check of SEC L3.16
    CSR_ERROR = "CSR_ERROR"  # CR:
    CA_ERROR = "CA_ERROR"  # CA:
    WORKFLOW_ERROR = "WORKFLOW_ERROR"  # WF:


# -- error codes -----------------------------------------------------------------------------------
_ERROR_CODE = re.compile(r"[A-Z]{2}:[A-Za-z0-9]+")
MAX_ERROR_CODE_LENGTH = 10  # Appendices B and E
MAX_ERROR_TEXT_LENGTH = 200  # ours: a reason quoted from a library stays one short line


def one_line(text: str, limit: int = MAX_ERROR_TEXT_LENGTH) -> str:
    """`text` on one line and at most `limit` characters, for an ErrorText made from an exception's message."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class ErrorCode:
    """An answer's Error: `code` as the schemas allow it (two capitals, ':', letters and digits, at most
    10 characters) and a one-line human-readable `text`."""

    code: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or len(self.code) > MAX_ERROR_CODE_LENGTH or not _ERROR_CODE.fullmatch(self.code):
            raise ValueError(f"not an SMKI error code (AA:x, at most {MAX_ERROR_CODE_LENGTH} characters): {self.code!r}")
        if not isinstance(self.text, str) or not self.text or self.text != one_line(self.text, len(self.text)):
            raise ValueError(f"an error text is one non-empty line, not {self.text!r}")

    @property
    def family(self) -> str:
        """`FM`, `CR`, `UD`, `CA`, `WF` or `IN`."""
        return self.code[:2]


class Code(enum.Enum):
    """Every error code the CSR web services answer that is not a request check's own (those are
    smki.requests.outcomes.Outcome's, through `csr_error`). (code, default text)."""

    # FM: the request XML. Appendix C and D's codes, also answered by the ad hoc service and Organisation CSRs.
    INVALID_XML = ("FM:AA1", "Invalid XML in request")
    TOO_MANY_CSRS = ("FM:AA2", "Number of submitted CSRs exceeds maximum volume")
    UNKNOWN_BATCH = ("FM:AA3", "Unknown BatchId")
    BODY_TOO_LARGE = ("FM:AA4", "The request body is over the limit")
    # WF: workflow rules. WF:BB1 and WF:BB2 are Appendix C and D's; the others are smki's.
    BATCH_STATE_UNREADABLE = ("WF:BB1", "The batch state could not be read")
    BATCH_NOT_ACCEPTED = ("WF:BB2", "The batch was not accepted")
    ROLE_NOT_HELD = ("WF:WF1", "The subscriber does not hold the role it acts for")
    INELIGIBLE = ("WF:WF2", "The requester is not eligible for this certificate")
    NOT_PERMITTED = ("WF:WF4", "The Certificate Policy does not permit this certificate")
    # UD: replacement requests
    UNKNOWN_DEVICE = ("UD:UD1", "The device has no Device Certificate to replace")
    # CA: the CA. CA:0001 is the batch's own code for a fault of ours on one request.
    CA_FAILURE = (Outcome.CA_ERROR.code, "An internal error prevented issuance; resubmitting may succeed")
    DEVICE_CAP = ("CA:CA2", "The device has reached its Device Certificate cap")
    ANOMALY = ("CA:CA3", "Issuing would be anomalous; the Registration Authority must act first")
    # CR: a CSR the web services' XML carried but that is no PKCS#10 at all (the batch files' FM:0001/FM:0002,
    # which in the web services would read as an XML error)
    CSR_NOT_DECODABLE = ("CR:CR1", "The CSR is not a DER PKCS#10 request")

    @property
    def code(self) -> str:
        return self.value[0]

    def error(self, text: str | None = None) -> ErrorCode:
        """This code's ErrorCode, with `text` (made one line) in place of the default text."""
        return ErrorCode(self.code, one_line(text) if text else self.value[1])


_NOT_DECODABLE = (Outcome.NOT_DECODABLE, Outcome.NOT_PKCS10)


def csr_error(outcome: Outcome, reason: str) -> tuple[CsrStatus, ErrorCode]:
    """A request check's refusal (smki.requests.outcomes: the codes `smki ca issue-batch` records) as a
    DeviceCertificate's Status and Error. CR: and IN: codes are kept; a request that is no PKCS#10 is CR:CR1
    (FM: means the XML here); the batch's CA:0001 (a fault of ours) is CA_ERROR."""
    if outcome in _NOT_DECODABLE:
        return CsrStatus.CSR_ERROR, Code.CSR_NOT_DECODABLE.error(reason)
    if outcome is Outcome.INELIGIBLE:
        return CsrStatus.INELIGIBLE, ErrorCode(outcome.code, one_line(reason))
    if outcome is Outcome.CA_ERROR:
        return CsrStatus.CA_ERROR, ErrorCode(outcome.code, one_line(reason))
    return CsrStatus.CSR_ERROR, ErrorCode(outcome.code, one_line(reason))


# -- refusals --------------------------------------------------------------------------------------
class MessageRefused(BadInputError):
    """A request the service answers with an Error: `error` goes into the answer, and `request_id` is the
    client's ID when it could be read (None: the answer carries no ID). The message is one line."""

    def __init__(self, error: ErrorCode, request_id: str | None = None) -> None:
        self.error, self.request_id = error, request_id
        super().__init__(f"{error.code} {error.text}")


def _invalid(detail: str, request_id: str | None = None) -> MessageRefused:
    return MessageRefused(Code.INVALID_XML.error(f"Invalid XML in request: {detail}"), request_id)


# -- schemas ---------------------------------------------------------------------------------------
class Schema(enum.Enum):
    """The shipped XSDs (smki/data/schemas), by the root elements each holds."""

    ADHOC = "adhoc-device-csr-1.0.xsd"  # Appendix B
    BATCHED = "batched-device-csr-1.0.xsd"  # Appendix E
    ORGANISATION = "organisation-csr-1.0.xsd"  # smki's


ADHOC_REQUEST, ADHOC_RESPONSE = "DeviceCertificateSigningRequest", "DeviceCertificateSigningResponse"
BATCH_REQUEST, BATCH_STATUS, BATCH_RESULT = "SubmitCSRBatch", "SubmitCSRBatchStatus", "CSRBatchResult"
ORGANISATION_RESPONSE = "OrganisationCertificateSigningResponse"


def _safe_parser(**options) -> etree.XMLParser:
    """No entities resolved, no DTD loaded, nothing fetched, no huge text nodes; comments and PIs dropped."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True, **options)


@cache
def schema(which: Schema) -> etree.XMLSchema:
    """The compiled schema, once per process (lxml's XMLSchema is safe to share between threads for validation)."""
    return etree.XMLSchema(etree.fromstring(xml_schema(which.value), _safe_parser()))


def validate(message: bytes, which: Schema) -> list[str]:
    """The schema's complaints about `message` (an answer, in the tests): [] when it is valid."""
    document = etree.fromstring(message, _safe_parser())
    checker = schema(which)
    return [] if checker.validate(document) else [f"line {e.line}: {e.message}" for e in checker.error_log]


_DOCTYPE = b"<!DOCTYPE"


def _refuse_doctype_text(body: bytes) -> None:
    """Before parsing: a DOCTYPE is where entity expansions (billion laughs) and external entities live, and no
    request needs one. (A UTF-16 body hides it from this scan: the parser's own limits and `_refuse_doctype`
    still stand.)"""
    if _DOCTYPE in body:
        raise _invalid("a DOCTYPE is not allowed")


def _refuse_doctype(tree, request_id: str | None = None) -> None:
    """After parsing, whatever the encoding: the document has no DOCTYPE."""
    info = tree.docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise _invalid("a DOCTYPE is not allowed", request_id)


def _root_name(element, expected: str) -> None:
    if not isinstance(element.tag, str) or element.tag != expected:
        raise _invalid(f"the root element is {_printable_tag(element)}, not {expected}")


def _printable_tag(element) -> str:
    tag = element.tag if isinstance(element.tag, str) else "not an element"
    return one_line(tag, 60)


_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_ID_ATTRIBUTE = "ID"


def _readable_id(element, longest: int) -> str | None:
    """The element's ID when it is one the answer may echo (1-`longest` characters), else None."""
    value = element.get(_ID_ATTRIBUTE)
    return value if value is not None and 1 <= len(value) <= longest else None


def _base64_text(text: str | None, what: str, request_id: str | None) -> bytes:
    """The DER a CSR element carries: RFC 7468 base64text, with no PEM lines and no white space (Appendices A, C)."""
    text = text or ""
    if "-----" in text:
        raise _invalid(f"{what} has PEM armour (-----BEGIN/END lines); send the Base64 alone", request_id)
    if not _BASE64_TEXT.fullmatch(text):
        detail = "white space" if any(c.isspace() for c in text) else "characters that are not Base64" if text else "nothing"
        raise _invalid(f"{what} holds {detail}; it must be Base64 with no white space", request_id)
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise _invalid(f"{what} is not valid Base64 (its padding)", request_id) from None


def _schema_detail(error_log) -> str:
    entry = error_log.last_error
    return one_line(f"line {entry.line}: {entry.message}", 160) if entry is not None else "it does not match the schema"


# -- the ad hoc service ----------------------------------------------------------------------------
ADHOC_ID_LENGTH = 32
ADHOC_BODY_LIMIT = 64 * 1024  # a CSR is under 1 KiB; the service refuses larger bodies before parsing


@dataclass(frozen=True)
class AdhocRequest:
    """A DeviceCertificateSigningRequest: the client's ID and the CSR's DER (not yet checked as a PKCS#10)."""

    id: str
    csr_der: bytes


def _document(body: bytes):
    """The parsed document of a small request, or FM:AA1 (no ID: an unreadable request has none)."""
    if not isinstance(body, (bytes, bytearray)) or not body.strip():
        raise _invalid("the body is empty")
    _refuse_doctype_text(body)
    try:
        return etree.parse(BytesIO(body), _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise _invalid(one_line(str(exc), 160)) from None


def parse_adhoc_request(body: bytes) -> AdhocRequest:
    """The request of a POST to the ad hoc service, checked against Appendix B's schema; MessageRefused otherwise."""
    tree = _document(body)
    _refuse_doctype(tree)
    root = tree.getroot()
    _root_name(root, ADHOC_REQUEST)
    request_id = _readable_id(root, ADHOC_ID_LENGTH)
    if request_id is None:
        raise _invalid(f"{ADHOC_REQUEST} has no ID of 1-{ADHOC_ID_LENGTH} characters")
    # first the raw text, which says what is wrong with a CSR more plainly than the schema (and the schema's
    # base64Binary collapses white space, so only the raw text shows it)
    csr = root.find("CertificateSigningRequest")
    der = _base64_text(csr.text, "CertificateSigningRequest", request_id) if csr is not None else None
    checker = schema(Schema.ADHOC)
    if not checker.validate(tree):
        raise _invalid(_schema_detail(checker.error_log), request_id)
    return AdhocRequest(request_id, der)


def _id_attribute(request_id: str | None, longest: int) -> str:
    if request_id is None:
        return ""
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= longest:
        raise ValueError(f"an answer's ID is 1-{longest} characters, not {request_id!r}")
    return f" ID={quoteattr(request_id)}"


def _error_element(error: ErrorCode) -> str:
    return f"<Error><ErrorCode>{error.code}</ErrorCode><ErrorText>{escape(error.text)}</ErrorText></Error>"


def _certificate_text(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


def _outcome(success: bool, certificate_der: bytes | None, error: ErrorCode | None) -> str:
    """`<Certificate>` for a success, `<Error>` otherwise: exactly one, as the schemas' choice says."""
    if success:
        if not certificate_der or error is not None:
            raise ValueError("a SUCCESS answer carries a certificate and no error")
        return f"<Certificate>{_certificate_text(certificate_der)}</Certificate>"
    if not isinstance(error, ErrorCode) or certificate_der is not None:
        raise ValueError("an answer other than SUCCESS carries an ErrorCode and no certificate")
    return _error_element(error)


def _positive(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} is a positive integer, not {value!r}")
    return value


def _signing_response(root: str, request_id: str | None, build: str, transaction_id: int, status: enum.StrEnum,
                      certificate_der: bytes | None, error: ErrorCode | None) -> bytes:
    outcome = _outcome(status == "SUCCESS", certificate_der, error)
    return (f"{_XML_DECLARATION}<{root}{_id_attribute(request_id, ADHOC_ID_LENGTH)}><Version>{VERSION}</Version>"
            f"<Build>{escape(build)}</Build><TransactionId>{_positive(transaction_id, 'TransactionId')}</TransactionId>"
            f"<Status>{status.value}</Status>{outcome}</{root}>\n").encode("utf-8")


def adhoc_response(*, request_id: str | None, build: str, transaction_id: int, status: AdhocStatus,
                   certificate_der: bytes | None = None, error: ErrorCode | None = None) -> bytes:
    """A DeviceCertificateSigningResponse: the certificate for SUCCESS, else the error; no ID when None."""
    return _signing_response(ADHOC_RESPONSE, request_id, build, transaction_id, AdhocStatus(status), certificate_der, error)


def organisation_response(*, request_id: str | None, build: str, transaction_id: int, status: OrganisationStatus,
                          certificate_der: bytes | None = None, error: ErrorCode | None = None) -> bytes:
    """smki's OrganisationCertificateSigningResponse (schemas/organisation-csr-1.0.xsd): the ad hoc answer's shape."""
    return _signing_response(ORGANISATION_RESPONSE, request_id, build, transaction_id, OrganisationStatus(status),
                             certificate_der, error)


# -- the batched service ---------------------------------------------------------------------------
BATCH_ID_LENGTH = 256
CSR_ID_LENGTH = 100


@dataclass(frozen=True)
class BatchRequest:
    """A SubmitCSRBatch: the client's batch ID and its (DeviceCSR ID, CSR DER) pairs, in order, IDs unique."""

    id: str
    entries: tuple[tuple[str, bytes], ...]


class _BatchReader:
    """One pass over a SubmitCSRBatch, validated against Appendix E's schema as it is parsed, counting
    DeviceCSR elements as they open so that a batch over the limit is refused at limit + 1, before the rest
    is read or any more entries are built; each element is freed once read."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.request_id: str | None = None
        self.seen: set[str] = set()
        self.entries: list[tuple[str, bytes]] = []

    def read(self, body: bytes) -> BatchRequest:
        events = etree.iterparse(BytesIO(body), events=("start", "end"), schema=schema(Schema.BATCHED),
                                 resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                                 remove_comments=True, remove_pis=True)
        try:
            for event, element in events:
                if event == "start":
                    self._start(element)
                elif element.tag == "DeviceCSR":
                    self._entry(element)
        except etree.XMLSyntaxError as exc:  # not well-formed, or not the schema's (iterparse validates as it goes)
            raise _invalid(one_line(str(exc), 160), self.request_id) from None
        if self.request_id is None:
            raise _invalid("the body is empty")
        return BatchRequest(self.request_id, tuple(self.entries))

    def _start(self, element) -> None:
        if element.getparent() is None:
            _refuse_doctype(element.getroottree())
            _root_name(element, BATCH_REQUEST)
            self.request_id = _readable_id(element, BATCH_ID_LENGTH)
            if self.request_id is None:
                raise _invalid(f"{BATCH_REQUEST} has no ID of 1-{BATCH_ID_LENGTH} characters")
        elif element.tag == "DeviceCSR":
            if len(self.seen) >= self.limit:
                raise MessageRefused(Code.TOO_MANY_CSRS.error(
                    f"Number of submitted CSRs exceeds maximum volume ({self.limit})"), self.request_id)

    def _entry(self, element) -> None:
        csr_id = element.get(_ID_ATTRIBUTE)
        if csr_id is None or not 1 <= len(csr_id) <= CSR_ID_LENGTH:
            raise _invalid(f"a DeviceCSR has no ID of 1-{CSR_ID_LENGTH} characters", self.request_id)
        if csr_id in self.seen:
            raise _invalid(f"DeviceCSR ID {one_line(csr_id, 100)!r} appears twice", self.request_id)
        self.seen.add(csr_id)
        self.entries.append((csr_id, _base64_text(element.text, f"DeviceCSR {one_line(csr_id, 100)!r}", self.request_id)))
        element.clear()
        parent = element.getparent()
        if parent is not None:  # drop the read siblings too: the tree never holds more than one DeviceCSR
            while element.getprevious() is not None:
                del parent[0]


def parse_batch_request(body: bytes, limit: int = MAX_BATCH_CSRS) -> BatchRequest:
    """The request of a POST to SubmitCSRBatch, checked against Appendix E's schema: FM:AA1 for invalid XML,
    a wrong root, a missing ID, a duplicate DeviceCSR ID, PEM armour or white space in a CSR; FM:AA2 when it
    holds more than `limit` DeviceCSR elements (counted while parsing)."""
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"a batch limit is a positive integer, not {limit!r}")
    if not isinstance(body, (bytes, bytearray)) or not body.strip():
        raise _invalid("the body is empty")
    _refuse_doctype_text(body)
    return _BatchReader(limit).read(bytes(body))


def submit_batch_status(*, request_id: str | None, build: str, status: BatchStatus, batch_id: int | None = None,
                        error: ErrorCode | None = None) -> bytes:
    """A SubmitCSRBatchStatus: PENDING with the BatchId, or FORMAT_ERROR / WORKFLOW_ERROR with the error."""
    status = BatchStatus(status)
    if status not in SUBMISSION_STATUSES:
        raise ValueError(f"a submission is answered {', '.join(sorted(SUBMISSION_STATUSES))}, not {status}")
    return (_XML_DECLARATION + _batch_head(BATCH_STATUS, request_id, build, status)
            + _batch_outcome(status, batch_id, error) + f"</{BATCH_STATUS}>\n").encode("utf-8")


def _batch_head(root: str, request_id: str | None, build: str, status: BatchStatus) -> str:
    return (f"<{root}{_id_attribute(request_id, BATCH_ID_LENGTH)}><Version>{VERSION}</Version>"
            f"<Build>{escape(build)}</Build><BatchStatus>{status.value}</BatchStatus>")


def _batch_outcome(status: BatchStatus, batch_id: int | None, error: ErrorCode | None) -> str:
    if status.is_error:
        if not isinstance(error, ErrorCode) or batch_id is not None:
            raise ValueError(f"a {status} answer carries an ErrorCode and no BatchId")
        return _error_element(error)
    if error is not None:
        raise ValueError(f"a {status} answer carries no error")
    return f"<BatchId>{_positive(batch_id, 'BatchId')}</BatchId>"


@dataclass(frozen=True, slots=True)
class CsrResult:
    """One DeviceCertificate of a completed batch: the DeviceCSR's ID, its Status, and the certificate's
    DER (SUCCESS) or the error (any other status)."""

    csr_id: str
    status: CsrStatus
    certificate_der: bytes | None = None
    error: ErrorCode | None = None


def _device_certificate(result: CsrResult) -> str:
    if not isinstance(result.csr_id, str) or not 1 <= len(result.csr_id) <= CSR_ID_LENGTH:
        raise ValueError(f"a DeviceCertificate's ID is 1-{CSR_ID_LENGTH} characters, not {result.csr_id!r}")
    status = CsrStatus(result.status)
    return (f"<DeviceCertificate ID={quoteattr(result.csr_id)}><Status>{status.value}</Status>"
            f"{_outcome(status is CsrStatus.SUCCESS, result.certificate_der, result.error)}</DeviceCertificate>")


_CHUNK = 1000  # DeviceCertificate elements per streamed chunk: ~0.6 MB, few writes


def batch_result_chunks(*, request_id: str | None, build: str, status: BatchStatus, batch_id: int | None = None,
                        results: Iterable[CsrResult] | None = None, error: ErrorCode | None = None) -> Iterator[bytes]:
    """A CSRBatchResult in pieces, for a streamed answer: FORMAT_ERROR / WORKFLOW_ERROR with the error; any
    other status with the BatchId; COMPLETED (only) with one DeviceCertificate per DeviceCSR."""
    status = BatchStatus(status)
    if results is not None and status is not BatchStatus.COMPLETED:
        raise ValueError(f"only a COMPLETED batch's answer carries DeviceCertificate elements, not a {status} one")
    head = _XML_DECLARATION + _batch_head(BATCH_RESULT, request_id, build, status) + _batch_outcome(status, batch_id, error)
    yield head.encode("utf-8")
    if status is BatchStatus.COMPLETED:
        chunk: list[str] = []
        for result in results or ():
            chunk.append(_device_certificate(result))
            if len(chunk) == _CHUNK:
                yield "".join(chunk).encode("utf-8")
                chunk = []
        if chunk:
            yield "".join(chunk).encode("utf-8")
    yield f"</{BATCH_RESULT}>\n".encode("utf-8")


def batch_result(**fields) -> bytes:
    """The whole CSRBatchResult (the arguments are batch_result_chunks')."""
    return b"".join(batch_result_chunks(**fields))
