"""The Ad Hoc Device CSR Web Service (SEC Appendix M 2.4, Appendices A and B): `POST /1.0/AdHocDeviceCSR`.

One DeviceCertificateSigningRequest in, one DeviceCertificateSigningResponse out, always HTTP 200 with XML.
The request is checked against Appendix B's schema (smki.web.messages), the certificate is issued by the
Issuing DCA's `issue_devices` (the same policy checks, records and audit entries as `smki ca issue-device`;
requests that arrive while the worker's actor thread is busy are issued together, each answered on its own),
for the role the caller acts for (its only role, or the one X-SMKI-Role names among its roles), and every
refusal is answered through the one table in smki.web.answers. Every request leaves a request audit entry.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from smki.issuing.adhoc_issuance import DeviceCsr
from smki.policy.usage import Channel
from smki.register import Interface
from smki.web.answers import (audit_request, read_body, refusal_answer, requester_role, submitter, transaction_id,
                              xml_answer)
from smki.web.coalesce import Coalescer
from smki.web.context import SERVICES, serves
from smki.web.messages import ADHOC_BODY_LIMIT, VERSION, AdhocStatus, adhoc_response, parse_adhoc_request

PATH = f"/{VERSION}/AdHocDeviceCSR"
OPERATION = "adhoc-submit"
SOURCE = "ad hoc web service"
# The worker's queue of ad hoc requests: those arriving while its actor thread is busy are issued as one group.
GROUPS = web.AppKey("smki.adhoc_groups", Coalescer)


def _issue_group(services, requests: Sequence[DeviceCsr]) -> list:
    # device_type=None: each request's hwType decides; each request's submitter: the usage rules count the caller's requests.
    return services.issuing_dca().issue_devices(requests, device_type=None)


@serves(Interface.ADHOC_DEVICE)
async def submit(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client_id = certificate = error = None
    try:
        message = parse_adhoc_request(await read_body(request, ADHOC_BODY_LIMIT))
        client_id = message.id
        csr = DeviceCsr(message.csr_der, requester_role(request), submitter(request, Channel.WEB_SERVICE), SOURCE)
        issued = await request.app[GROUPS].submit(csr)
        if isinstance(issued, BaseException):  # this request's refusal (its group went on)
            raise issued
        status, certificate = AdhocStatus.SUCCESS, issued.der
    except Exception as exc:  # noqa: BLE001 - every refusal is an answer (the table logs what it did not expect)
        status, error = refusal_answer(exc)
        client_id = client_id or getattr(exc, "request_id", None)
    audit_request(request, Interface.ADHOC_DEVICE, OPERATION, client_id=client_id, status=status.value,
                  code=error.code if error else None)
    return xml_answer(adhoc_response(request_id=client_id, build=services.build, transaction_id=transaction_id(),
                                     status=status, certificate_der=certificate, error=error))


def add_routes(app: web.Application) -> None:
    app[GROUPS] = Coalescer(app, lambda requests: _issue_group(app[SERVICES], requests))
    app.router.add_post(PATH, submit)
