"""The subscriber register as one object: who the online services' callers are, and the trail of what they asked.

    with SubscriberRegister("service.db", actor="alice") as register:
        register.add("acme-supplier", "90-B3-D5-1F-30-01-00-00", ["supplier"], [Interface.ADHOC_DEVICE],
                     certificate=Path("acme-client.pem"))
        subscriber = register.identify(peer_certificate_der, Interface.ADHOC_DEVICE)   # or SubscriberRefused
        register.audit_requests([RequestEntry(...), ...])                              # one transaction

Built like the other actors: each change (`add`, `suspend`, `resume`, `remove`) is one audited operation
(smki.operations.audited): its success entry is committed with the change, a refusal leaves a refused
entry and nothing else, and with an audit key the run ends with a signed checkpoint.

`identify` is on every request's path, so it keeps what it read about a certificate for
IDENTITY_CACHE_SECONDS in the process (one dictionary lookup on a hit): a suspension or removal made
elsewhere (another process, `smki subscribers suspend`) takes effect in every worker within that time,
which is under 5 s. The presented certificate's validity is checked against the time on every call (its dates
are cached with the rest, by fingerprint: they belong to the certificate's bytes).

The register trusts the TLS layer to have verified the client certificate's chain to the configured
client CA: it matches certificates, it does not validate chains. A certificate registered by fingerprint
matches only itself; one registered by issuer and key matches any certificate its issuer (by DN) gives
for that key, so a renewal for the same key needs no new entry.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit.trail import AuditEntry
from smki.errors import BadInputError, ConflictError
from smki.files import MAX_CERTIFICATE_BYTES, read_input
from smki.hsm.config import KeyRef
from smki.hsm.pins import PinSource
from smki.identifiers import EUI64, RemotePartyRole
from smki.operations.audited import AuditedDatabase, AuditedOperation
from smki.profiles.files import load_certificate
from smki.profiles.pem import PemLabel, single_object
from smki.register.model import Interface, RefusalReason, Subscriber, SubscriberRefused, SubscriberStatus
from smki.store import subscribers as store
from smki.store.database import transaction

log = logging.getLogger(__name__)

IDENTITY_CACHE_SECONDS = 2.0  # how long a worker trusts what it read; a change elsewhere takes effect within this
_CACHE_LIMIT = 10_000  # certificates remembered per process; the cache starts afresh when full
REQUEST_OPERATION = "service.request"  # the audit operation of every request entry
MAX_CLIENT_ID = 256  # the longest client reference the CSR services accept (SubmitCSRBatch's ID)
_ANSWERED = "answered"  # smki.web's outcome of a request its handler answered
MAX_ADDRESS = 64  # an IPv6 address with its port, and room to spare
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_WORD = re.compile(r"[A-Za-z0-9/][A-Za-z0-9._:/-]{0,127}")  # a request entry's operation (a name or a route's path) or status
_CODE = re.compile(r"[A-Za-z0-9:._-]{1,16}")

CertificateInput = x509.Certificate | bytes | Path | str


class Match(enum.StrEnum):
    """How a registered client certificate matches the one a caller presents."""

    FINGERPRINT = "fingerprint"  # exactly this certificate (SHA-256 of its DER)
    ISSUER_AND_KEY = "issuer-and-key"  # any certificate from this issuer (DN) for this key (SubjectPublicKeyInfo)

    @classmethod
    def parse(cls, text: "str | Match") -> "Match":
        try:
            return cls(text)
        except ValueError:
            raise BadInputError(f"unknown certificate match {text!r} ({', '.join(m.value for m in cls)})") from None


class RequestOutcome(enum.StrEnum):
    """A request's outcome, as the audit trail records outcomes."""

    SUCCESS = "success"  # answered as asked (a certificate issued, a batch accepted, a search answered)
    REFUSED = "refused"  # a check said no: the caller, the XML, the CSR, the policy, a usage rule
    FAILED = "failed"  # the service failed (CA_ERROR, HTTP 500)


def certificate_fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as the register writes it: 64 lower-case hex digits."""
    return hashlib.sha256(der).hexdigest()


def parse_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as operators write it (hex, upper or lower case, colons allowed), normalised."""
    compact = str(text).strip().replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(compact):
        raise BadInputError("a certificate fingerprint is 64 hex digits (SHA-256 of the DER certificate; colons allowed)")
    return compact


