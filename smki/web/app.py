"""The aiohttp application: its routes and middlewares, one per worker process.

Middlewares, outermost first:
- observe: the access log line (no query string, no header values) and the Prometheus metrics, per route and status;
- errors: an unexpected exception becomes one logged line and a 500 without detail, never a traceback to a client;
- framing: the body's framing and size checked before a byte of it is read (411 Transfer-Encoding, 400 a
  Content-Length that is not one decimal number, 413 over the route's limit); the handler reads the body
  (the request deadline of smki.web.transport runs until it is whole);
- caller: request[CALLER]; for a handler marked @serves(interface), the subscriber the register finds for
  the TLS client certificate, or 403 with one line (audited) before the handler runs.

/health and /metrics need no authentication.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import time
from collections.abc import Iterable
from http import HTTPStatus

from aiohttp import web

from smki.register import Interface, SubscriberRefused
from smki.web import access_log, metrics
from smki.web.context import (AUDIT, CALLER, EXECUTOR, SERVICES, AuditBuffer, Caller, Outcome, Services, interface_of,
                              run_blocking, single_thread_executor)
from smki.web.settings import ServiceSettings
from smki.web.tls import PeerCertificate, peer_certificate

log = logging.getLogger("smki.web")

ROUTE_MODULES = ("smki.web.repository", "smki.web.adhoc", "smki.web.organisation", "smki.web.batches", "smki.web.portal")
# The authority each interface's handlers call: an interface whose authority the service does not host is not served (404).
# The portal needs the service's own store (its accounts and sessions, beside the register).
HOSTED_BY = {"smki.web.repository": "librarian", "smki.web.adhoc": "issuing_dca", "smki.web.organisation": "issuing_oca",
             "smki.web.batches": "issuing_dca", "smki.web.portal": "database"}
REPOSITORY_ONLY = ("smki.web.repository",)
BATCH_PREFIX = "/1.0/PortalCSRBatch/"  # the batch service takes large bodies (limits.max_body_bytes)
PORTAL_PREFIX = "/portal/"  # and so do the portal's uploads (a batch ZIP), each form bounding its own fields
OPERATOR_PREFIX = "/portal/operator"  # the operator view's pages (Interface.OPERATOR)
SETTINGS = web.AppKey("smki.settings", ServiceSettings)
_DIGITS = re.compile(r"[0-9]{1,15}")  # Content-Length: ASCII digits only (int() takes "+5", " 5", "1_0", Arabic digits)
_FLUSH_TASK = web.AppKey("smki.audit_flush", asyncio.Task)
_ACCESS_LOG_TASK = web.AppKey("smki.access_log_flush", asyncio.Task)


class Refusal(Exception):
    """A request refused before its handler: the status and one line, and the connection closed."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.message + "\n", headers={"Connection": "close"})


def make_app(services: Services, settings: ServiceSettings, *, route_modules: Iterable[str] = ROUTE_MODULES) -> web.Application:
    """The application of one worker: `services` (its actors, opened once), the routes of `route_modules`
    (a module not installed yet is skipped), /health and /metrics."""
    app = web.Application(middlewares=[observe, errors, framing, caller],
                          client_max_size=max(settings.limits.max_body_bytes, settings.limits.max_other_body_bytes) + 1)
    app[SERVICES], app[SETTINGS] = services, settings
    app[EXECUTOR] = single_thread_executor()
    app[AUDIT] = AuditBuffer(lambda entries: services.register().audit_requests(entries))
    from smki.web.repository import ACCESS, RepositoryAccess
    app[ACCESS] = RepositoryAccess(settings.repository.public_crl, settings.repository.public_search)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_page)
    for name in route_modules:
        module = _optional_module(name)
        if module is not None:
            module.add_routes(app)
    for route in app.router.routes():
        # aiohttp answers "Expect: 100-continue" before any middleware: the framing check goes first there too.
        route._expect_handler = expect_continue  # noqa: SLF001 - aiohttp takes it only as add_route's argument
    app.on_startup.append(_open_actors)
    app.on_startup.append(_start_audit_flush)
    app.on_cleanup.append(_stop)
    return app


