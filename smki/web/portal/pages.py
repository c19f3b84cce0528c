"""The subscriber's pages: logging in and out, Organisation CSR upload, the ad hoc Device CSR form, batch ZIP
upload, the batch list with live status, and the result downloads.

Each action calls the one actor method the CLI and the CSR web services call, and a refusal is answered
through the CSR web services' one table (smki.web.answers.refusal_answer): the page shows its code and text.
"""

from __future__ import annotations

import re
from urllib.parse import unquote
from collections import Counter
from http import HTTPStatus

from aiohttp import web
from multidict import MultiDictProxy

from smki.errors import BadInputError
from smki.files import MAX_CSR_BYTES
from smki.identifiers import RemotePartyRole
from smki.issuing.queued_batches import UnknownBatch
from smki.policy.usage import Channel, Submitter
from smki.store.batch_queue import BatchStatus
from smki.register.accounts import MAX_PASSWORD, LoginRefused
from smki.web.answers import refusal_answer
from smki.web.context import SERVICES, Outcome, run_blocking
from smki.web.messages import AdhocStatus
from smki.web.portal.certificates import shown
from smki.web.portal.rendering import download, page
from smki.web.portal.visitors import (check_csrf, context, LOGIN_COOKIE, PREFIX, SESSION_COOKIE, PageError, Visitor, accounts, audit,
                                      clear_session_cookie, new_login_token, portal_page, read_form, see_other, set_login_cookie,
                                      set_session_cookie)

MAX_BATCH_UPLOAD = 32 * 1024 * 1024  # a ZIP of 50,000 CSRs is about 25 MB
MAX_REFERENCE = 64
_LISTED_BATCHES = 50
_MAX_COUNTED = 10_000
_COUNTS = web.AppKey("smki.portal.batch_counts", dict)  # answered batches' counts per outcome: they never change

# An answer's Status as the HTTP status of the page that shows it.
_HTTP_STATUS = {AdhocStatus.FORMAT_ERROR: HTTPStatus.BAD_REQUEST, AdhocStatus.CSR_ERROR: HTTPStatus.BAD_REQUEST,
                AdhocStatus.WORKFLOW_ERROR: HTTPStatus.UNPROCESSABLE_ENTITY, AdhocStatus.UNKNOWN_DEVICE: HTTPStatus.UNPROCESSABLE_ENTITY,
                AdhocStatus.ISSUANCE_ANOMALY: HTTPStatus.UNPROCESSABLE_ENTITY, AdhocStatus.CA_ERROR: HTTPStatus.INTERNAL_SERVER_ERROR}
_TITLES = {AdhocStatus.FORMAT_ERROR: "Not a request the portal can read", AdhocStatus.CSR_ERROR: "The CSR was refused",
           AdhocStatus.WORKFLOW_ERROR: "Refused by the Certificate Policy's rules", AdhocStatus.UNKNOWN_DEVICE: "Unknown device",
           AdhocStatus.ISSUANCE_ANOMALY: "Held for the Registration Authority", AdhocStatus.CA_ERROR: "The CA could not answer"}


def refused(exc: BaseException) -> PageError:
    """The page for an actor's refusal: the same Status and ErrorCode the CSR web services would answer."""
    status, error = refusal_answer(exc)
    return PageError(_HTTP_STATUS[status], _TITLES[status], f"{error.code}: {error.text}", code=error.code)


# -- logging in and out -------------------------------------------------------------------------------------------

async def login_form(request: web.Request) -> web.Response:
    return login_page(message=None, username="")


def login_page(*, message: str | None, username: str, status: HTTPStatus = HTTPStatus.OK) -> web.Response:
    """The login form, with a new login token in its form and in the login cookie."""
    token = new_login_token()
    response = page("login.html", status=status, **context(None, message=message, username=username, login_token=token))
    set_login_cookie(response, token)
    return response


