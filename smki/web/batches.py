"""The Batched Device CSR Web Service (SEC Appendix M 2.5, Appendices C, D and E) and the portal's batch files
(Appendix F), over the Issuing DCA's batch queue:

- `POST /1.0/PortalCSRBatch/SubmitCSRBatch`: a SubmitCSRBatch in, a SubmitCSRBatchStatus out (PENDING with the
  BatchId; FORMAT_ERROR FM:AA1 / FM:AA2; WORKFLOW_ERROR with the usage rule's WF: code);
- `GET /1.0/PortalCSRBatch/CSRBatchResult?BatchId=N`: the batch's status, and once COMPLETED one DeviceCertificate
  per DeviceCSR (FM:AA3 for a BatchId that is unknown or another subscriber's; WF:BB1 when the state cannot be read);
- `POST /1.0/PortalCSRBatch/SubmitCSRBatchZip[?ID=...]`: a ZIP of `.csr` files, answered as SubmitCSRBatch is;
- `GET /1.0/PortalCSRBatch/BatchResponseZip?BatchId=N` and `.../BatchStatusFile?BatchId=N`: the response ZIP
  (`<ID>-response.zip`) and the status records of a COMPLETED batch.

Handlers are thin: each calls one IssuingAuthority method (submit_batch, batch_result, batch_files) in the
worker's executor thread, turns a refusal into the documented status and code, and leaves a request audit entry.
The queue itself is moved on by smki serve's batch processor process (smki.web.server.processor_main).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from aiohttp import web

from smki.errors import BadInputError
from smki.issuing.queued_batches import BatchAnswer, CsrAnswer, UnknownBatch
from smki.policy import PolicyRefusal
from smki.policy.usage import Channel, Submitter, UsageRule
from smki.register import Interface
from smki.requests.batch import BatchRefused
from smki.web.answers import RoleRefused, audit_request, read_body, requester_role, submitter, xml_answer
from smki.web.context import CALLER, SERVICES, run_blocking, serves
from smki.web.messages import (CONTENT_TYPE, VERSION, BatchStatus, Code, CsrResult, CsrStatus, ErrorCode, MessageRefused, batch_result_chunks, csr_error,
                               one_line, parse_batch_request, submit_batch_status)

log = logging.getLogger(__name__)

BASE = f"/{VERSION}/PortalCSRBatch"
SUBMIT_PATH, RESULT_PATH = f"{BASE}/SubmitCSRBatch", f"{BASE}/CSRBatchResult"
ZIP_PATH, RESPONSE_ZIP_PATH, STATUS_FILE_PATH = f"{BASE}/SubmitCSRBatchZip", f"{BASE}/BatchResponseZip", f"{BASE}/BatchStatusFile"
# 50,000 CSRs of about 700 bytes of Base64 each, in XML or in a ZIP, with room to spare; a larger body is refused (FM:AA4) unread.
BATCH_BODY_LIMIT = 64 * 1024 * 1024
BATCH_LIMIT_RULE = "4.2 batch_limit"


class Operation:
    """The request audit's operation names of this service."""

    SUBMIT = "batch-submit"
    SUBMIT_ZIP = "batch-submit-zip"
    RESULT = "batch-result"
    RESPONSE_ZIP = "batch-response-zip"
    STATUS_FILE = "batch-status-file"


# -- refusals -> (BatchStatus, ErrorCode) -----------------------------------------------------------------
def submission_refusal(exc: BaseException) -> tuple[BatchStatus, ErrorCode]:
    """A submission's refusal as SubmitCSRBatchStatus answers it: FORMAT_ERROR for the message or the batch file (FM:AA1,
    FM:AA2 over the batch limit), WORKFLOW_ERROR for a usage rule (its own WF: code), an ineligible requester or role,
    or a fault of ours (WF:BB2: resubmitting may work)."""
    if isinstance(exc, MessageRefused):
        return BatchStatus.FORMAT_ERROR, exc.error
    if isinstance(exc, PolicyRefusal):
        rule = UsageRule.of(exc)
        if rule is not None:
            return BatchStatus.WORKFLOW_ERROR, ErrorCode(rule.code, one_line(str(exc)))
        if exc.rule == BATCH_LIMIT_RULE:
            return BatchStatus.FORMAT_ERROR, Code.TOO_MANY_CSRS.error(str(exc))
        return BatchStatus.WORKFLOW_ERROR, Code.INELIGIBLE.error(str(exc))
    if isinstance(exc, BatchRefused):
        return BatchStatus.FORMAT_ERROR, Code.INVALID_XML.error(f"The batch file is refused: {exc}")
    if isinstance(exc, BadInputError):  # a value of the request the actor refuses (a ZIP upload's ID): the client's to fix
        return BatchStatus.FORMAT_ERROR, Code.INVALID_XML.error(str(exc))
    if isinstance(exc, RoleRefused):
        return BatchStatus.WORKFLOW_ERROR, Code.ROLE_NOT_HELD.error(str(exc))
    log.error("batch submission refused on %s: %s", type(exc).__name__, one_line(str(exc)))
    return BatchStatus.WORKFLOW_ERROR, Code.BATCH_NOT_ACCEPTED.error()