def hosted_routes(settings: ServiceSettings) -> tuple[str, ...]:
    """The route modules of the interfaces whose authority `settings` names."""
    return tuple(name for name in ROUTE_MODULES if getattr(settings, HOSTED_BY[name]) is not None)


def _optional_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None  # that interface is not part of this build yet
        raise


async def _open_actors(app: web.Application) -> None:
    """The services' actors opened before the first request, on the actor thread (the thread that will use their
    connections and sessions): a store that will not open fails the worker's start, not a request."""
    open_actors = getattr(app[SERVICES], "open", None)
    if open_actors is not None:
        await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], open_actors)


async def _start_audit_flush(app: web.Application) -> None:
    app[_FLUSH_TASK] = asyncio.get_running_loop().create_task(app[AUDIT].run(app[EXECUTOR]))
    app[_ACCESS_LOG_TASK] = asyncio.get_running_loop().create_task(_flush_access_log())


async def _flush_access_log() -> None:
    """The access log's buffered lines written out on a beat, not per request (see access_log.BufferedFileHandler)."""
    while True:
        await asyncio.sleep(access_log.FLUSH_INTERVAL)
        access_log.flush()


async def _stop(app: web.Application) -> None:
    """At shutdown (in-flight requests answered): the last audit entries written, the actors closed, the actor thread stopped."""
    for key in (_FLUSH_TASK, _ACCESS_LOG_TASK):
        task = app.get(key)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
    access_log.flush()
    try:
        await app[AUDIT].flush(app[EXECUTOR])
    except Exception as exc:  # noqa: BLE001 - logged: the rest of the shutdown still runs
        log.error("request audit not written at shutdown: %s: %s", type(exc).__name__, exc)
    close = getattr(app[SERVICES], "close", None)
    if close is not None:  # the actors' sessions closed on the thread that opened them
        await asyncio.get_running_loop().run_in_executor(app[EXECUTOR], close)
    app[EXECUTOR].shutdown(wait=True)


# -- middlewares --------------------------------------------------------------------------------------------------

