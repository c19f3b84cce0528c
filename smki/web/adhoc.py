"""The Ad Hoc Device CSR Web Service (SEC Appendix M 2.4, Appendices A and B): `POST /1.0/AdHocDeviceCSR`.

One DeviceCertificateSigningRequest in, one DeviceCertificateSigningResponse out, always HTTP 200 with XML.
The request is checked against Appendix B's schema (smki.web.messages), the certificate is issued by the
Issuing DCA's `issue_device` (the same policy checks, records and audit entries as `smki ca issue-device`),
for the role the caller acts for (its only role, or the one X-SMKI-Role names among its roles), and every
refusal is answered through the one table in smki.web.answers. Every request leaves a request audit entry.
"""

from __future__ import annotations

from aiohttp import web

from smki.identifiers import DeviceType, RemotePartyRole
from smki.policy import PolicyRefusal
from smki.register import Interface
from smki.requests import parse_device_request
from smki.web.answers import audit_request, read_body, refusal_answer, requester_role, run_blocking, transaction_id, xml_answer
from smki.web.context import SERVICES, serves
from smki.web.messages import ADHOC_BODY_LIMIT, VERSION, AdhocStatus, adhoc_response, parse_adhoc_request

PATH = f"/{VERSION}/AdHocDeviceCSR"
OPERATION = "adhoc-submit"


def _device_type_of(dca, csr_der: bytes) -> DeviceType:
    """The device type whose hwType the request carries, under the DCA's policy. Stands in for
    `issue_device(device_type=None)` (the batches helper's: the request's hwType decides) until it lands;
    the lead removes this function then. A hwType no device type has is refused by issue_device itself."""
    hw_type = parse_device_request(csr_der, "request").hw_type_oid
    policy, environment = dca._loaded_policy(), dca._environment()
    for device_type in DeviceType:
        try:
            if policy.hw_type_oid(environment, device_type) == hw_type:
                return device_type
        except PolicyRefusal:  # a type with no hwType in this environment is simply not this one
            continue
    return next(iter(DeviceType))


def _issue(dca, csr_der: bytes, role: RemotePartyRole):
    return dca.issue_device(csr_der, requester=role, device_type=_device_type_of(dca, csr_der), source="ad hoc web service")


@serves(Interface.ADHOC_DEVICE)
async def submit(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client_id = certificate = error = None
    try:
        message = parse_adhoc_request(await read_body(request, ADHOC_BODY_LIMIT))
        client_id = message.id
        role = requester_role(request)
        issued = await run_blocking(request, _issue, services.issuing_dca(), message.csr_der, role)
        status, certificate = AdhocStatus.SUCCESS, issued.der
    except Exception as exc:  # noqa: BLE001 - every refusal is an answer (the table logs what it did not expect)
        status, error = refusal_answer(exc)
        client_id = client_id or getattr(exc, "request_id", None)
    audit_request(request, Interface.ADHOC_DEVICE, OPERATION, client_id=client_id, status=status.value,
                  code=error.code if error else None)
    return xml_answer(adhoc_response(request_id=client_id, build=services.build, transaction_id=transaction_id(),
                                     status=status, certificate_der=certificate, error=error))


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, submit)
