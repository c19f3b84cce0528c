"""The CSR web services' XML (smki.web.messages): Appendix M's messages parsed and rendered, every answer
checked against the shipped XSDs, hostile XML refused with the documented codes.

The golden files in tests/golden/messages are written by hand from Appendix M's examples, not produced by
the code under test; renderings are compared with them after canonicalisation."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from lxml import etree

from smki.requests.outcomes import Outcome
from smki.web import messages as m

GOLDEN = Path(__file__).resolve().parent / "golden" / "messages"
FIVE = bytes([0x30, 0x03, 0x02, 0x01, 0x05])  # "MAMCAQU=" in the golden files
SIX, SEVEN = bytes([0x30, 0x03, 0x02, 0x01, 0x06]), bytes([0x30, 0x03, 0x02, 0x01, 0x07])


def canonical(xml: bytes) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    return etree.tostring(etree.fromstring(xml, parser), method="c14n")


def golden(name: str) -> bytes:
    return (GOLDEN / name).read_bytes()


def assert_renders_golden(rendered: bytes, name: str, schema: m.Schema) -> None:
    assert m.validate(rendered, schema) == []
    assert canonical(rendered) == canonical(golden(name))


def refused(parse, body: bytes, **kwargs) -> m.MessageRefused:
    with pytest.raises(m.MessageRefused) as caught:
        parse(body, **kwargs)
    return caught.value


# -- schemas and golden files ----------------------------------------------------------------------
@pytest.mark.parametrize("name, schema", [
    ("adhoc-request.xml", m.Schema.ADHOC), ("adhoc-response-success.xml", m.Schema.ADHOC),
    ("adhoc-response-format-error.xml", m.Schema.ADHOC), ("adhoc-response-csr-error.xml", m.Schema.ADHOC),
    ("batch-request.xml", m.Schema.BATCHED), ("batch-status-pending.xml", m.Schema.BATCHED),
    ("batch-status-format-error.xml", m.Schema.BATCHED), ("batch-status-too-many.xml", m.Schema.BATCHED),
    ("batch-status-workflow-error.xml", m.Schema.BATCHED), ("batch-result-pending.xml", m.Schema.BATCHED),
    ("batch-result-completed.xml", m.Schema.BATCHED), ("batch-result-unknown.xml", m.Schema.BATCHED),
    ("batch-result-workflow-error.xml", m.Schema.BATCHED),
    ("organisation-response-success.xml", m.Schema.ORGANISATION),
    ("organisation-response-workflow-error.xml", m.Schema.ORGANISATION)])
def test_the_appendix_examples_are_valid_against_the_shipped_schemas(name, schema):
    assert m.validate(golden(name), schema) == []


def test_the_schemas_hold_the_appendix_facets():
    """Written from Appendices B and E: a 33-character ad hoc ID, a 257-character batch ID, a DeviceCSR ID
    that is no xs:ID, an 11-character or lower-case error code, TransactionId 0 are all invalid."""
    answer = golden("adhoc-response-csr-error.xml")
    assert m.validate(answer.replace(b'ID="clientid1"', b'ID="' + b"x" * 33 + b'"'), m.Schema.ADHOC)
    assert m.validate(answer.replace(b"CR:9999", b"CR:99999999"), m.Schema.ADHOC)
    assert m.validate(answer.replace(b"CR:9999", b"cr:9999"), m.Schema.ADHOC)
    assert m.validate(answer.replace(b"CR:9999", b"CR-9999"), m.Schema.ADHOC)
    assert m.validate(answer.replace(b"<TransactionId>12345", b"<TransactionId>0"), m.Schema.ADHOC)
    request = golden("batch-request.xml")
    assert m.validate(request.replace(b'ID="b1999"', b'ID="' + b"b" * 257 + b'"'), m.Schema.BATCHED)
    assert m.validate(request.replace(b'ID="b1999"', b'ID="' + b"b" * 256 + b'"'), m.Schema.BATCHED) == []
    assert m.validate(request.replace(b'ID="ID0"', b'ID="0ID"'), m.Schema.BATCHED)  # an xs:ID is an NCName
    assert m.validate(request.replace(b'ID="ID1"', b'ID="ID0"'), m.Schema.BATCHED)  # unique
    assert m.validate(request.replace(b"<Version>1.0", b"<Version>1.1"), m.Schema.BATCHED)


# -- rendering -------------------------------------------------------------------------------------
def test_adhoc_answers_render_as_the_appendix_shows():
    assert_renders_golden(m.adhoc_response(request_id="clientid1", build="1.1.4", transaction_id=12345,
                                           status=m.AdhocStatus.SUCCESS, certificate_der=FIVE),
                          "adhoc-response-success.xml", m.Schema.ADHOC)
    assert_renders_golden(m.adhoc_response(request_id=None, build="1.1.4", transaction_id=12344, status=m.AdhocStatus.FORMAT_ERROR,
                                           error=m.Code.INVALID_XML.error()), "adhoc-response-format-error.xml", m.Schema.ADHOC)
    assert_renders_golden(m.adhoc_response(request_id="clientid1", build="1.1.4", transaction_id=12345, status=m.AdhocStatus.CSR_ERROR,
                                           error=m.ErrorCode("CR:9999", "Request for duplicate certificate not permitted")),
                          "adhoc-response-csr-error.xml", m.Schema.ADHOC)


def test_batch_answers_render_as_the_appendix_shows():
    assert_renders_golden(m.submit_batch_status(request_id="b1999", build="2.0.8", status=m.BatchStatus.PENDING, batch_id=1234),
                          "batch-status-pending.xml", m.Schema.BATCHED)
    assert_renders_golden(m.submit_batch_status(request_id=None, build="2.0.8", status=m.BatchStatus.FORMAT_ERROR,
                                                error=m.Code.INVALID_XML.error()), "batch-status-format-error.xml", m.Schema.BATCHED)
    assert_renders_golden(m.submit_batch_status(request_id="b1999", build="2.0.8", status=m.BatchStatus.FORMAT_ERROR,
                                                error=m.Code.TOO_MANY_CSRS.error()), "batch-status-too-many.xml", m.Schema.BATCHED)
    assert_renders_golden(m.submit_batch_status(request_id="b1999", build="2.0.8", status=m.BatchStatus.WORKFLOW_ERROR,
                                                error=m.ErrorCode("WF:BB2", "An internal error.")), "batch-status-workflow-error.xml",
                          m.Schema.BATCHED)
    assert_renders_golden(m.batch_result(request_id="b1999", build="2.0.8", status=m.BatchStatus.PENDING, batch_id=1234),
                          "batch-result-pending.xml", m.Schema.BATCHED)
    results = [m.CsrResult("ID000000", m.CsrStatus.SUCCESS, FIVE),
               m.CsrResult("ID000001", m.CsrStatus.CSR_ERROR, error=m.ErrorCode("CR:CC1", "Wrong CSR OID")),
               m.CsrResult("ID000002", m.CsrStatus.SUCCESS, SEVEN)]
    assert_renders_golden(m.batch_result(request_id="b1999", build="2.0.8", status=m.BatchStatus.COMPLETED, batch_id=1234,
                                         results=iter(results)), "batch-result-completed.xml", m.Schema.BATCHED)
    assert_renders_golden(m.batch_result(request_id=None, build="2.0.8", status=m.BatchStatus.FORMAT_ERROR,
                                         error=m.Code.UNKNOWN_BATCH.error()), "batch-result-unknown.xml", m.Schema.BATCHED)
    assert_renders_golden(m.batch_result(request_id=None, build="2.0.8", status=m.BatchStatus.WORKFLOW_ERROR,
                                         error=m.ErrorCode("WF:BB1", "An Internal Error")), "batch-result-workflow-error.xml",
                          m.Schema.BATCHED)


def test_organisation_answers_render_in_the_documented_shape():
    assert_renders_golden(m.organisation_response(request_id="org-1", build="1.1.4", transaction_id=7,
                                                  status=m.OrganisationStatus.SUCCESS, certificate_der=FIVE),
                          "organisation-response-success.xml", m.Schema.ORGANISATION)
    assert_renders_golden(m.organisation_response(request_id=None, build="1.1.4", transaction_id=8,
                                                  status=m.OrganisationStatus.WORKFLOW_ERROR, error=m.Code.INELIGIBLE.error()),
                          "organisation-response-workflow-error.xml", m.Schema.ORGANISATION)


@pytest.mark.parametrize("status", list(m.AdhocStatus))
def test_every_adhoc_status_renders_a_valid_answer(status):
    success = status is m.AdhocStatus.SUCCESS
    answer = m.adhoc_response(request_id="x", build="b", transaction_id=1, status=status,
                              certificate_der=FIVE if success else None, error=None if success else m.Code.CA_FAILURE.error())
    assert m.validate(answer, m.Schema.ADHOC) == []
    assert etree.fromstring(answer).findtext("Status") == status.value


@pytest.mark.parametrize("status", list(m.BatchStatus))
def test_every_batch_status_renders_a_valid_poll_answer(status):
    error = m.Code.UNKNOWN_BATCH.error() if status.is_error else None
    answer = m.batch_result(request_id="b", build="b", status=status, batch_id=None if error else 9, error=error,
                            results=[m.CsrResult("a", m.CsrStatus.SUCCESS, FIVE)] if status is m.BatchStatus.COMPLETED else None)
    assert m.validate(answer, m.Schema.BATCHED) == []
    if status in m.SUBMISSION_STATUSES:
        assert m.validate(m.submit_batch_status(request_id="b", build="b", status=status, batch_id=None if error else 9, error=error),
                          m.Schema.BATCHED) == []


@pytest.mark.parametrize("status", list(m.CsrStatus))
def test_every_csr_status_renders_a_valid_device_certificate(status):
    success = status is m.CsrStatus.SUCCESS
    result = m.CsrResult("ID1", status, FIVE if success else None, None if success else m.ErrorCode("CA:0001", "x"))
    answer = m.batch_result(request_id="b", build="b", status=m.BatchStatus.COMPLETED, batch_id=1, results=[result])
    assert m.validate(answer, m.Schema.BATCHED) == []


def test_text_from_clients_and_exceptions_is_escaped_and_made_one_line():
    error = m.Code.CA_FAILURE.error('the "HSM" said <no> & \n then more')
    answer = m.adhoc_response(request_id='a"<&>', build="1.0 <dev> & co", transaction_id=3, status=m.AdhocStatus.CA_ERROR, error=error)
    assert m.validate(answer, m.Schema.ADHOC) == []
    root = etree.fromstring(answer)
    assert (root.get("ID"), root.findtext("Build"), root.findtext("Error/ErrorText")) == (
        'a"<&>', "1.0 <dev> & co", 'the "HSM" said <no> & then more')


def test_inconsistent_answers_are_a_bug_not_a_message():
    with pytest.raises(ValueError):
        m.adhoc_response(request_id="x", build="b", transaction_id=1, status=m.AdhocStatus.SUCCESS)
    with pytest.raises(ValueError):
        m.adhoc_response(request_id="x", build="b", transaction_id=1, status=m.AdhocStatus.CSR_ERROR, certificate_der=FIVE)
    with pytest.raises(ValueError):
        m.adhoc_response(request_id="x", build="b", transaction_id=0, status=m.AdhocStatus.SUCCESS, certificate_der=FIVE)
    with pytest.raises(ValueError):
        m.adhoc_response(request_id="x" * 33, build="b", transaction_id=1, status=m.AdhocStatus.SUCCESS, certificate_der=FIVE)
    with pytest.raises(ValueError):
        m.submit_batch_status(request_id="b", build="b", status=m.BatchStatus.COMPLETED, batch_id=1)
    with pytest.raises(ValueError):
        m.submit_batch_status(request_id="b", build="b", status=m.BatchStatus.PENDING, error=m.Code.INVALID_XML.error())
    with pytest.raises(ValueError):
        m.batch_result(request_id="b", build="b", status=m.BatchStatus.PENDING, batch_id=1, results=[])


@pytest.mark.parametrize("code", ["", "CR", "CR:", "cr:1", "C1:1", "CR:12345678", "CR:1-2", "CR: 1", "CRR:1"])
def test_an_error_code_is_checked_where_it_is_made(code):
    with pytest.raises(ValueError):
        m.ErrorCode(code, "text")


def test_an_error_text_is_one_non_empty_line():
    for text in ("", "two\nlines", " padded"):
        with pytest.raises(ValueError):
            m.ErrorCode("CR:1", text)


def test_every_code_of_the_table_is_an_error_code_of_its_family():
    codes = [member.code for member in m.Code]
    assert len(codes) == len(set(codes))
    families = {member.error().family for member in m.Code}
    assert families <= {"FM", "WF", "UD", "CA", "CR", "IN"}
    assert (m.Code.INVALID_XML.code, m.Code.TOO_MANY_CSRS.code, m.Code.UNKNOWN_BATCH.code) == ("FM:AA1", "FM:AA2", "FM:AA3")
    assert (m.Code.BATCH_STATE_UNREADABLE.code, m.Code.BATCH_NOT_ACCEPTED.code) == ("WF:BB1", "WF:BB2")


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_request_check_code_maps_to_a_per_csr_status_of_its_family(outcome):
    status, error = m.csr_error(outcome, "reason\nover two lines")
    family = {m.CsrStatus.CSR_ERROR: "CR", m.CsrStatus.INELIGIBLE: "IN", m.CsrStatus.CA_ERROR: "CA"}[status]
    assert error.family == family and "\n" not in error.text
    if outcome.code[:2] in ("CR", "IN", "CA"):
        assert error.code == outcome.code  # the batch files' own code, kept


def test_fifty_thousand_device_certificates_render_fast_and_valid():
    certificate = bytes(range(256)) * 2  # a Device Certificate is about 500 bytes
    results = [m.CsrResult(f"ID{i:06d}", m.CsrStatus.SUCCESS, certificate) if i % 10 else
               m.CsrResult(f"ID{i:06d}", m.CsrStatus.INELIGIBLE, error=m.ErrorCode("IN:0001", "not eligible")) for i in range(50_000)]
    started = time.perf_counter()
    chunks = list(m.batch_result_chunks(request_id="b", build="1", status=m.BatchStatus.COMPLETED, batch_id=5, results=results))
    elapsed = time.perf_counter() - started
    assert len(chunks) > 10  # streamed in pieces, not one 25 MB string
    assert elapsed < 1.5, elapsed  # about 0.3 s alone on this machine; the bound leaves room for a busy CI
    answer = b"".join(chunks)
    assert m.validate(answer, m.Schema.BATCHED) == []
    root = etree.fromstring(answer, etree.XMLParser(huge_tree=True))
    assert len(root.findall("DeviceCertificate")) == 50_000
    assert base64.b64decode(root.find("DeviceCertificate[2]/Certificate").text) == certificate


# -- parsing ---------------------------------------------------------------------------------------
def test_the_appendix_requests_parse():
    assert m.parse_adhoc_request(golden("adhoc-request.xml")) == m.AdhocRequest("clientId1", FIVE)
    assert m.parse_batch_request(golden("batch-request.xml")) == m.BatchRequest("b1999", (("ID0", FIVE), ("ID1", SIX), ("ID2", SEVEN)))


ADHOC = golden("adhoc-request.xml")
BATCH = golden("batch-request.xml")
BILLION_LAUGHS = (b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
                  + b"".join(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10))
                  + b']>\n')
EXTERNAL_ENTITY = b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
EXTERNAL_DTD = b'<?xml version="1.0"?>\n<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">\n'


def _without_declaration(message: bytes) -> bytes:
    return message.split(b"?>", 1)[1]


@pytest.mark.parametrize("prolog, payload", [(BILLION_LAUGHS, b"&lol9;"), (EXTERNAL_ENTITY, b"&xxe;"), (EXTERNAL_DTD, b"1.0")])
@pytest.mark.parametrize("parse, message", [(m.parse_adhoc_request, ADHOC), (m.parse_batch_request, BATCH)])
def test_a_doctype_is_refused_whatever_it_holds(parse, message, prolog, payload):
    body = prolog + _without_declaration(message).replace(b"<Version>1.0</Version>", b"<Version>" + payload + b"</Version>")
    started = time.perf_counter()
    error = refused(parse, body)
    assert time.perf_counter() - started < 1
    assert error.error.code == "FM:AA1" and "DOCTYPE" in error.error.text
    assert error.request_id is None and "root:" not in str(error)


@pytest.mark.parametrize("body, detail", [
    (b"", "empty"), (b"   \n", "empty"), (b"not xml", "Start tag expected"), (b"<DeviceCertificateSigningRequest ID='a'>", "Premature end"),
    (golden("adhoc-response-success.xml"), "root element is DeviceCertificateSigningResponse"),
    (golden("batch-request.xml"), "root element is SubmitCSRBatch"),
    (ADHOC.replace(b' ID="clientId1"', b""), "no ID"), (ADHOC.replace(b'ID="clientId1"', b'ID=""'), "no ID"),
    (ADHOC.replace(b'ID="clientId1"', b'ID="' + b"x" * 33 + b'"'), "no ID")])
def test_an_unreadable_adhoc_request_is_answered_without_its_id(body, detail):
    error = refused(m.parse_adhoc_request, body)
    assert error.error.code == "FM:AA1" and detail in error.error.text and error.request_id is None


@pytest.mark.parametrize("body, detail", [
    (ADHOC.replace(b"MAMCAQU=", b"-----BEGIN CERTIFICATE REQUEST-----MAMCAQU=-----END CERTIFICATE REQUEST-----"), "PEM armour"),
    (ADHOC.replace(b"MAMCAQU=", b"MAMC\nAQU="), "white space"), (ADHOC.replace(b"MAMCAQU=", b" MAMCAQU="), "white space"),
    (ADHOC.replace(b"MAMCAQU=", b"MAMCAQU=\r\n"), "white space"), (ADHOC.replace(b"MAMCAQU=", b"MAMC*QU="), "not Base64"),
    (ADHOC.replace(b"MAMCAQU=", b""), "nothing"), (ADHOC.replace(b"MAMCAQU=", b"MAMCAQU"), "padding"),
    (ADHOC.replace(b"<Version>1.0</Version>", b"<Version>2.0</Version>"), "Version"),
    (ADHOC.replace(b"<Version>1.0</Version>", b""), "Version"),
    (ADHOC.replace(b"</CertificateSigningRequest>", b"</CertificateSigningRequest><Extra/>"), "Extra")])
def test_a_readable_adhoc_request_with_a_bad_body_is_answered_with_its_id(body, detail):
    error = refused(m.parse_adhoc_request, body)
    assert error.error.code == "FM:AA1" and detail in error.error.text and error.request_id == "clientId1"


def test_a_comment_or_processing_instruction_does_not_change_what_is_read():
    body = ADHOC.replace(b"<Version>", b"<!-- note --><?pi x?><Version>")
    assert m.parse_adhoc_request(body) == m.AdhocRequest("clientId1", FIVE)


@pytest.mark.parametrize("body, detail, echoed", [
    (BATCH.replace(b' ID="b1999"', b""), "no ID", None),
    (BATCH.replace(b'ID="ID1"', b'ID="ID0"'), "ID0", "b1999"),
    (BATCH.replace(b"MAMCAQY=", b"-----BEGIN NEW CERTIFICATE REQUEST-----\nMAMCAQY=\n-----END NEW CERTIFICATE REQUEST-----"),
     "PEM armour", "b1999"),
    (BATCH.replace(b"MAMCAQY=", b"MAMC AQY="), "white space", "b1999"),
    (BATCH.replace(b' ID="ID2"', b""), "ID", "b1999"),
    (BATCH.replace(b'<DeviceCSR ID="ID0">MAMCAQU=</DeviceCSR>\n<DeviceCSR ID="ID1">MAMCAQY=</DeviceCSR>\n<DeviceCSR ID="ID2">MAMCAQc=</DeviceCSR>\n', b""),
     "DeviceCSR", "b1999"),  # at least one
    (golden("batch-status-pending.xml"), "root element is SubmitCSRBatchStatus", None),
    (b"<Version>1.0</Version>", "root element is Version", None),  # a global element of Appendix E, no request
    (golden("adhoc-request.xml"), "root element is DeviceCertificateSigningRequest", None)])
def test_a_bad_batch_is_refused_with_fm_aa1(body, detail, echoed):
    error = refused(m.parse_batch_request, body)
    assert error.error.code == "FM:AA1" and detail in error.error.text and error.request_id == echoed


def _batch_of(count: int, csr: bytes = FIVE) -> bytes:
    text = base64.b64encode(csr)
    entries = b"".join(b'<DeviceCSR ID="C%d">%s</DeviceCSR>' % (i, text) for i in range(count))
    return b'<?xml version="1.0" encoding="UTF-8"?><SubmitCSRBatch ID="big"><Version>1.0</Version>' + entries + b"</SubmitCSRBatch>"


def test_a_batch_over_the_limit_is_fm_aa2_counted_while_parsing():
    error = refused(m.parse_batch_request, _batch_of(4), limit=3)
    assert error.error.code == "FM:AA2" and error.request_id == "big"
    assert m.parse_batch_request(_batch_of(3), limit=3).entries[-1] == ("C2", FIVE)
    # 50,001 CSRs against a limit of 10: refused at the eleventh, without reading the rest
    body = _batch_of(50_001, bytes(300))
    started = time.perf_counter()
    assert refused(m.parse_batch_request, body, limit=10).error.code == "FM:AA2"
    assert time.perf_counter() - started < 0.1


def test_fifty_thousand_and_one_csrs_are_refused_and_fifty_thousand_are_read():
    csr = bytes(range(256)) + bytes(50)  # a Device CSR's size
    assert refused(m.parse_batch_request, _batch_of(50_001, csr)).error.code == "FM:AA2"
    started = time.perf_counter()
    batch = m.parse_batch_request(_batch_of(50_000, csr))
    elapsed = time.perf_counter() - started
    assert len(batch.entries) == 50_000 and batch.entries[49_999] == ("C49999", csr)
    assert elapsed < 3, elapsed  # about 0.55 s alone on this machine


def test_a_batch_limit_is_a_positive_integer():
    with pytest.raises(ValueError):
        m.parse_batch_request(BATCH, limit=0)


@pytest.mark.parametrize("parse, message", [(m.parse_adhoc_request, ADHOC), (m.parse_batch_request, BATCH)])
def test_a_doctype_hidden_in_utf16_is_refused_too(parse, message):
    text = (EXTERNAL_ENTITY.decode() + _without_declaration(message).decode().replace("<Version>1.0", "<Version>&xxe;1.0"))
    body = text.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="UTF-16"?>').encode("utf-16")
    error = refused(parse, body)
    assert error.error.code == "FM:AA1" and "DOCTYPE" in error.error.text and error.request_id is None
