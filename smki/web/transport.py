"""The connection layer under the aiohttp application: what aiohttp does not bound by itself.

- connections: at most `max_connections` at once per worker, and `max_connections_per_client` from
  one client address; one more is answered 503 and closed at once (it costs no task, no parser);
- deadlines: a connection must start a request within `request_line_timeout` (aiohttp's keep-alive
  timeout, armed from the connection's start), and a request's line, headers and body must arrive
  whole within `request_timeout` of its first byte (a client trickling a byte at a time is cut off);
- malformed framing: aiohttp's parser refusals become one-line answers (414 request line too long,
  431 headers too large, 411 Transfer-Encoding, 400 otherwise) without the request's bytes echoed
  (they may hold an API key) and without a traceback in the log.

aiohttp builds its protocol in `Server.__call__` and the runner makes its Server in `_make_server`:
GuardedRunner overrides that one private method (aiohttp 3.x) to hand out GuardedHandler.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from smki.web.settings import Limits

log = logging.getLogger("smki.web")

BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 1\r\n"
        b"Connection: close\r\n\r\ntoo many connections\n")


class ConnectionSlots:
    """The worker's count of open connections, in total and per client address (event-loop thread only)."""

    def __init__(self, limits: Limits) -> None:
        self.limits, self.total, self.per_client = limits, 0, Counter()

    def take(self, host: str) -> bool:
        if self.total >= self.limits.max_connections or self.per_client[host] >= self.limits.max_connections_per_client:
            return False
        self.total += 1
        self.per_client[host] += 1
        return True

    def give_back(self, host: str) -> None:
        self.total -= 1
        self.per_client[host] -= 1
        if not self.per_client[host]:
            del self.per_client[host]  # only addresses with connections open stay in the table


def framing_refusal(exc: BaseException | None) -> tuple[HTTPStatus, str]:
    """The answer to a request aiohttp's parser refused, worded without the request's bytes."""
    if isinstance(exc, LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else None
        if limit == Limits.MAX_REQUEST_LINE_BYTES:
            return HTTPStatus.REQUEST_URI_TOO_LONG, "request line too long"
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request headers too large"
    message = getattr(exc, "message", "") or ""
    if "Too many headers" in message:
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers"
    if "Transfer-Encoding" in message:
        return HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding is not accepted: send the body with Content-Length"
    if "Content-Length" in message:
        return HTTPStatus.BAD_REQUEST, "Content-Length is not one decimal number of bytes"
    return HTTPStatus.BAD_REQUEST, "malformed request"


class GuardedHandler(RequestHandler):
    """aiohttp's protocol, with the worker's connection slots, the request deadline and quiet refusals."""

    def __init__(self, manager: "GuardedServer", *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._slots, self._limits = manager.slots, manager.limits
        self._host: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._last_payload = None
        self._shutting_down = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = peer[0] if peer else ""
        if not self._slots.take(host):
            self._refuse(transport)
            return
        self._host = host
        super().connection_made(transport)

    def _refuse(self, transport: asyncio.BaseTransport) -> None:
        """Over a bound: 503 and close, before aiohttp starts anything for this connection."""
        self._force_close = True  # data_received ignores whatever the client sends
        self._manager = None  # connection_lost has nothing to undo
        try:
            transport.write(BUSY)  # type: ignore[attr-defined]
        finally:
            transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_deadline()
        if self._host is not None:
            self._slots.give_back(self._host)
            self._host = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if (self._close or self._force_close) and self._shutting_down and self._last_payload is not None \
                and not self._last_payload.is_eof():
            # Shutting down (aiohttp's close() and shutdown() drop what arrives next): a request whose headers are
            # here is in flight, and its body is still taken, so that it is answered before the worker stops.
            flags = self._close, self._force_close
            self._close = self._force_close = False
            try:
                self._receive(data)
            finally:
                self._close, self._force_close = flags
            return
        self._receive(data)

    def _receive(self, data: bytes) -> None:
        if data and self._deadline is None and not self._force_close:
            # A request's first byte: the whole request (line, headers, body) now has request_timeout.
            self._deadline = self._loop.call_later(self._limits.request_timeout, self._deadline_passed)
            # aiohttp's keep-alive timer would close a connection whose request is under way but not yet whole:
            # from the first byte, the request deadline rules (aiohttp re-arms its timer after the answer).
            self._next_keepalive_close_time = self._loop.time() + self._limits.request_timeout + 1
        queued = len(self._messages)
        super().data_received(data)
        for _, payload in list(self._messages)[queued:]:
            # The newest request's body, while it may still be awaited (a request leaves this queue before its
            # handler runs, so neither the queue nor aiohttp's current request always holds it).
            self._last_payload = payload
            payload.on_eof(self._request_received)  # its body is here whole (at once for a request without one)

    def _request_received(self) -> None:
        """A request has arrived whole: its deadline ends (the handler's own time is not the client's)."""
        self._cancel_deadline()

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        self._shutting_down = True
        await super().shutdown(timeout)

    def eof_received(self) -> bool | None:
        """The client closed its side: a body still awaited never comes, and the request is answered 400 on the
        write side, still open (aiohttp would close the connection unanswered)."""
        payload = self._last_payload
        if payload is None or payload.is_eof():
            return None
        payload.feed_eof()  # the body ends here: the framing middleware finds it shorter than its Content-Length
        return True

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport is not None:
            log.info("connection from %s closed: request not received within %g s", self._host, self._limits.request_timeout)
            self.force_close()
            self.transport.close()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None, message: str | None = None):
        """aiohttp's own refusals (a request its parser could not read) and its last resort for a handler's
        exception: one line in the log, never the request's bytes, never a traceback."""
        if isinstance(exc, HttpProcessingError) or status == HTTPStatus.BAD_REQUEST:
            status, text = framing_refusal(exc)
            log.info("%s: %d %s", self._host, status, text)
        else:
            log.error("%s: %d: %s", self._host, status, type(exc).__name__ if exc else "error")
            status, text = HTTPStatus.INTERNAL_SERVER_ERROR, "internal error"
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started: the connection ends")
        response = web.Response(status=status, text=text + "\n", headers={"Connection": "close"})
        response.force_close()
        return response


class GuardedServer(web.Server):
    def __init__(self, *args: Any, limits: Limits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits, self.slots = limits, ConnectionSlots(limits)

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def pre_shutdown(self) -> None:
        for handler in self._connections:
            handler._shutting_down = True  # noqa: SLF001 - its own class's flag
        super().pre_shutdown()


class GuardedRunner(web.AppRunner):
    """An AppRunner whose connections are GuardedHandlers bound by `limits`."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, access_log=None, handle_signals=False, keepalive_timeout=limits.request_line_timeout,
                         max_line_size=Limits.MAX_REQUEST_LINE_BYTES, max_field_size=Limits.MAX_FIELD_BYTES,
                         max_headers=Limits.MAX_HEADERS, **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        loop = asyncio.get_running_loop()
        self._app._set_loop(loop)
        self._app.on_startup.freeze()
        await self._app.startup()
        self._app.freeze()
        return GuardedServer(self._app._handle, request_factory=self._app._make_request, loop=loop,
                             limits=self.limits, **self._kwargs)