def poll_refusal(exc: BaseException) -> tuple[BatchStatus, ErrorCode]:
    """A poll's refusal: FM:AA3 for a BatchId that is not the caller's, WF:BB1 when the batch state cannot be read."""
    if isinstance(exc, UnknownBatch):
        return BatchStatus.FORMAT_ERROR, Code.UNKNOWN_BATCH.error()
    log.error("batch poll failed on %s: %s", type(exc).__name__, one_line(str(exc)))
    return BatchStatus.WORKFLOW_ERROR, Code.BATCH_STATE_UNREADABLE.error()


def csr_result(answer: CsrAnswer) -> CsrResult:
    """One request's recorded answer as a DeviceCertificate."""
    if answer.status == "success" and answer.certificate_der is not None:
        return CsrResult(answer.csr_id, CsrStatus.SUCCESS, answer.certificate_der)
    if answer.outcome is None:  # a code no request check has: ours
        return CsrResult(answer.csr_id, CsrStatus.CA_ERROR, error=Code.CA_FAILURE.error())
    status, error = csr_error(answer.outcome, answer.detail or answer.outcome.code)
    return CsrResult(answer.csr_id, status, error=error)


def _results(answer: BatchAnswer) -> Iterator[CsrResult]:
    return (csr_result(each) for each in answer.answers or ())


def _batch_id(request: web.Request) -> str:
    """The BatchId query parameter as given (the actor refuses anything but the caller's own batch's number as unknown)."""
    return request.query.get("BatchId", "").strip()[:40]


# -- the handlers -----------------------------------------------------------------------------------------
@serves(Interface.BATCH_DEVICE)
async def submit(request: web.Request) -> web.Response:
    """SubmitCSRBatch: the batch queued (PENDING) with its BatchId, or the refusal."""
    services = request.app[SERVICES]
    dca = services.issuing_dca()
    client_id = batch_id = error = None
    try:
        message = parse_batch_request(await read_body(request, BATCH_BODY_LIMIT), dca.batch_limit)
        client_id = message.id
        role = requester_role(request)
        queued = await run_blocking(request, _submit, dca, message.entries, client_id, submitter(request, Channel.WEB_SERVICE), role)
        status, batch_id = BatchStatus.PENDING, queued.number
    except Exception as exc:  # noqa: BLE001 - every refusal is an answer
        status, error = submission_refusal(exc)
        client_id = client_id or getattr(exc, "request_id", None)
    audit_request(request, Interface.BATCH_DEVICE, Operation.SUBMIT, client_id=client_id, status=status.value,
                  code=error.code if error else None)
    return xml_answer(submit_batch_status(request_id=client_id, build=services.build, status=status, batch_id=batch_id, error=error))


def _submit(dca, batch, client_id: str, who: Submitter, role):
    return dca.submit_batch(batch, client_id=client_id, subscriber=who, requester=role)


