"""Who is asking for a portal page, and what every page does before and after its handler.

Two ways in, as the SEC has them:
- a client certificate the subscriber register grants Interface.PORTAL (the operator view: Interface.OPERATOR),
  verified by the TLS layer and identified by `SubscriberRegister.identify`, as for the CSR web services;
  the browser gets a certificate session, bound to that certificate, so its forms carry a CSRF token too;
- a user name and password (smki.register.accounts): a password session.

The session travels in one cookie, `__Host-smki-portal` (Secure, HttpOnly, SameSite=Strict, Path=/). Every
POST carries the session's CSRF token in the form field `csrf`, compared in constant time; the login form, which
has no session yet, carries a token equal to the `__Host-smki-login` cookie's. A POST without a valid token is
refused (403) before its handler runs, with a page saying so, and audited.

`portal_page` wraps each handler: it finds the visitor, checks the form's CSRF token, turns a PageError into
a page with its HTTP status, records the request audit entry of every POST and every refusal, and sets the cookie.
"""

from __future__ import annotations

import asyncio
import functools
import io
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp import BodyPartReader, MultipartReader
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader
from multidict import MultiDict, MultiDictProxy

from smki.register import Interface, Subscriber, SubscriberRefused
from smki.register.accounts import PortalAccounts, Session, SessionExpired, SessionKind
from smki.web.access_log import printable
from smki.web.app import SETTINGS
from smki.web.context import AUDIT, CALLER, SERVICES, Caller, Outcome, run_blocking
from smki.web.portal.rendering import page
from smki.web.tls import peer_certificate

log = logging.getLogger(__name__)

PREFIX = "/portal"
SESSION_COOKIE = "__Host-smki-portal"
LOGIN_COOKIE = "__Host-smki-login"
CSRF_FIELD = "csrf"
MAX_FORM_FIELDS = 16  # the largest portal form has six


class WorkerAccounts:
    """The worker's PortalAccounts, made when first used (on the actor thread) in the service's store: the register's database."""

    def __init__(self, accounts: PortalAccounts | None = None) -> None:
        self._accounts = accounts

    def of(self, register) -> PortalAccounts:
        if self._accounts is None:
            self._accounts = PortalAccounts(register.database, actor="portal")
        return self._accounts


ACCOUNTS = web.AppKey("smki.portal.accounts", WorkerAccounts)


class PageError(Exception):
    """A request the portal refuses, shown as a page: its HTTP status, a title and one clear message (escaped)."""

    def __init__(self, status: HTTPStatus, title: str, message: str, *, code: str | None = None, login: bool = False) -> None:
        super().__init__(message)
        self.status, self.title, self.message, self.code, self.login = status, title, message, code, login


class LoginNeeded(Exception):
    """No session and no client certificate: the browser is sent to the login page."""


@dataclass(frozen=True)
class Visitor:
    subscriber: Subscriber
    session: Session
    operator: bool  # identified for the operator view by an operator's client certificate
    new_token: str | None = None  # a session made for this request: its cookie goes with the answer

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    @property
    def who(self) -> str:
        return self.session.who


def accounts(request: web.Request) -> PortalAccounts:
    """The worker's PortalAccounts, in the service's store (the register's database). Actor thread only."""
    return request.app[ACCOUNTS].of(request.app[SERVICES].register())


async def find_visitor(request: web.Request, interface: Interface) -> Visitor:
    """The visitor of a page of `interface` (PORTAL or OPERATOR); LoginNeeded or PageError otherwise."""
    peer = peer_certificate(request, request.app[SETTINGS].tls)
    token = request.cookies.get(SESSION_COOKIE)
    if peer is not None:
        try:
            subscriber = await run_blocking(request, request.app[SERVICES].register().identify, peer.der, interface)
        except SubscriberRefused as exc:
            if interface is Interface.OPERATOR:
                raise PageError(HTTPStatus.FORBIDDEN, "Not an operator", f"Your client certificate is refused: {exc}") from None
            subscriber = None  # a certificate not for the portal: the password may still let the visitor in
        if subscriber is not None:
            return await _certificate_visitor(request, subscriber, peer.fingerprint, token, interface)
    if interface is Interface.OPERATOR:
        raise PageError(HTTPStatus.FORBIDDEN, "Not an operator",
                        "The operator view needs an Issuing Authority operator's client certificate.")
    try:
        session = await run_blocking(request, accounts(request).session, token)
    except SessionExpired as exc:
        raise PageError(HTTPStatus.UNAUTHORIZED, "Session expired", str(exc), login=True) from None
    if session is None or session.kind is not SessionKind.PASSWORD:
        raise LoginNeeded()
    return Visitor(session.subscriber, session, operator=False)


async def _certificate_visitor(request: web.Request, subscriber: Subscriber, fingerprint: str, token: str | None,
                               interface: Interface) -> Visitor:
    try:
        session = await run_blocking(request, accounts(request).session, token)
    except SessionExpired:
        session = None  # the certificate still identifies the visitor: a new session, silently
    if session is not None and session.kind is SessionKind.CERTIFICATE and session.fingerprint == fingerprint:
        return Visitor(subscriber, session, operator=interface is Interface.OPERATOR)
    session, new_token = await run_blocking(request, accounts(request).certificate_session, subscriber, fingerprint)
    return Visitor(subscriber, session, operator=interface is Interface.OPERATOR, new_token=new_token)