def _fingerprint_key(fingerprint: str) -> str:
    return f"{Match.FINGERPRINT}:{fingerprint}"


def _issuer_and_key(certificate: x509.Certificate) -> str:
    issuer = hashlib.sha256(certificate.issuer.public_bytes()).hexdigest()
    key = hashlib.sha256(certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    return f"{Match.ISSUER_AND_KEY}:{issuer}:{key}"


@dataclass(frozen=True)
class ClientCertificate:
    """One client certificate of a subscriber, as registered."""

    match: Match
    fingerprint: str  # of the certificate registered (for issuer-and-key: the one it was registered from)
    issuer: str | None  # its issuer DN (RFC 4514), when registered from the certificate
    registered_at: str

    def summary(self) -> dict[str, Any]:
        return {"match": self.match.value, "fingerprint": self.fingerprint, "issuer": self.issuer, "registered_at": self.registered_at}


@dataclass(frozen=True)
class RegisteredSubscriber:
    """A subscriber's entry with its client certificates and its history's dates, as `list` returns it."""

    subscriber: Subscriber
    certificates: tuple[ClientCertificate, ...]
    created_at: str
    changed_at: str

    def summary(self) -> dict[str, Any]:
        s = self.subscriber
        return {"name": s.name, "eui64": s.eui64.hyphenated, "roles": [role.camel_name for role in s.roles],
                "interfaces": sorted(i.value for i in s.interfaces), "status": s.status.value,
                "certificates": [c.summary() for c in self.certificates], "created_at": self.created_at,
                "changed_at": self.changed_at}


@dataclass(frozen=True)
class RequestEntry:
    """One request an online service answered, for the register's audit trail: who (subscriber, certificate
    fingerprint, address), what (interface, operation, the client's own ID for it), the outcome (status, code).

    Never a secret nor a CSR's bytes: only these fields exist. Values are checked here, where they enter; the
    client's ID (the caller's own text) is kept as given, cut to MAX_CLIENT_ID characters."""

    interface: Interface
    operation: str  # e.g. submit, result, search, retrieve
    status: str  # the interface's answer: SUCCESS, FORMAT_ERROR, PENDING, or an HTTP status such as 403
    outcome: RequestOutcome
    subscriber: str | None = None  # the register's name for the caller; None when it was not identified
    fingerprint: str | None = None  # SHA-256 of the client certificate presented, if any
    client_id: str | None = None  # the request's own ID attribute, if it could be read
    code: str | None = None  # the error code, e.g. FM:AA1, WF:BB2
    address: str | None = None  # the peer's address
    time: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="microseconds"))

    def __post_init__(self) -> None:
        object.__setattr__(self, "interface", _interface(self.interface))
        object.__setattr__(self, "outcome", RequestOutcome(self.outcome))
        for name, pattern in (("operation", _WORD), ("status", _WORD)):
            if not isinstance(getattr(self, name), str) or not pattern.fullmatch(getattr(self, name)):
                raise BadInputError(f"a request entry's {name} is a word of letters, digits and ._:/- (at most 128)")
        if self.code is not None and not _CODE.fullmatch(self.code):
            raise BadInputError("a request entry's code is at most 16 letters, digits and :._-")
        if self.subscriber is not None:
            _name(self.subscriber)
        if self.fingerprint is not None:
            object.__setattr__(self, "fingerprint", parse_fingerprint(self.fingerprint))
        if self.address is not None:
            object.__setattr__(self, "address", str(self.address)[:MAX_ADDRESS])
        if self.client_id is not None:
            object.__setattr__(self, "client_id", str(self.client_id)[:MAX_CLIENT_ID])

    @classmethod
    def of(cls, record: object) -> "RequestEntry":
        """A RequestEntry from a record with the same fields (smki.web's request audit entries: `at` for `time`, and
        its outcome `answered`, which is the trail's success: the answer's status and code say how it went)."""
        if isinstance(record, RequestEntry):
            return record
        try:
            values = {name: getattr(record, name) for name in ("interface", "operation", "status", "outcome")}
        except AttributeError:
            raise BadInputError(f"audit_requests takes request entries, not {type(record).__name__}") from None
        outcome = str(values["outcome"])
        values["outcome"] = RequestOutcome.SUCCESS if outcome == _ANSWERED else outcome
        optional = {name: getattr(record, name, None) for name in ("subscriber", "fingerprint", "client_id", "code", "address")}
        when = getattr(record, "time", None) or getattr(record, "at", None)
        return cls(**values, **optional, **({"time": str(when)} if when else {}))

    def audit_entry(self) -> AuditEntry:
        subject = {"interface": self.interface.value, "operation": self.operation, "subscriber": self.subscriber,
                   "fingerprint": self.fingerprint, "client_id": self.client_id}
        details = {"status": self.status, "code": self.code, "address": self.address}
        return AuditEntry(self.subscriber or "unidentified caller", REQUEST_OPERATION, self.outcome.value, subject, details,
                          time=self.time)


