"""What every handler reads: the worker's services (`request.app[SERVICES]`) and the caller
(`request[CALLER]`), identified by the caller middleware before any handler runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from smki.register import Interface, Subscriber


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


SERVICES = web.AppKey("smki.services", Services)
CALLER = "smki.caller"  # request[CALLER]: a Caller

INTERFACE_ATTRIBUTE = "__smki_interface__"


def serves(interface: Interface) -> Callable:
    """Marks a handler as one interface's: the caller middleware lets only a subscriber granted it reach the handler."""
    def mark(handler: Callable) -> Callable:
        setattr(handler, INTERFACE_ATTRIBUTE, interface)
        return handler
    return mark


def interface_of(handler: Callable) -> Interface | None:
    return getattr(handler, INTERFACE_ATTRIBUTE, None)
