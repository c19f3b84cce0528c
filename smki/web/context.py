"""What every handler reads: the worker's services (`request.app[SERVICES]`) and the caller
(`request[CALLER]`), identified by the caller middleware before any handler runs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from aiohttp import web

from smki.register import Interface, Subscriber

log = logging.getLogger("smki.web")
T = TypeVar("T")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the register's subscriber for its client certificate (None when it presented none,
    or on an interface open to API-key and anonymous callers), the certificate's SHA-256 and the peer address."""

    subscriber: Subscriber | None
    fingerprint: str | None
    address: str


class Services(Protocol):
    """One worker process's actors and settings, opened once per process (each with its own HSM session)."""

    build: str  # the service's software build, as the CSR web services' answers carry it

    def issuing_oca(self) -> Any: ...  # smki.issuing.IssuingAuthority of the Issuing OCA
    def issuing_dca(self) -> Any: ...  # ... of the Issuing DCA
    def librarian(self) -> Any: ...  # smki.librarian.Librarian
    def register(self) -> Any: ...  # smki.register.SubscriberRegister
    def repository(self) -> Any: ...  # smki.librarian.repository_service.RepositoryService (the repository web service's answers)
    def health(self) -> dict[str, str]: ...  # cheap checks of the store and HSM session: {"store": "ok", ...}


SERVICES = web.AppKey("smki.services", Services)
CALLER = web.RequestKey("smki.caller", Caller)  # request[CALLER]: a Caller

INTERFACE_ATTRIBUTE = "__smki_interface__"


def serves(interface: Interface) -> Callable:
    """Marks a handler as one interface's: the caller middleware lets only a subscriber granted it reach the handler."""
    def mark(handler: Callable) -> Callable:
        setattr(handler, INTERFACE_ATTRIBUTE, interface)
        return handler
    return mark


def interface_of(handler: Callable) -> Interface | None:
    return getattr(handler, INTERFACE_ATTRIBUTE, None)


# -- the worker's executor and request audit ---------------------------------------------------------------------

EXECUTOR = web.AppKey("smki.executor", concurrent.futures.ThreadPoolExecutor)


def single_thread_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The worker's one thread for blocking actor calls: python-pkcs11 (and an SQLite connection) is not
    thread-safe, so one thread per process touches the HSM and the store."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="smki-actor")


_PROCESS_EXECUTOR: concurrent.futures.ThreadPoolExecutor | None = None


def _process_executor() -> concurrent.futures.ThreadPoolExecutor:
    """For an application not made by smki.web.app.make_app (a handler's own test app): one actor thread per process."""
    global _PROCESS_EXECUTOR
    if _PROCESS_EXECUTOR is None:
        _PROCESS_EXECUTOR = single_thread_executor()
    return _PROCESS_EXECUTOR


async def run_blocking(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the worker's single actor thread, awaited without blocking the event loop."""
    return await run_in_actor_thread(request.app, fn, *args)


async def run_in_actor_thread(app: web.Application, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on `app`'s single actor thread (for work not tied to one request: a coalesced group)."""
    executor = app.get(EXECUTOR) or _process_executor()
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


class Outcome(enum.StrEnum):
    """How a request to an interface ended, as its audit entry says."""

    ANSWERED = "answered"  # the interface's answer (its status and code say how it went)
    REFUSED = "refused"  # the caller was refused before any handler ran (HTTP 403)
    FAILED = "failed"  # a fault of the service (HTTP 500)


@dataclass(frozen=True)
class RequestAuditEntry:
    """One request to an online interface, for the register's audit trail: who, what, the outcome.
    Never a secret: no body, no query string, no API key."""

    at: str  # ISO 8601 UTC, when the answer was given
    interface: str  # an Interface value
    operation: str  # e.g. "SubmitCSRBatch", or the route's path
    subscriber: str | None  # the register's name for the caller, None when it was not identified
    fingerprint: str | None  # the client certificate's SHA-256 (hex), None without one
    address: str
    outcome: Outcome
    status: str  # the interface's status (SUCCESS, PENDING, ...) or the HTTP status
    code: str | None = None  # the error code (e.g. "FM:AA1"), None on success
    client_id: str | None = None  # the request's own ID attribute, when it had one


def who_called(request: web.Request) -> dict[str, str | None]:
    """A request audit entry's "who": the register's subscriber, the client certificate's fingerprint, the address."""
    caller = request.get(CALLER)
    return {"subscriber": caller.subscriber.name if caller and caller.subscriber else None,
            "fingerprint": caller.fingerprint if caller else None, "address": caller.address if caller else request.remote}


class AuditBuffer:
    """The worker's request-audit entries, written to the register in one transaction every
    FLUSH_INTERVAL seconds and at shutdown (`register.audit_requests(entries)`), on the actor thread."""

    FLUSH_INTERVAL = 0.2

    def __init__(self, write: Callable[[list[RequestAuditEntry]], None]) -> None:
        self._write, self._entries = write, []  # type: ignore[var-annotated]

    def record(self, *, interface: Interface | str, operation: str, status: str, code: str | None = None,
               client_id: str | None = None, subscriber: str | None = None, fingerprint: str | None = None,
               address: str | None = None, outcome: Outcome = Outcome.ANSWERED) -> None:
        """Append one entry (smki.web.answers.audit_request passes these fields as they are)."""
        self._entries.append(RequestAuditEntry(
            at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"), interface=str(Interface(interface)),
            operation=operation, subscriber=subscriber, fingerprint=fingerprint, address=address or "", outcome=outcome,
            status=status, code=code, client_id=client_id))

    def record_for(self, request: web.Request, interface: Interface, *, operation: str, status: str, code: str | None = None,
                   client_id: str | None = None, outcome: Outcome = Outcome.ANSWERED) -> None:
        """Append the entry for `request`: who sent it taken from request[CALLER]."""
        self.record(interface=interface, operation=operation, status=status, code=code, client_id=client_id, outcome=outcome,
                    **who_called(request))

    def take(self) -> list[RequestAuditEntry]:
        entries, self._entries = self._entries, []
        return entries

    async def flush(self, executor: concurrent.futures.Executor) -> None:
        entries = self.take()
        if entries:
            await asyncio.get_running_loop().run_in_executor(executor, self._write, entries)

    async def run(self, executor: concurrent.futures.Executor) -> None:
        """Flush every FLUSH_INTERVAL until cancelled (the app's cleanup flushes what is left)."""
        while True:
            await asyncio.sleep(self.FLUSH_INTERVAL)
            try:
                await self.flush(executor)
            except Exception as exc:  # noqa: BLE001 - a failed write is logged, the service goes on
                log.error("request audit not written: %s: %s", type(exc).__name__, exc)


AUDIT = web.AppKey("smki.audit", AuditBuffer)