@dataclass(frozen=True)
class _Identity:
    """What the register holds for one certificate, as read, and the certificate's validity (cached per process,
    by fingerprint: a hit needs neither the database nor a parse of the certificate)."""

    subscriber: Subscriber | None  # None: not registered
    match: Match | None
    not_before: datetime
    not_after: datetime


class SubscriberRegister(AuditedDatabase):
    """The register of Authorised Subscribers in one database (an SQLite file or a postgresql:// URL): the
    service's own store, beside its request audit trail.

    Opening does nothing: the database is opened by the first method that needs it (created by `add`,
    `identify` and `audit_requests`; the other changes refuse a database that is not there), and the audit
    key's token by the first audited method. One object per thread; any number may share a database.
    """

    def __init__(self, database: Path | str, *, audit_key: KeyRef | None = None, audit_pin: PinSource | str | None = None,
                 actor: str = "register", cache_seconds: float = IDENTITY_CACHE_SECONDS) -> None:
        super().__init__(database, actor=actor, audit_key=audit_key, audit_pin=audit_pin)
        self.cache_seconds = cache_seconds
        self._identities: dict[str, tuple[float, _Identity]] = {}
        self._lock = threading.Lock()  # the cache only: a handler thread and the event loop may both identify


    # -- the operator's changes, each audited ------------------------------------------------------

    def add(self, name: str, eui64: EUI64 | str, roles: Iterable[RemotePartyRole | str],
            interfaces: Iterable[Interface | str], *, certificate: CertificateInput | None = None,
            fingerprint: str | None = None, match: Match | str = Match.FINGERPRINT) -> RegisteredSubscriber:
        """Register a subscriber and its client certificate: the certificate itself (PEM or DER bytes, a file),
        matched by its fingerprint or by its issuer and key, or only a fingerprint (matched by fingerprint).

        Refused: malformed values (exit 3); a name already registered, removed ones included (their entry
        stays for the trail), or a certificate registered to anyone already (ConflictError, exit 5)."""
        audit = self._audit(create=True)
        with AuditedOperation(audit, self.actor, "subscriber.add") as operation:
            subscriber = _new_subscriber(name, eui64, roles, interfaces)
            operation.subject["subscriber"] = subscriber.name
            client, match_key = _client_certificate(certificate, fingerprint, Match.parse(match))
            operation.subject.update(match=client.match.value, fingerprint=client.fingerprint)
            with transaction(audit.connection):
                _refuse_registered(audit.connection, subscriber.name, match_key)
                now = _now()
                store.insert_subscriber(audit.connection, _row(subscriber, now, now),
                                        store.CertificateRow(match_key, subscriber.name, client.match.value, client.fingerprint,
                                                             client.issuer, now))
                audit.append(operation.success_entry({"eui64": subscriber.eui64.hex, "roles": [r.ou for r in subscriber.roles],
                                                      "interfaces": sorted(i.value for i in subscriber.interfaces)}))
        self._forget()
        log.info("registered subscriber %s (%s)", subscriber.name, client.match.value)
        return RegisteredSubscriber(subscriber, (ClientCertificate(client.match, client.fingerprint, client.issuer, now),), now, now)

    def add_certificate(self, name: str, *, certificate: CertificateInput | None = None, fingerprint: str | None = None,
                        match: Match | str = Match.FINGERPRINT) -> RegisteredSubscriber:
        """Register another client certificate for a subscriber (a renewal registered by fingerprint, a second system's
        certificate), as `add` registers the first. Refused: an unknown name (exit 3), a removed subscriber or a
        certificate registered already (ConflictError, exit 5)."""
        audit = self._audit()
        with AuditedOperation(audit, self.actor, "subscriber.certificate.add") as operation:
            name = _name(name)
            operation.subject["subscriber"] = name
            client, match_key = _client_certificate(certificate, fingerprint, Match.parse(match))
            operation.subject.update(match=client.match.value, fingerprint=client.fingerprint)
            with transaction(audit.connection):
                row = store.find_subscriber(audit.connection, name)
                if row is None:
                    raise BadInputError(f"no subscriber named {name!r} in the register")
                if row.status == SubscriberStatus.REMOVED:
                    raise ConflictError(f"subscriber {name!r} was removed: it takes no new certificate")
                _refuse_registered(audit.connection, None, match_key)
                store.insert_certificate(audit.connection, store.CertificateRow(match_key, name, client.match.value,
                                                                                client.fingerprint, client.issuer, _now()))
                audit.append(operation.success_entry())
        self._forget()
        log.info("registered another client certificate for subscriber %s (%s)", name, client.match.value)
        return self._registered(name)

    def remove_certificate(self, name: str, fingerprint: str) -> RegisteredSubscriber:
        """Stop matching one of a subscriber's client certificates (a compromised or retired one), named by the
        fingerprint `list` shows for it. Refused: an unknown name or a fingerprint not registered to it (exit 3)."""
        audit = self._audit()
        with AuditedOperation(audit, self.actor, "subscriber.certificate.remove") as operation:
            name = _name(name)
            operation.subject["subscriber"] = name
            digest = parse_fingerprint(fingerprint)
            operation.subject["fingerprint"] = digest
            with transaction(audit.connection):
                if store.find_subscriber(audit.connection, name) is None:
                    raise BadInputError(f"no subscriber named {name!r} in the register")
                if not store.delete_certificate(audit.connection, name, digest):
                    raise BadInputError(f"subscriber {name!r} has no client certificate with fingerprint {digest}")
                audit.append(operation.success_entry())
        self._forget()
        log.info("subscriber %s: client certificate %s no longer registered", name, digest)
        return self._registered(name)

    def suspend(self, name: str) -> RegisteredSubscriber:
        """Refuse the subscriber's requests until `resume`: from active only (ConflictError otherwise)."""
        return self._change_status(name, "subscriber.suspend", SubscriberStatus.SUSPENDED, (SubscriberStatus.ACTIVE,))

    def resume(self, name: str) -> RegisteredSubscriber:
        """Serve a suspended subscriber again (a removed one never: ConflictError)."""
        return self._change_status(name, "subscriber.resume", SubscriberStatus.ACTIVE, (SubscriberStatus.SUSPENDED,))

    def remove(self, name: str) -> RegisteredSubscriber:
        """Refuse the subscriber for good; its entry stays, so the trail's entries still name a registered party."""
        return self._change_status(name, "subscriber.remove", SubscriberStatus.REMOVED,
                                   (SubscriberStatus.ACTIVE, SubscriberStatus.SUSPENDED))

    def _change_status(self, name: str, operation_name: str, to: SubscriberStatus,
                       allowed_from: tuple[SubscriberStatus, ...]) -> RegisteredSubscriber:
        audit = self._audit()
        with AuditedOperation(audit, self.actor, operation_name) as operation:
            name = _name(name)
            operation.subject["subscriber"] = name
            with transaction(audit.connection):
                row = store.find_subscriber(audit.connection, name)
                if row is None:
                    raise BadInputError(f"no subscriber named {name!r} in the register")
                if SubscriberStatus(row.status) not in allowed_from:
                    raise ConflictError(f"subscriber {name!r} is {row.status}: it cannot be made {to.value} "
                                        f"(only a subscriber that is {' or '.join(s.value for s in allowed_from)} can)")
                now = _now()
                store.set_status(audit.connection, name, to.value, now)
                audit.append(operation.success_entry({"from": row.status, "to": to.value}))
        self._forget()
        log.info("subscriber %s: %s -> %s", name, row.status, to.value)
        return self._registered(name)

    # -- reading -----------------------------------------------------------------------------------

    def list(self) -> list[RegisteredSubscriber]:
        """Every subscriber, removed ones included, by name, with their client certificates."""
        connection = self._open()
        certificates = store.certificates_of(connection)
        return [_registered(row, certificates.get(row.name, [])) for row in store.list_subscribers(connection)]

    def find(self, name: str) -> RegisteredSubscriber | None:
        """The subscriber named `name`, removed ones included; None when the register has none (a database
        not made yet is made, empty)."""
        connection = self._open(create=True)
        row = store.find_subscriber(connection, _name(name))
        return None if row is None else _registered(row, store.certificates_of(connection, [name]).get(name, []))

    def _registered(self, name: str) -> RegisteredSubscriber:
        connection = self._open()
        row = store.find_subscriber(connection, name)
        return _registered(row, store.certificates_of(connection, [name]).get(name, []))

    # -- the online services' calls ----------------------------------------------------------------

    def identify(self, certificate_der: bytes, interface: Interface | str, now: datetime | None = None) -> Subscriber:
        """The active subscriber the presented client certificate (DER) belongs to, granted `interface`.

        SubscriberRefused (its `reason` a RefusalReason) for a certificate that is unreadable, not yet valid or
        expired (at `now`, default the current time), registered to nobody, or whose subscriber is suspended,
        removed or not granted the interface. The message names the certificate only by its fingerprint."""
        interface = _interface(interface)
        fingerprint = certificate_fingerprint(certificate_der)
        identity = self._cached(fingerprint) or self._read_identity(_presented(certificate_der, fingerprint), fingerprint)
        _refuse_outside_validity(identity, fingerprint, now or datetime.now(timezone.utc))
        subscriber = identity.subscriber
        if subscriber is None:
            raise SubscriberRefused(f"client certificate SHA-256 {fingerprint}: not registered to any subscriber",
                                    RefusalReason.UNKNOWN)
        if subscriber.status is SubscriberStatus.REMOVED:
            raise SubscriberRefused(f"subscriber {subscriber.name!r} was removed from the register", RefusalReason.REMOVED)
        if subscriber.status is SubscriberStatus.SUSPENDED:
            raise SubscriberRefused(f"subscriber {subscriber.name!r} is suspended", RefusalReason.SUSPENDED)
        if not subscriber.may_use(interface):
            raise SubscriberRefused(f"subscriber {subscriber.name!r} is not granted the {interface.value} interface",
                                    RefusalReason.INTERFACE)
        return subscriber

    def _cached(self, fingerprint: str) -> _Identity | None:
        with self._lock:
            cached = self._identities.get(fingerprint)
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1]

    def _read_identity(self, certificate: x509.Certificate, fingerprint: str) -> _Identity:
        keys = (_fingerprint_key(fingerprint), _issuer_and_key(certificate))
        found = store.subscriber_for_keys(self._open(create=True), keys)
        validity = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
        identity = _Identity(None, None, *validity) if found is None else \
            _Identity(_subscriber(found[0]), Match.FINGERPRINT if found[1] == keys[0] else Match.ISSUER_AND_KEY, *validity)
        with self._lock:
            if len(self._identities) >= _CACHE_LIMIT:
                self._identities.clear()
            self._identities[fingerprint] = (time.monotonic() + self.cache_seconds, identity)
        return identity

    def _forget(self) -> None:
        """This object's own changes take effect at once in its own cache."""
        with self._lock:
            self._identities.clear()

    def audit_requests(self, entries: Iterable[RequestEntry]) -> int:
        """Append request entries to the register's audit trail, all in one transaction; return how many.

        With an audit key, the trail signs a checkpoint every `checkpoint_every` entries as always, and its
        head is anchored once that has committed."""
        entries = [RequestEntry.of(entry) for entry in entries]
        if not entries:
            return 0
        audit = self._audit(create=True)
        with transaction(audit.connection):
            audit.append(*(entry.audit_entry() for entry in entries))
        audit.anchor_checkpointed()
        return len(entries)


