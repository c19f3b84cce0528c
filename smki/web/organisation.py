"""Organisation CSR submission: `POST /1.0/OrganisationCSR` (SEC Appendix M 2.3.1, online).

The body is the PKCS#10 itself, in any encoding the SMKI Portal accepts (Appendix F: PEM armour of either
kind, or none; Base64 on one line or wrapped at 64 or 76, LF or CRLF; or DER). The Issuing OCA's
`issue_organisation` checks and issues it for the role the caller acts for; the answer is smki's
OrganisationCertificateSigningResponse (smki/data/schemas/organisation-csr-1.0.xsd), always HTTP 200, its
ID the optional `ID` query parameter (1-32 characters) when the client sent one. Refusals are answered
through the same table as the ad hoc service's (smki.web.answers).
"""

from __future__ import annotations

from aiohttp import web

from smki.files import MAX_CSR_BYTES
from smki.register import Interface
from smki.policy.usage import Channel
from smki.web.answers import (audit_request, read_body, refusal_answer, requester_role, submitter, transaction_id,
                              xml_answer)
from smki.web.context import SERVICES, run_blocking, serves
from smki.web.messages import ADHOC_ID_LENGTH, VERSION, AdhocStatus, Code, MessageRefused, OrganisationStatus, organisation_response

PATH = f"/{VERSION}/OrganisationCSR"
OPERATION = "organisation-submit"
ID_PARAMETER = "ID"


def _client_id(request: web.Request) -> str | None:
    value = request.query.get(ID_PARAMETER)
    if value is None:
        return None
    # Printable only: the answer echoes it as an XML attribute, and "\x01" or U+FFFE would make the answer not XML at all.
    if not 1 <= len(value) <= ADHOC_ID_LENGTH or not value.isprintable():
        raise MessageRefused(Code.INVALID_XML.error(f"the ID parameter is not 1-{ADHOC_ID_LENGTH} printable characters"))
    return value


def _status(status: AdhocStatus) -> OrganisationStatus:
    """The ad hoc table's Status for an Organisation CSR: there is no device to be unknown."""
    return OrganisationStatus.WORKFLOW_ERROR if status is AdhocStatus.UNKNOWN_DEVICE else OrganisationStatus(status.value)


@serves(Interface.ORGANISATION)
async def submit(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    client_id = certificate = error = None
    try:
        client_id = _client_id(request)
        body = await read_body(request, MAX_CSR_BYTES)
        role = requester_role(request)
        who = submitter(request, Channel.WEB_SERVICE)
        issued = await run_blocking(request, lambda: services.issuing_oca().issue_organisation(
            body, requester=role, source="organisation CSR web service", submitter=who))
        status, certificate = OrganisationStatus.SUCCESS, issued.der
    except Exception as exc:  # noqa: BLE001 - every refusal is an answer
        adhoc_status, error = refusal_answer(exc)
        status = _status(adhoc_status)
    audit_request(request, Interface.ORGANISATION, OPERATION, client_id=client_id, status=status.value,
                  code=error.code if error else None)
    return xml_answer(organisation_response(request_id=client_id, build=services.build, transaction_id=transaction_id(),
                                            status=status, certificate_der=certificate, error=error))


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, submit)