@serves(Interface.BATCH_DEVICE)
async def submit_zip(request: web.Request) -> web.Response:
    """A portal batch file (a ZIP of `.csr` files): answered as SubmitCSRBatch is. Its client ID is the `ID` query
    parameter (1-256 characters), or the BatchId's own when none is given."""
    services = request.app[SERVICES]
    client_id = request.query.get("ID") or "zip-upload"
    batch_id = error = None
    try:
        upload = await read_body(request, BATCH_BODY_LIMIT)
        role = requester_role(request)
        queued = await run_blocking(request, _submit, services.issuing_dca(), upload, client_id, submitter(request, Channel.PORTAL), role)
        status, batch_id = BatchStatus.PENDING, queued.number
    except Exception as exc:  # noqa: BLE001
        status, error = submission_refusal(exc)
    shown_id = client_id if 0 < len(client_id) <= 256 and client_id.isprintable() else None
    audit_request(request, Interface.BATCH_DEVICE, Operation.SUBMIT_ZIP, client_id=shown_id, status=status.value,
                  code=error.code if error else None)
    return xml_answer(submit_batch_status(request_id=shown_id, build=services.build, status=status, batch_id=batch_id, error=error))


@serves(Interface.BATCH_DEVICE)
async def result(request: web.Request) -> web.StreamResponse:
    """CSRBatchResult: the status of the caller's own batch, with every DeviceCertificate once it is COMPLETED."""
    services = request.app[SERVICES]
    number = _batch_id(request)
    try:
        answer = await run_blocking(request, services.issuing_dca().batch_result, number, request[CALLER].subscriber.name)
    except Exception as exc:  # noqa: BLE001
        status, error = poll_refusal(exc)
        audit_request(request, Interface.BATCH_DEVICE, Operation.RESULT, client_id=number or None, status=status.value, code=error.code)
        return xml_answer(b"".join(batch_result_chunks(request_id=None, build=services.build, status=status, error=error)))
    status = BatchStatus(answer.batch.status.value)
    audit_request(request, Interface.BATCH_DEVICE, Operation.RESULT, client_id=answer.batch.client_id, status=status.value, code=None)
    chunks = batch_result_chunks(request_id=answer.batch.client_id, build=services.build, status=status, batch_id=answer.batch.number,
                                 results=_results(answer) if status is BatchStatus.COMPLETED else None)
    response = web.StreamResponse(status=200, headers={"Content-Type": CONTENT_TYPE})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _download(request: web.Request, operation: str, which: int, content_type: str, suffix: str) -> web.Response:
    services = request.app[SERVICES]
    number = _batch_id(request)
    try:
        batch, *files = await run_blocking(request, services.issuing_dca().batch_files, number, request[CALLER].subscriber.name)
    except Exception as exc:  # noqa: BLE001
        status, error = poll_refusal(exc)
        audit_request(request, Interface.BATCH_DEVICE, operation, client_id=number or None, status=status.value, code=error.code)
        return web.Response(status=404 if status is BatchStatus.FORMAT_ERROR else 503, text=f"{error.code} {error.text}\n")
    if files[which] is None:
        audit_request(request, Interface.BATCH_DEVICE, operation, client_id=batch.client_id, status=batch.status.value, code=None)
        return web.Response(status=409, text=f"batch {batch.number} is {batch.status.value}: its files come once it is COMPLETED\n")
    audit_request(request, Interface.BATCH_DEVICE, operation, client_id=batch.client_id, status=batch.status.value, code=None)
    name = f"batch-{batch.number}-response{suffix}"
    return web.Response(body=files[which], status=200, headers={"Content-Type": content_type,
                                                                 "Content-Disposition": f'attachment; filename="{name}"'})


@serves(Interface.BATCH_DEVICE)
async def response_zip(request: web.Request) -> web.Response:
    """The response ZIP of the caller's COMPLETED batch: a `.crt` per issued certificate, named like its request."""
    return await _download(request, Operation.RESPONSE_ZIP, 0, "application/zip", ".zip")


@serves(Interface.BATCH_DEVICE)
async def status_file(request: web.Request) -> web.Response:
    """The status records of the caller's COMPLETED batch (CSV: identifier, file, status, code, detail, serial)."""
    return await _download(request, Operation.STATUS_FILE, 1, "text/csv; charset=utf-8", ".csv")


def add_routes(app: web.Application) -> None:
    app.router.add_post(SUBMIT_PATH, submit)
    app.router.add_get(RESULT_PATH, result)
    app.router.add_post(ZIP_PATH, submit_zip)
    app.router.add_get(RESPONSE_ZIP_PATH, response_zip)
    app.router.add_get(STATUS_FILE_PATH, status_file)


# -- the queue's processing, for a worker's background task -----------------------------------------------