async def login(request: web.Request) -> web.Response:
    """The password login: the form's token must equal the login cookie's (no session exists yet to hold one)."""
    try:
        form = await read_form(request)
        check_csrf(form, request.cookies.get(LOGIN_COOKIE))
    except PageError as error:
        audit(request, "portal-login", error.status, code=error.code, outcome=Outcome.REFUSED)
        return page("error.html", status=error.status, **context(None, title=error.title, message=error.message, login=True))
    username, password = form.get("username", ""), form.get("password", "")
    try:
        if not isinstance(username, str) or not isinstance(password, str) or len(password) > MAX_PASSWORD:
            raise LoginRefused("wrong user name or password")
        session, token = await run_blocking(request, lambda: accounts(request).login(username, password, address=request.remote or ""))
    except LoginRefused as exc:
        audit(request, "portal-login", HTTPStatus.UNAUTHORIZED, code="login", outcome=Outcome.REFUSED)
        return login_page(message=str(exc), username=str(username)[:64], status=HTTPStatus.UNAUTHORIZED)
    audit(request, "portal-login", HTTPStatus.SEE_OTHER)
    response = see_other(f"{PREFIX}/")
    set_session_cookie(response, token)
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


@portal_page("portal-logout")
async def logout(request: web.Request, visitor: Visitor, form) -> web.Response:
    await run_blocking(request, accounts(request).logout, request.cookies.get(SESSION_COOKIE))
    response = see_other(f"{PREFIX}/login")
    clear_session_cookie(response)
    return response


# -- home ---------------------------------------------------------------------------------------------------------

@portal_page("portal-home")
async def home(request: web.Request, visitor: Visitor, form) -> web.Response:
    return page("home.html", **context(visitor))


# -- Organisation CSR ---------------------------------------------------------------------------------------------

@portal_page("portal-organisation")
async def organisation_form(request: web.Request, visitor: Visitor, form) -> web.Response:
    return page("organisation.html", **context(visitor, certificate=None))


@portal_page("portal-organisation-submit")
async def organisation_submit(request: web.Request, visitor: Visitor, form: MultiDictProxy) -> web.Response:
    csr = csr_of(form)
    role = role_of(visitor, form)
    oca, submitter = request.app[SERVICES].issuing_oca(), submitter_of(visitor)
    try:  # the submitter: the usage rules count the portal's Organisation CSRs, as the web service's and the ad hoc form's
        issued = await run_blocking(request, lambda: oca.issue_organisation(csr, requester=role, source="SMKI Portal",
                                                                            submitter=submitter))
    except Exception as exc:  # noqa: BLE001 - every refusal is a page (the table logs what it did not expect)
        raise refused(exc) from None
    audit(request, "portal-organisation-submit", HTTPStatus.OK)
    return page("organisation.html", **context(visitor, certificate=shown(issued.der)))


# -- ad hoc Device CSR --------------------------------------------------------------------------------------------

@portal_page("portal-adhoc")
async def adhoc_form(request: web.Request, visitor: Visitor, form) -> web.Response:
    return page("adhoc.html", **context(visitor, certificate=None))


@portal_page("portal-adhoc-submit")
async def adhoc_submit(request: web.Request, visitor: Visitor, form: MultiDictProxy) -> web.Response:
    csr = csr_of(form)
    role = role_of(visitor, form)
    dca, submitter = request.app[SERVICES].issuing_dca(), submitter_of(visitor)
    try:
        issued = await run_blocking(request, lambda: dca.issue_device(csr, requester=role, device_type=None, source="SMKI Portal",
                                                                      submitter=submitter))
    except Exception as exc:  # noqa: BLE001 - every refusal is a page
        raise refused(exc) from None
    audit(request, "portal-adhoc-submit", HTTPStatus.OK)
    return page("adhoc.html", **context(visitor, certificate=shown(issued.der)))


# -- batches ------------------------------------------------------------------------------------------------------

@portal_page("portal-batches")
async def batch_list(request: web.Request, visitor: Visitor, form) -> web.Response:
    rows = await _batch_rows(request, visitor)
    return page("batches.html", **context(visitor, batches=rows, submitted=request.query.get("submitted")))


@portal_page("portal-batches-status")
async def batch_status(request: web.Request, visitor: Visitor, form) -> web.Response:
    """The batch list's live status, for the page's script: the same rows as JSON."""
    rows = await _batch_rows(request, visitor)
    return web.json_response({"batches": rows}, headers={"Cache-Control": "no-store"})


