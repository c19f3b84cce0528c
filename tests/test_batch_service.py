"""The Batched Device CSR web service and the portal's batch files (smki.web.batches) through aiohttp's test client,
over a real Issuing DCA's queue on SoftHSM: submit, the RA's approval, processing, the poll with every certificate
checked by openssl, the downloads, and each refusal's status and code; every answer valid against Appendix E's schema.

The test app stands in for web-core's, as tests/test_adhoc_service.py's does: a middleware sets request[CALLER] from
the X-Test-Caller header, and the handlers' Issuing DCA is an IssuingAuthority object of its own (opened in the
handlers' executor thread); the test's own object on the same state plays the RA and the processor."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import zipfile

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from smki.identifiers import EUI64, RemotePartyRole
from smki.issuing import IssuingAuthority
from smki.register import Interface, Subscriber
from smki.web import batches, context
from smki.web import messages as m
from smki.web.context import CALLER, SERVICES, Caller
from test_batch_queue import authority, requests, verify_with_openssl

BUILD = "test-build-batches"
ALICE = Subscriber("alice-dsp", EUI64.parse("90-B3-D5-1F-30-02-00-00"), (RemotePartyRole.SUPPLIER,), frozenset({Interface.BATCH_DEVICE}))
BOB = Subscriber("bob-supplier", EUI64.parse("90-B3-D5-1F-30-02-00-01"), (RemotePartyRole.SUPPLIER,), frozenset({Interface.BATCH_DEVICE}))
CALLERS = {subscriber.name: subscriber for subscriber in (ALICE, BOB)}
AUDIT_KEY = web.AppKey("test.batch-audit", object)


class Recorder:
    def __init__(self) -> None:
        self.entries: list[dict] = []

    def record(self, **entry) -> None:
        self.entries.append(entry)


class Services:
    build = BUILD

    def __init__(self, dca: IssuingAuthority) -> None:
        self._dca = dca

    def issuing_dca(self) -> IssuingAuthority:
        return self._dca


@web.middleware
async def caller_from_header(request, handler):
    request[CALLER] = Caller(CALLERS[request.headers.get("X-Test-Caller", ALICE.name)], "cd" * 32, "127.0.0.1")
    return await handler(request)


@pytest.fixture
def service(smki_pki, tmp_path, monkeypatch):
    """(the RA's and processor's Issuing DCA, a function making one request to the service, the audit recorder)."""
    ra = authority(smki_pki, tmp_path)  # lab rules: window always open, 12 CSRs a day, batch limit 6
    served = IssuingAuthority(tmp_path / "state", certificate=smki_pki.issuing_dca_certificate, key=smki_pki.key("issuing-dca"),
                              pin=smki_pki.token.pin, policy=tmp_path / "device-policy.yaml", environment="test", actor="csr-web-service")
    recorder = Recorder()
    monkeypatch.setattr(context, "AUDIT", AUDIT_KEY, raising=False)  # web-core's recorder key, until it lands

    def call(method: str, path: str, body: bytes = b"", caller: Subscriber = ALICE) -> tuple[int, str, bytes]:
        async def scenario():
            app = web.Application(middlewares=[caller_from_header], client_max_size=batches.BATCH_BODY_LIMIT)
            app[SERVICES] = Services(served)
            app[AUDIT_KEY] = recorder
            batches.add_routes(app)
            async with TestClient(TestServer(app)) as client:
                response = await client.request(method, path, data=body, headers={"X-Test-Caller": caller.name})
                return response.status, response.headers.get("Content-Type", ""), await response.read()
        return asyncio.run(scenario())

    yield ra, call, recorder
    ra.close()


def batch_xml(pairs, client_id: str = "alice-batch-1") -> bytes:
    csrs = "".join(f'<DeviceCSR ID="{csr_id}">{base64.b64encode(der).decode()}</DeviceCSR>' for csr_id, der in pairs)
    return f'<?xml version="1.0" encoding="UTF-8"?><SubmitCSRBatch ID="{client_id}"><Version>1.0</Version>{csrs}</SubmitCSRBatch>'.encode()


def answer(body: bytes) -> etree._Element:
    assert m.validate(body, m.Schema.BATCHED) == [], body[:500]
    return etree.fromstring(body)


def submit(call, pairs, caller: Subscriber = ALICE, client_id: str = "alice-batch-1") -> etree._Element:
    status, content_type, body = call("POST", batches.SUBMIT_PATH, batch_xml(pairs, client_id), caller)
    assert status == 200 and content_type.startswith("application/xml")
    return answer(body)


def poll(call, batch_id, caller: Subscriber = ALICE) -> etree._Element:
    status, _, body = call("GET", f"{batches.RESULT_PATH}?BatchId={batch_id}", caller=caller)
    assert status == 200
    return answer(body)


def error_code(root: etree._Element) -> str:
    return root.findtext("Error/ErrorCode")


def test_a_batch_is_submitted_approved_processed_and_answered(smki_pki, service, tmp_path):
    ra, call, recorder = service
    pairs = requests(smki_pki, 3, bad_hw_type=1)
    submitted = submit(call, pairs)
    assert submitted.tag == "SubmitCSRBatchStatus" and submitted.get("ID") == "alice-batch-1"
    assert submitted.findtext("BatchStatus") == "PENDING" and submitted.findtext("Build") == BUILD
    batch_id = int(submitted.findtext("BatchId"))
    pending = poll(call, batch_id)
    assert pending.findtext("BatchStatus") == "PENDING" and pending.findtext("BatchId") == str(batch_id)
    assert pending.find("DeviceCertificate") is None
    ra.approve_batch(batch_id)
    assert poll(call, batch_id).findtext("BatchStatus") == "PARSING"
    assert ra.process_batches(once=True, workers=1) == 1  # what smki serve's batch processor runs
    completed = poll(call, batch_id)
    assert completed.findtext("BatchStatus") == "COMPLETED" and completed.get("ID") == "alice-batch-1"
    certificates = {element.get("ID"): element for element in completed.findall("DeviceCertificate")}
    assert sorted(certificates) == sorted(csr_id for csr_id, _ in pairs)
    for csr_id, _ in pairs[:3]:
        assert certificates[csr_id].findtext("Status") == "SUCCESS"
        verify_with_openssl(smki_pki, tmp_path, base64.b64decode(certificates[csr_id].findtext("Certificate")))
    assert certificates["odd-0"].findtext("Status") == "INELIGIBLE" and certificates["odd-0"].findtext("Error/ErrorCode").startswith("IN:")
    status, content_type, body = call("GET", f"{batches.RESPONSE_ZIP_PATH}?BatchId={batch_id}")
    assert status == 200 and content_type == "application/zip"
    assert sorted(zipfile.ZipFile(io.BytesIO(body)).namelist()) == sorted(f"{csr_id}.crt" for csr_id, _ in pairs[:3])
    status, content_type, body = call("GET", f"{batches.STATUS_FILE_PATH}?BatchId={batch_id}")
    assert status == 200 and content_type.startswith("text/csv")
    assert sorted(row["status"] for row in csv.DictReader(io.StringIO(body.decode()))) == ["ineligible", "success", "success", "success"]
    assert [(e["operation"], e["status"], e["subscriber"]) for e in recorder.entries[:2]] == [
        (batches.Operation.SUBMIT, "PENDING", "alice-dsp"), (batches.Operation.RESULT, "PENDING", "alice-dsp")]


def test_a_zip_upload_is_queued_and_its_files_wait_for_completion(smki_pki, service):
    ra, call, _ = service
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for csr_id, der in requests(smki_pki, 2):
            archive.writestr(f"{csr_id}.csr", base64.b64encode(der))
    status, _, body = call("POST", f"{batches.ZIP_PATH}?ID=portal-upload-7", stream.getvalue())
    submitted = answer(body)
    assert status == 200 and submitted.findtext("BatchStatus") == "PENDING" and submitted.get("ID") == "portal-upload-7"
    batch_id = submitted.findtext("BatchId")
    status, _, body = call("GET", f"{batches.RESPONSE_ZIP_PATH}?BatchId={batch_id}")
    assert status == 409 and b"PENDING" in body
    assert ra.batches()[0].channel == "portal"
    garbage = answer(call("POST", batches.ZIP_PATH, b"PK\x03\x04 not a zip", BOB)[2])
    assert garbage.findtext("BatchStatus") == "FORMAT_ERROR" and error_code(garbage) == "FM:AA1"


def test_a_zip_uploads_malformed_id_is_a_format_error_not_a_fault_of_the_service(smki_pki, service):
    """An ID the actor refuses (over 256 characters, a control character) was answered WF:BB2 "not accepted" (a fault of
    ours: resubmitting may work) and logged as the service's error; it is the client's FM:AA1, and nothing is queued."""
    ra, call, recorder = service
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        for csr_id, der in requests(smki_pki, 1):
            archive.writestr(f"{csr_id}.csr", base64.b64encode(der))
    for client_id in ("A" * 257, "%01"):
        refused = answer(call("POST", f"{batches.ZIP_PATH}?ID={client_id}", stream.getvalue())[2])
        assert (refused.findtext("BatchStatus"), error_code(refused), refused.get("ID")) == ("FORMAT_ERROR", "FM:AA1", None)
    assert ra.batches() == [] and [e["code"] for e in recorder.entries[-2:]] == ["FM:AA1", "FM:AA1"]


def test_a_zip_entry_name_with_a_control_character_is_refused_so_the_result_stays_xml(smki_pki, service):
    """A ZIP entry's name is its request's ID in CSRBatchResult: "a\x01b.csr" was queued, issued, and then answered
    with a result that was not well-formed XML (the subscriber could never read its certificates that way)."""
    ra, call, _ = service
    [(_, der)] = requests(smki_pki, 1)
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr("a\x01b.csr", base64.b64encode(der))
    refused = answer(call("POST", f"{batches.ZIP_PATH}?ID=control", stream.getvalue())[2])
    assert (refused.findtext("BatchStatus"), error_code(refused)) == ("FORMAT_ERROR", "FM:AA1")
    assert ra.batches() == []


def test_another_subscribers_or_an_unknown_batch_id_is_fm_aa3(smki_pki, service):
    ra, call, recorder = service
    batch_id = submit(call, requests(smki_pki, 1)).findtext("BatchId")
    for asked in (batch_id, "999999", "abc", "", "-3"):
        refused = poll(call, asked, caller=BOB)
        assert refused.findtext("BatchStatus") == "FORMAT_ERROR" and error_code(refused) == "FM:AA3"
        assert refused.get("ID") is None and refused.find("DeviceCertificate") is None
    status, _, body = call("GET", f"{batches.RESPONSE_ZIP_PATH}?BatchId={batch_id}", caller=BOB)
    assert status == 404 and body.startswith(b"FM:AA3")
    assert [e["code"] for e in recorder.entries if e["subscriber"] == "bob-supplier"] == ["FM:AA3"] * 6


def test_usage_rules_are_workflow_errors_with_their_codes(smki_pki, service):
    ra, call, _ = service
    first = submit(call, requests(smki_pki, 5))
    busy = submit(call, requests(smki_pki, 1), client_id="second")
    assert busy.findtext("BatchStatus") == "WORKFLOW_ERROR" and error_code(busy) == "WF:BB4" and busy.get("ID") == "second"
    ra.approve_batch(int(first.findtext("BatchId")))
    ra.process_batches(once=True, workers=1)
    submit(call, requests(smki_pki, 5), client_id="third")  # 10 of the day's 12
    ra.reject_batch(ra.batches(status="PENDING")[0].number, "enough for today")
    capped = submit(call, requests(smki_pki, 3), client_id="fourth")
    assert capped.findtext("BatchStatus") == "WORKFLOW_ERROR" and error_code(capped) == "WF:BB3"


def test_format_errors(smki_pki, service):
    ra, call, _ = service
    too_many = submit(call, requests(smki_pki, 7))  # the policy's batch limit is 6
    assert too_many.findtext("BatchStatus") == "FORMAT_ERROR" and error_code(too_many) == "FM:AA2"
    status, _, body = call("POST", batches.SUBMIT_PATH, b"<SubmitCSRBatch ID='x'><Version>1.0</Version>")
    malformed = answer(body)
    assert malformed.findtext("BatchStatus") == "FORMAT_ERROR" and error_code(malformed) == "FM:AA1"
    pairs = requests(smki_pki, 2)
    duplicate = submit(call, [pairs[0], ("csr-0", pairs[1][1])])
    assert error_code(duplicate) == "FM:AA1"
    assert ra.batches() == []  # nothing queued