# ---- values, checked where they enter -----------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadInputError("a subscriber name is 1 to 64 letters, digits and . _ @ -, starting with a letter or digit")
    return name


def _interface(value: Interface | str) -> Interface:
    try:
        return Interface(value)
    except ValueError:
        raise BadInputError(f"unknown interface {value!r} ({', '.join(i.value for i in Interface)})") from None


def _new_subscriber(name: str, eui64: EUI64 | str, roles: Iterable[RemotePartyRole | str],
                    interfaces: Iterable[Interface | str]) -> Subscriber:
    parsed_roles = tuple(dict.fromkeys(r if isinstance(r, RemotePartyRole) else RemotePartyRole.parse(r) for r in roles))
    if not parsed_roles:
        raise BadInputError("a subscriber holds at least one RemotePartyRole")
    parsed_interfaces = frozenset(_interface(i) for i in interfaces)
    if not parsed_interfaces:
        raise BadInputError("a subscriber is granted at least one interface")
    return Subscriber(_name(name), eui64 if isinstance(eui64, EUI64) else EUI64.parse(eui64), parsed_roles, parsed_interfaces)


def _certificate_der(certificate: CertificateInput) -> tuple[x509.Certificate, bytes]:
    if isinstance(certificate, x509.Certificate):
        return certificate, certificate.public_bytes(Encoding.DER)
    if isinstance(certificate, (Path, str)):
        where = str(certificate)
        data = read_input(Path(certificate), MAX_CERTIFICATE_BYTES)
    else:
        where, data = "client certificate", bytes(certificate)
    der = single_object(data, (PemLabel.CERTIFICATE,), where)
    return load_certificate(der, where), der