@portal_page("portal-batch-submit")
async def batch_submit(request: web.Request, visitor: Visitor, form: MultiDictProxy) -> web.Response:
    filename, upload = uploaded(form, "batch", MAX_BATCH_UPLOAD, "batch ZIP")
    if not upload.startswith(b"PK\x03\x04"):
        raise PageError(HTTPStatus.BAD_REQUEST, "Not a ZIP file", f"The file {filename!r} is not a ZIP archive: upload a ZIP "
                        "of .csr files (the portal batch format).", code="FM:AA1")
    reference = _reference(form, filename)
    role = role_of(visitor, form)
    dca, submitter = request.app[SERVICES].issuing_dca(), submitter_of(visitor)
    try:
        queued = await run_blocking(request, lambda: dca.submit_batch(upload, client_id=reference, subscriber=submitter, requester=role))
    except Exception as exc:  # noqa: BLE001 - every refusal is a page
        raise refused(exc) from None
    audit(request, "portal-batch-submit", HTTPStatus.SEE_OTHER, client_id=reference)
    return see_other(f"{PREFIX}/batches?submitted={queued.number}")


@portal_page("portal-batch")
async def batch_detail(request: web.Request, visitor: Visitor, form) -> web.Response:
    number = batch_number(request)
    answer = await _batch_answer(request, visitor, number)
    counts = Counter(a.status for a in answer.answers) if answer.answers is not None else None
    return page("batch.html", **context(visitor, batch=answer.batch, counts=counts,
                                        answers=answer.answers[:200] if answer.answers else ()))


@portal_page("portal-batch-download")
async def batch_download(request: web.Request, visitor: Visitor, form) -> web.Response:
    number, kind = batch_number(request), request.match_info["file"]
    if kind not in ("response.zip", "status.csv"):
        raise PageError(HTTPStatus.NOT_FOUND, "No such file", "A batch offers response.zip and status.csv.")
    dca = request.app[SERVICES].issuing_dca()
    try:
        batch, response_zip, status_file = await run_blocking(request, dca.batch_files, number, submitter_of(visitor))
    except UnknownBatch:
        raise _unknown_batch(number) from None
    body = response_zip if kind == "response.zip" else status_file
    if body is None:
        raise PageError(HTTPStatus.CONFLICT, "Not ready yet", f"Batch {number} is {batch.status.value}: its results are ready "
                        "when it is COMPLETED.")
    audit(request, "portal-batch-download", HTTPStatus.OK, client_id=str(number))
    return download(body, "application/zip" if kind == "response.zip" else "text/csv", f"batch-{number}-{kind}")


async def _batch_answer(request: web.Request, visitor: Visitor, number: int):
    dca = request.app[SERVICES].issuing_dca()
    try:
        return await run_blocking(request, dca.batch_result, number, submitter_of(visitor))
    except UnknownBatch:
        raise _unknown_batch(number) from None


def _unknown_batch(number: int) -> PageError:
    # Another subscriber's batch is answered as one that does not exist: its number tells nothing.
    return PageError(HTTPStatus.NOT_FOUND, "No such batch", f"You have no batch {number}.", code="FM:AA3")


async def _batch_rows(request: web.Request, visitor: Visitor) -> list[dict]:
    dca = request.app[SERVICES].issuing_dca()
    batches = await run_blocking(request, lambda: dca.batches(subscriber=visitor.subscriber.name, limit=_LISTED_BATCHES))
    counts = request.app[_COUNTS]
    rows = []
    for batch in batches:
        key = (visitor.subscriber.name, batch.number)
        if batch.status is BatchStatus.COMPLETED and key not in counts:
            if len(counts) >= _MAX_COUNTED:
                counts.clear()  # a worker's memory is bounded: the counts are read again when next shown
            answer = await _batch_answer(request, visitor, batch.number)
            counts[key] = dict(Counter(a.status for a in answer.answers or ()))
        rows.append({"number": batch.number, "reference": batch.client_id, "status": batch.status.value,
                     "entries": batch.entry_count, "submitted_at": batch.submitted_at, "counts": counts.get(key, {}),
                     "open": batch.status.is_open})
    return rows


# -- what forms carry ---------------------------------------------------------------------------------------------

_PATH_PARTS = re.compile(r"[/\\]|^\.\.?$|\.\.")


def checked_filename(name: str | None) -> str:
    """A client's file name, shown back (escaped) but never used as a path: refused when it has path parts."""
    # Percent-escapes decoded first (aiohttp's client escapes a name so; browsers escape " and newlines): an escaped
    # slash is still a path part.
    name = unquote(name or "(unnamed)")
    if _PATH_PARTS.search(name) or not name.isprintable() or len(name) > 255:
        raise PageError(HTTPStatus.BAD_REQUEST, "File name refused", f"The file name {name[:255]!r} has path parts or "
                        "characters a file name may not have: upload the file under its own plain name.", code="FM:AA1")
    return name