def _route_name(request: web.Request) -> str:
    """The route's pattern (never the path itself: serials and names would make a series per request)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(unmatched)"


@web.middleware
async def observe(request: web.Request, handler) -> web.StreamResponse:
    started = time.monotonic()
    status, size = 500, None
    try:
        response = await handler(request)
        status, size = response.status, response.content_length
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        seconds = time.monotonic() - started
        metrics.observe(_route_name(request), request.method, status, seconds)
        caller = request.get(CALLER)
        access_log.record(request.remote or "-", caller.subscriber.name if caller and caller.subscriber else None,
                          request.method, request.path, status, size, seconds * 1000)


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except (web.HTTPException, asyncio.CancelledError, ConnectionError):
        raise
    except Exception as exc:  # noqa: BLE001 - a fault of the service: one line in the log, no detail to the client
        log.error("%s %s: %s: %s", request.method, access_log.printable(request.path), type(exc).__name__, access_log.printable(exc))
        return web.Response(status=HTTPStatus.INTERNAL_SERVER_ERROR, text="internal error\n")


def body_limit(request: web.Request) -> int:
    limits = request.app[SETTINGS].limits
    return limits.max_body_bytes if request.path.startswith((BATCH_PREFIX, PORTAL_PREFIX)) else limits.max_other_body_bytes


def check_framing(request: web.Request) -> None:
    """The one framing accepted: no Transfer-Encoding, at most one Content-Length of ASCII digits, within the route's limit."""
    if request.headers.getall("Transfer-Encoding", []):
        raise Refusal(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding is not accepted: send the body with Content-Length")
    lengths = request.headers.getall("Content-Length", [])
    if len(lengths) > 1:
        raise Refusal(HTTPStatus.BAD_REQUEST, "Content-Length given more than once")
    if not lengths:
        return
    if not _DIGITS.fullmatch(lengths[0]):
        raise Refusal(HTTPStatus.BAD_REQUEST, "Content-Length is not a decimal number of bytes")
    limit = body_limit(request)
    if int(lengths[0]) > limit:
        raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body over {limit} bytes")


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """"Expect: 100-continue": "100 Continue" only for a body the framing check takes."""
    try:
        check_framing(request)
    except Refusal as refusal:
        await audit_framing_refusal(request, refusal)
        return refusal.response()
    if request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue":
        request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None
    return Refusal(HTTPStatus.EXPECTATION_FAILED, "unknown Expect").response()


@web.middleware
async def framing(request: web.Request, handler) -> web.StreamResponse:
    """The framing checked before the handler reads a byte of the body (the handler reads it: the request
    deadline of smki.web.transport runs until the body is whole)."""
    try:
        check_framing(request)
    except Refusal as refusal:
        await audit_framing_refusal(request, refusal)
        return refusal.response()
    return await handler(request)


async def audit_framing_refusal(request: web.Request, refusal: Refusal) -> None:
    """A CSR interface's request refused for its framing (413, 400, 411) leaves its audit entry, as every request to
    an interface does: who (the certificate's subscriber when the register knows it, else its fingerprint), the refusal."""
    interface = interface_of(request.match_info.handler) or _portal_interface(request)
    if interface is None:
        return
    peer = peer_certificate(request, request.app[SETTINGS].tls)
    subscriber = None
    if peer is not None:
        try:
            subscriber = await _identify(request, peer, interface)
        except SubscriberRefused:
            pass  # refused for its framing first: the entry names its certificate by fingerprint
    request[CALLER] = Caller(subscriber, peer.fingerprint if peer else None, request.remote or "")
    request.app[AUDIT].record_for(request, interface, operation=request.path, status=str(refusal.status.value),
                                  outcome=Outcome.REFUSED)


async def read_body(request: web.Request) -> bytes:
    """The request's body, whole: a body that ended before its Content-Length is refused (400, connection closed)."""
    body = await request.read()
    if request.content_length is not None and len(body) != request.content_length:
        raise web.HTTPBadRequest(text="request body shorter than its Content-Length\n", headers={"Connection": "close"})
    return body


@web.middleware
async def caller(request: web.Request, handler) -> web.StreamResponse:
    peer = peer_certificate(request, request.app[SETTINGS].tls)
    request[CALLER] = Caller(None, peer.fingerprint if peer else None, request.remote or "")
    interface = interface_of(request.match_info.handler)
    if interface is None:
        return await handler(request)
    try:
        subscriber = await _identify(request, peer, interface)
    except SubscriberRefused as exc:
        request.app[AUDIT].record_for(request, interface, operation=request.path, status=str(HTTPStatus.FORBIDDEN.value),
                                      outcome=Outcome.REFUSED)
        log.info("%s %s refused: %s", request.remote, access_log.printable(request.path), exc)
        return web.Response(status=HTTPStatus.FORBIDDEN, text=f"refused: {exc}\n")
    request[CALLER] = Caller(subscriber, peer.fingerprint, request.remote or "")
    return await handler(request)


def _portal_interface(request: web.Request) -> Interface | None:
    """A portal page's interface (its pages identify their visitors themselves, unmarked): an upload over the limit
    is audited as the portal's other refusals are (issue 16: an oversized upload)."""
    if not request.path.startswith(PORTAL_PREFIX):
        return None
    return Interface.OPERATOR if request.path.startswith(OPERATOR_PREFIX) else Interface.PORTAL


async def _identify(request: web.Request, peer: PeerCertificate | None, interface):
    if peer is None:
        raise SubscriberRefused(f"the {interface} interface needs a client certificate")
    return await run_blocking(request, request.app[SERVICES].register().identify, peer.der, interface)


# -- /health and /metrics ----------------------------------------------------------------------------------------

async def health(request: web.Request) -> web.Response:
    """200 and {"status": "ok", ...} when the store and the HSM session answer; 503 and what failed otherwise."""
    try:
        checks = await asyncio.wait_for(run_blocking(request, request.app[SERVICES].health), timeout=5)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer: unavailable, and why (no detail beyond its kind)
        return web.json_response({"status": "unavailable", "error": type(exc).__name__}, status=HTTPStatus.SERVICE_UNAVAILABLE,
                                 dumps=json.dumps)
    return web.json_response({"status": "ok", "build": request.app[SETTINGS].build, **checks})


async def metrics_page(request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})