def check_csrf(form: MultiDictProxy, expected: str | None) -> None:
    offered = form.get(CSRF_FIELD)
    if not isinstance(offered, str) or not expected or not hmac.compare_digest(offered.encode(), expected.encode()):
        raise PageError(HTTPStatus.FORBIDDEN, "Form refused",
                        "This form was refused: it did not carry this session's security token (CSRF). "
                        "Nothing was done. Reload the page and submit the form again.", code="csrf")


async def read_form(request: web.Request) -> MultiDictProxy:
    """The POSTed form. The framing middleware has read the body already (its size checked before a byte of it was
    taken), so a multipart form is parsed from that copy; a urlencoded one aiohttp parses from it itself."""
    try:
        if request.content_type != "multipart/form-data":
            return await request.post()
        return await _multipart_form(request)
    except PageError:
        raise
    except Exception:  # noqa: BLE001 - aiohttp's multipart errors: the form is malformed, whatever the detail
        raise PageError(HTTPStatus.BAD_REQUEST, "Form not readable", "The form could not be read: it is not a well-formed "
                        "HTML form submission.") from None


async def _multipart_form(request: web.Request) -> MultiDictProxy:
    loop = asyncio.get_running_loop()
    stream = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    stream.feed_data(await request.read())
    stream.feed_eof()
    reader = MultipartReader(request.headers, stream)
    fields: MultiDict = MultiDict()
    while (part := await reader.next()) is not None:
        if len(fields) >= MAX_FORM_FIELDS or not isinstance(part, BodyPartReader) or not part.name:
            raise PageError(HTTPStatus.BAD_REQUEST, "Form not readable", "The form has parts a portal form does not have.")
        data = await part.read()
        if part.filename is not None:
            fields.add(part.name, web.FileField(part.name, part.filename, io.BytesIO(data),
                                                part.headers.get("Content-Type", "application/octet-stream"), part.headers))
        else:
            fields.add(part.name, data.decode(part.get_charset(default="utf-8"), "replace"))
    return MultiDictProxy(fields)


def see_other(location: str) -> web.Response:
    """303 to another portal page (after a POST, or to the login page)."""
    return web.Response(status=HTTPStatus.SEE_OTHER, headers={"Location": location, "Cache-Control": "no-store"})


def set_session_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, path="/", secure=True, httponly=True, samesite="Strict")


def clear_session_cookie(response: web.StreamResponse) -> None:
    response.del_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="Strict")


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


def set_login_cookie(response: web.StreamResponse, token: str) -> None:
    response.set_cookie(LOGIN_COOKIE, token, path="/", secure=True, httponly=True, samesite="Strict", max_age=3600)


def audit(request: web.Request, operation: str, status: HTTPStatus | int, *, code: str | None = None,
          client_id: str | None = None, outcome: Outcome = Outcome.ANSWERED, interface: Interface = Interface.PORTAL) -> None:
    """The request audit entry of a portal request (web-core's buffer, flushed to the register's trail)."""
    request.app[AUDIT].record_for(request, interface, operation=operation, status=str(int(status)), code=code,
                                  client_id=client_id, outcome=outcome)


def context(visitor: Visitor | None, **values) -> dict:
    """What every page's layout reads: who is logged in, and the CSRF token its forms carry."""
    return {"visitor": visitor, "csrf_token": visitor.csrf_token if visitor else "", "csrf_field": CSRF_FIELD, **values}


def error_page(request: web.Request, visitor: Visitor | None, error: PageError) -> web.Response:
    return page("error.html", status=error.status, **context(visitor, title=error.title, message=error.message, login=error.login))


Handler = Callable[[web.Request, Any, Any], Awaitable[web.StreamResponse]]


def portal_page(operation: str, *, interface: Interface = Interface.PORTAL, public: bool = False) -> Callable[[Handler], Callable]:
    """Wrap a page handler `handler(request, visitor, form)`: the visitor found (None on a public page with
    nobody logged in), a POST's form read and its CSRF token checked, refusals shown as pages and audited."""
    def wrap(handler: Handler) -> Callable:
        @functools.wraps(handler)
        async def run(request: web.Request) -> web.StreamResponse:
            visitor: Visitor | None = None
            try:
                visitor = await _visitor_of(request, interface, public)
                form = None
                if request.method == "POST":
                    form = await read_form(request)
                    check_csrf(form, visitor.csrf_token if visitor else None)
                response = await handler(request, visitor, form)
            except LoginNeeded:
                if request.method == "POST":  # an action without a session: refused, and audited as one
                    audit(request, operation, HTTPStatus.SEE_OTHER, code="login", outcome=Outcome.REFUSED, interface=interface)
                response = see_other(f"{PREFIX}/login")
            except PageError as error:
                log.info("portal %s %s refused (%d): %s", request.method, printable(request.path), error.status,
                         printable(error.message))
                audit(request, operation, error.status, code=error.code, outcome=Outcome.REFUSED, interface=interface)
                response = error_page(request, visitor, error)
                if error.login:
                    clear_session_cookie(response)
            if visitor is not None and visitor.new_token:
                set_session_cookie(response, visitor.new_token)
            return response
        return run
    return wrap


async def _visitor_of(request: web.Request, interface: Interface, public: bool) -> Visitor | None:
    try:
        visitor = await find_visitor(request, interface)
    except (LoginNeeded, PageError):
        if public:
            return None
        raise
    request[CALLER] = Caller(visitor.subscriber, request[CALLER].fingerprint if CALLER in request else None,
                             request.remote or "")
    return visitor