def uploaded(form: MultiDictProxy, field: str, limit: int, what: str) -> tuple[str, bytes]:
    item = form.get(field)
    if not isinstance(item, web.FileField):
        raise PageError(HTTPStatus.BAD_REQUEST, f"No {what}", f"Choose a {what} file to upload.", code="FM:AA1")
    name = checked_filename(item.filename)
    data = item.file.read(limit + 1)
    if len(data) > limit:
        raise PageError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "File too large",
                        f"The file {name!r} is over {limit:,} bytes, the most a {what} may be.", code="FM:AA4")
    if not data:
        raise PageError(HTTPStatus.BAD_REQUEST, "Empty file", f"The file {name!r} is empty.", code="FM:AA1")
    return name, data


def csr_of(form: MultiDictProxy) -> bytes:
    """The CSR: an uploaded file, or text pasted into the form (any encoding the portal accepts)."""
    pasted = form.get("csr_text")
    if isinstance(pasted, str) and pasted.strip():
        data = pasted.encode("utf-8", "replace")
        if len(data) > MAX_CSR_BYTES:
            raise PageError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "CSR too large",
                            f"The pasted CSR is over {MAX_CSR_BYTES:,} bytes.", code="FM:AA4")
        return data
    return uploaded(form, "csr", MAX_CSR_BYTES, "CSR")[1]


def role_of(visitor: Visitor, form: MultiDictProxy) -> RemotePartyRole:
    """The role the visitor acts for: its subscriber's only one, or the one the form names among its roles."""
    roles = visitor.subscriber.roles
    named = form.get("role")
    if not named:
        if len(roles) == 1:
            return roles[0]
        raise PageError(HTTPStatus.BAD_REQUEST, "Choose a role", "Your organisation holds several roles: choose the one "
                        "this request is for.", code="WF:AA1")
    try:
        chosen = RemotePartyRole.parse(str(named)[:64])
    except (BadInputError, ValueError):
        chosen = None
    if chosen is None or not visitor.subscriber.acts_for(chosen):  # the register's one check of a role held
        raise PageError(HTTPStatus.FORBIDDEN, "Role not held", f"Your organisation does not hold the role {str(named)[:64]!r}.",
                        code="WF:AA1")
    return chosen


def submitter_of(visitor: Visitor) -> Submitter:
    return Submitter(visitor.subscriber.name, Channel.PORTAL, visitor.subscriber.eui64.hex)


def _reference(form: MultiDictProxy, filename: str) -> str:
    reference = form.get("reference")
    text = reference.strip() if isinstance(reference, str) and reference.strip() else filename
    if len(text) > MAX_REFERENCE or not text.isprintable():
        raise PageError(HTTPStatus.BAD_REQUEST, "Reference refused", f"A batch reference is 1-{MAX_REFERENCE} printable "
                        "characters on one line.", code="FM:AA1")
    return text


def batch_number(request: web.Request) -> int:
    text = request.match_info["number"]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:  # ASCII: isdigit() takes "²", which int() refuses
        raise PageError(HTTPStatus.NOT_FOUND, "No such batch", "A batch is named by its number.", code="FM:AA3")
    return int(text)


def add_routes(app: web.Application) -> None:
    app[_COUNTS] = {}
    app.router.add_get(f"{PREFIX}/login", login_form)
    app.router.add_post(f"{PREFIX}/login", login)
    app.router.add_post(f"{PREFIX}/logout", logout)
    app.router.add_get(f"{PREFIX}/", home)
    app.router.add_get(f"{PREFIX}/organisation", organisation_form)
    app.router.add_post(f"{PREFIX}/organisation", organisation_submit)
    app.router.add_get(f"{PREFIX}/adhoc", adhoc_form)
    app.router.add_post(f"{PREFIX}/adhoc", adhoc_submit)
    app.router.add_get(f"{PREFIX}/batches", batch_list)
    app.router.add_post(f"{PREFIX}/batches", batch_submit)
    app.router.add_get(f"{PREFIX}/batches.json", batch_status)
    app.router.add_get(f"{PREFIX}/batches/{{number}}", batch_detail)
    app.router.add_get(f"{PREFIX}/batches/{{number}}/{{file}}", batch_download)