def _client_certificate(certificate: CertificateInput | None, fingerprint: str | None,
                        match: Match) -> tuple[ClientCertificate, str]:
    """The registration of one client certificate, and its match key."""
    if (certificate is None) == (fingerprint is None):
        raise BadInputError("register a client certificate by the certificate itself or by its fingerprint (one of them)")
    if certificate is None:
        if match is not Match.FINGERPRINT:
            raise BadInputError("matching by issuer and key needs the certificate itself, not its fingerprint")
        digest = parse_fingerprint(fingerprint)
        return ClientCertificate(match, digest, None, ""), _fingerprint_key(digest)
    parsed, der = _certificate_der(certificate)
    digest = certificate_fingerprint(der)
    key = _fingerprint_key(digest) if match is Match.FINGERPRINT else _issuer_and_key(parsed)
    return ClientCertificate(match, digest, parsed.issuer.rfc4514_string(), ""), key


def _refuse_registered(connection, name: str | None, match_key: str) -> None:
    """A new subscriber's name (when given) and a new certificate's match key must both be free."""
    existing = None if name is None else store.find_subscriber(connection, name)
    if existing is not None:
        raise ConflictError(f"a subscriber named {name!r} is already in the register ({existing.status}); "
                            "names are never reused, so that the audit trail names one party")
    holder = store.registered_to(connection, match_key)
    if holder is not None:
        raise ConflictError(f"that client certificate (or its issuer and key) is already registered to subscriber {holder!r}")


