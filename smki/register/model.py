"""The register's values: the online interfaces, a subscriber and its status, the refusal."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from smki.errors import RefusedError
from smki.identifiers import EUI64, RemotePartyRole


class Interface(enum.StrEnum):
    """An online interface of the SMKI (SEC Appendix M 2.1, Appendix P), as a subscriber entry grants it."""

    ADHOC_DEVICE = "adhoc-device"  # the Ad Hoc Device CSR web service
    BATCH_DEVICE = "batch-device"  # the Batched Device CSR web service (and its ZIP upload)
    ORGANISATION = "organisation"  # Organisation CSR submission
    REPOSITORY = "repository"  # the SMKI Repository web service (also open to API-key callers)
    PORTAL = "portal"  # the SMKI Portal pages
    OPERATOR = "operator"  # the Issuing Authority's own staff: the operator view


class SubscriberStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # refused until resumed; kept, with its history
    REMOVED = "removed"  # refused for good; the entry stays for the audit trail's sake


@dataclass(frozen=True)
class Subscriber:
    """One Authorised Subscriber's entry: who it is and what its client certificate may do."""

    name: str  # the register's key: the party's name for its system, e.g. "acme-supplier-adhoc"
    eui64: EUI64
    roles: tuple[RemotePartyRole, ...]
    interfaces: frozenset[Interface]
    status: SubscriberStatus = SubscriberStatus.ACTIVE

    def may_use(self, interface: Interface) -> bool:
        return self.status is SubscriberStatus.ACTIVE and interface in self.interfaces

    def acts_for(self, role: RemotePartyRole) -> bool:
        return role in self.roles


class RefusalReason(enum.StrEnum):
    """Why the register refused a caller: what a request's audit entry and metrics record (the message says more)."""

    UNREADABLE = "unreadable-certificate"  # the bytes presented are no X.509 certificate
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown-certificate"  # registered neither by fingerprint nor by issuer and key
    SUSPENDED = "suspended"
    REMOVED = "removed"
    INTERFACE = "interface-not-granted"


class SubscriberRefused(RefusedError):
    """A caller the register does not authorise: unknown, suspended, removed, or not for this interface.
    The message names the reason but never more of the certificate than its fingerprint; `reason` names it
    as a value (None when raised without one)."""

    def __init__(self, message: str, reason: RefusalReason | None = None) -> None:
        super().__init__(message)
        self.reason = reason
