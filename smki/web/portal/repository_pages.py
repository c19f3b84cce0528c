"""The SMKI Repository Portal: search, certificate detail and downloads, CRLs and ARLs (the Librarian's answers).

Open to anyone when the service's `repository.public_search` is true; otherwise to a logged-in portal
visitor, or a caller with the repository's API key in the X-API-Key header. CRL and ARL downloads follow
`repository.public_crl` the same way (relying parties fetch them anonymously by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from aiohttp import web
from cryptography import x509

from smki.errors import BadInputError
from smki.web.context import SERVICES, run_blocking
from smki.web.portal.certificates import shown
from smki.web.portal.rendering import download, page
from smki.web.portal.visitors import PREFIX, PageError, Visitor, context, portal_page
from smki.web.repository import ACCESS, API_KEY_HEADER, RepositoryAccess

REPOSITORY = f"{PREFIX}/repository"
SEARCH_FIELDS = ("eui64", "serial", "role", "usage", "status")
MAX_CHAIN = 4  # device or organisation, issuing CA, root: a longer walk is a loop in the records
MAX_RESULTS = 200


@dataclass(frozen=True)
class ShownCrl:
    issuer_key_id: str
    kind: str
    number: int
    this_update: str
    next_update: str
    entries: int
    issuer: str


def _access(request: web.Request) -> RepositoryAccess:
    return request.app.get(ACCESS) or RepositoryAccess()


async def _refuse_unless_allowed(request: web.Request, visitor: Visitor | None, public: bool) -> None:
    if public or visitor is not None:
        return
    key = request.headers.get(API_KEY_HEADER)
    if key is not None and await run_blocking(request, lambda: request.app[SERVICES].repository().authorised(key)):
        return
    raise PageError(HTTPStatus.UNAUTHORIZED, "Log in to search the repository",
                    "This repository is not public: log in to the portal (or send the repository's API key in the "
                    f"{API_KEY_HEADER} header).", login=True)


@portal_page("portal-repository-search", public=True)
async def search(request: web.Request, visitor: Visitor | None, form) -> web.Response:
    await _refuse_unless_allowed(request, visitor, _access(request).public_search)
    query = {name: request.query.get(name, "").strip()[:64] for name in SEARCH_FIELDS}
    filters = {name: value for name, value in query.items() if value}
    records = None
    if filters:
        librarian = request.app[SERVICES].librarian()
        try:
            records = await run_blocking(request, lambda: librarian.find(**filters, limit=MAX_RESULTS))
        except BadInputError as exc:
            raise PageError(HTTPStatus.BAD_REQUEST, "Search not understood", str(exc)) from None
    return page("repository.html", **context(visitor, query=query, records=records, max_results=MAX_RESULTS))


@portal_page("portal-repository-certificate", public=True)
async def certificate(request: web.Request, visitor: Visitor | None, form) -> web.Response:
    await _refuse_unless_allowed(request, visitor, _access(request).public_search)
    record = await _record(request)
    chain = await _issuer_chain(request, record)
    return page("certificate.html", **context(visitor, record=record, certificate=shown(record.der), chain=chain))


@portal_page("portal-repository-download", public=True)
async def certificate_file(request: web.Request, visitor: Visitor | None, form) -> web.Response:
    await _refuse_unless_allowed(request, visitor, _access(request).public_search)
    record = await _record(request)
    if request.match_info["format"] == "pem":
        return download(shown(record.der).pem.encode(), "application/x-pem-file", f"{record.serial_hex}.pem")
    return download(record.der, "application/pkix-cert", f"{record.serial_hex}.cer")


@portal_page("portal-repository-crls", public=True)
async def crls(request: web.Request, visitor: Visitor | None, form) -> web.Response:
    await _refuse_unless_allowed(request, visitor, _access(request).public_crl)
    lodged = await run_blocking(request, request.app[SERVICES].librarian().current_crls)
    return page("crls.html", **context(visitor, crls=[_shown_crl(crl) for crl in lodged]))


@portal_page("portal-repository-crl-download", public=True)
async def crl_file(request: web.Request, visitor: Visitor | None, form) -> web.Response:
    await _refuse_unless_allowed(request, visitor, _access(request).public_crl)
    wanted = request.match_info["issuer"].upper()
    lodged = await run_blocking(request, request.app[SERVICES].librarian().current_crls)
    found = next((crl for crl in lodged if crl.issuer_key_id == wanted), None)
    if found is None:
        raise PageError(HTTPStatus.NOT_FOUND, "No such list", "The repository holds no CRL or ARL from that issuer.")
    return download(found.der, "application/pkix-crl", f"{found.issuer_key_id}-{found.kind}-{found.number}.crl")


async def _record(request: web.Request):
    serial, issuer = request.match_info["serial"], request.query.get("issuer")
    librarian = request.app[SERVICES].librarian()
    try:
        records = await run_blocking(request, lambda: librarian.find(serial=serial))
    except BadInputError as exc:
        raise PageError(HTTPStatus.BAD_REQUEST, "Not a serial number", str(exc)) from None
    if issuer:
        records = [r for r in records if r.issuer_key_id == issuer.upper()]
    if not records:
        raise PageError(HTTPStatus.NOT_FOUND, "No such certificate", "The repository holds no certificate with that serial number.")
    return records[0]


async def _issuer_chain(request: web.Request, record) -> list:
    """The issuers above `record`, nearest first, as the repository holds them (a root ends the walk)."""
    librarian, chain, current = request.app[SERVICES].librarian(), [], record
    while current.issuer_key_id != current.subject_key_id and len(chain) < MAX_CHAIN:
        issuers = await run_blocking(request, lambda ski=current.issuer_key_id: librarian.find(ski=ski, limit=1))
        if not issuers:
            break
        current = issuers[0]
        chain.append(current)
    return chain


def _shown_crl(lodged) -> ShownCrl:
    crl = x509.load_der_x509_crl(lodged.der)
    return ShownCrl(lodged.issuer_key_id, lodged.kind.upper(), lodged.number, lodged.this_update, lodged.next_update,
                    len(crl), crl.issuer.rfc4514_string())


def add_routes(app: web.Application) -> None:
    app.router.add_get(REPOSITORY, search)
    app.router.add_get(f"{REPOSITORY}/certificates/{{serial}}", certificate)
    app.router.add_get(f"{REPOSITORY}/certificates/{{serial}}/certificate.{{format:pem|cer}}", certificate_file)
    app.router.add_get(f"{REPOSITORY}/crls", crls)
    app.router.add_get(f"{REPOSITORY}/crls/{{issuer}}.crl", crl_file)