def _presented(der: bytes, fingerprint: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except (ValueError, TypeError):
        raise SubscriberRefused(f"client certificate SHA-256 {fingerprint}: not a DER X.509 certificate",
                                RefusalReason.UNREADABLE) from None


def _refuse_outside_validity(identity: _Identity, fingerprint: str, now: datetime) -> None:
    if now < identity.not_before:
        raise SubscriberRefused(f"client certificate SHA-256 {fingerprint}: not valid before {identity.not_before.isoformat()}",
                                RefusalReason.NOT_YET_VALID)
    if now > identity.not_after:
        raise SubscriberRefused(f"client certificate SHA-256 {fingerprint}: expired on {identity.not_after.isoformat()}",
                                RefusalReason.EXPIRED)


# ---- rows <-> values ---------------------------------------------------------------------------

def _row(subscriber: Subscriber, created_at: str, changed_at: str) -> store.SubscriberRow:
    return store.SubscriberRow(subscriber.name, subscriber.eui64.hex, ",".join(r.ou for r in subscriber.roles),
                               ",".join(sorted(i.value for i in subscriber.interfaces)), subscriber.status.value,
                               created_at, changed_at)


def _subscriber(row: store.SubscriberRow) -> Subscriber:
    return Subscriber(row.name, EUI64.parse(row.eui64), tuple(RemotePartyRole.from_ou(ou) for ou in row.roles.split(",")),
                      frozenset(Interface(i) for i in row.interfaces.split(",")), SubscriberStatus(row.status))


def _registered(row: store.SubscriberRow, certificates: list[store.CertificateRow]) -> RegisteredSubscriber:
    return RegisteredSubscriber(_subscriber(row), tuple(ClientCertificate(Match(c.match), c.fingerprint, c.issuer, c.registered_at)
                                                        for c in certificates), row.created_at, row.changed_at)
