"""The SMKI Portal's password accounts and sessions, in the service's own store beside the register.

    with PortalAccounts("service.db", actor="alice") as accounts:
        accounts.add("jo", subscriber="acme-supplier", password=PinSource.parse("env:JO_PASSWORD").read("password"))
        session, token = accounts.login("jo", password, address="192.0.2.1")   # or LoginRefused / AccountLocked
        session = accounts.session(token)                                         # or SessionExpired, None if unknown

An account acts for one Authorised Subscriber of the register: it may use the portal only while that
subscriber is active and granted Interface.PORTAL. Passwords are hashed with argon2id (argon2-cffi); an
account is locked for LOCKOUT after MAX_FAILURES wrong passwords within FAILURE_WINDOW. Sessions are kept
by the SHA-256 of their token (the store holds no bearer secret), carry their CSRF token, and end
SESSION_SECONDS after their last use, or SESSION_MAX_SECONDS after they began. A browser presenting a
client certificate gets a certificate session bound to that certificate's fingerprint, so its forms carry
CSRF tokens too.

Every change of an account, every login and every lockout is an audited operation (smki.operations.audited),
in the same trail as the register's; no entry, log line, message or repr holds a password or a token.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from smki.audit.trail import AuditTrail
from smki.audit.verify import VerificationReport, rows_from_database, verify_trail
from smki.errors import BadInputError, ConflictError, RefusedError
from smki.hsm.config import KeyRef
from smki.hsm.pins import PinSource
from smki.operations.audited import AuditedDatabase, AuditedOperation
from smki.register.model import Interface, Subscriber, SubscriberStatus
from smki.register.register import _subscriber  # the register's one reading of a subscriber row
from smki.store import portal_accounts as store
from smki.store import subscribers as subscriber_store
from smki.store.database import transaction

log = logging.getLogger(__name__)

MAX_FAILURES = 5  # wrong passwords within FAILURE_WINDOW that lock an account
FAILURE_WINDOW = timedelta(hours=1)
LOCKOUT = timedelta(hours=1)
SESSION_SECONDS = 30 * 60  # a session ends this long after its last use
SESSION_MAX_SECONDS = 8 * 60 * 60  # and this long after it began, however used
MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 hashes any length: the bound keeps a request from making it hash megabytes
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{20,128}")
REFUSED_LOGIN = "wrong user name or password"  # the same words for an unknown user and a wrong password


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    LOCKED = "locked"  # by an operator, until unlocked
    REMOVED = "removed"  # for good; the name is never reused (the trail names it)


class SessionKind(enum.StrEnum):
    PASSWORD = "password"
    CERTIFICATE = "certificate"


class LoginRefused(RefusedError):
    """A login refused: wrong user name or password, or an account that may not use the portal."""


class AccountLocked(LoginRefused):
    """A login to a locked account (by an operator, or for an hour after too many wrong passwords)."""


class SessionExpired(RefusedError):
    """A session token the store knew, whose session has ended: the browser must log in again."""


@dataclass(frozen=True)
class Account:
    username: str
    subscriber: str
    status: AccountStatus
    locked_until: str | None
    created_at: str
    changed_at: str

    def summary(self) -> dict[str, Any]:
        return {"username": self.username, "subscriber": self.subscriber, "status": self.status.value,
                "locked_until": self.locked_until, "created_at": self.created_at, "changed_at": self.changed_at}


@dataclass(frozen=True)
class Session:
    """A portal session: who (the subscriber, and the account or client certificate), its CSRF token, when it ends."""

    kind: SessionKind
    subscriber: Subscriber
    username: str | None
    fingerprint: str | None
    csrf_token: str = field(repr=False)
    expires_at: str

    @property
    def who(self) -> str:
        return self.username if self.kind is SessionKind.PASSWORD else f"certificate {self.fingerprint[:16]}"


class PortalAccounts(AuditedDatabase):
    """The portal's accounts and sessions in one database (an SQLite file or a postgresql:// URL): the service's
    store. Opened when first used; one object per thread; any number may share a database."""

    _DUMMY: str | None = None

    def __init__(self, database: Path | str, *, audit_key: KeyRef | None = None, audit_pin: PinSource | str | None = None,
                 actor: str = "portal", session_seconds: int = SESSION_SECONDS,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(database, actor=actor, audit_key=audit_key, audit_pin=audit_pin)
        self.session_seconds = session_seconds
        self._clock = clock or (lambda: datetime.now(timezone.utc))
        self._hasher = None

    def _open(self, *, create: bool = True):
        return super()._open(create=True)  # the service's store: made on first use, as the register makes it

    def _password_hasher(self):
        if self._hasher is None:
            from argon2 import PasswordHasher  # loaded when a password is first hashed or checked
            self._hasher = PasswordHasher()
        return self._hasher

    # -- the operator's changes, each audited ------------------------------------------------------

    def add(self, username: str, *, subscriber: str, password: str) -> Account:
        """A new account acting for `subscriber` (registered, not removed). Refused: a malformed name or a password
        shorter than MIN_PASSWORD (exit 3), a name taken already, removed ones included (ConflictError, exit 5)."""
        audit = self._audit()
        with AuditedOperation(audit, self.actor, "portal.user.add") as operation:
            username = checked_username(username)
            operation.subject.update(username=username, subscriber=str(subscriber)[:64])
            password_hash = self._password_hasher().hash(checked_password(password))
            with transaction(audit.connection):
                found = subscriber_store.find_subscriber(audit.connection, str(subscriber))
                if found is None:
                    raise BadInputError(f"no subscriber named {str(subscriber)[:64]!r} in the register")
                if found.status == SubscriberStatus.REMOVED:
                    raise ConflictError(f"subscriber {found.name!r} was removed: it takes no portal account")
                if store.find_account(audit.connection, username) is not None:
                    raise ConflictError(f"a portal account named {username!r} exists already (names are never reused)")
                now = self._now()
                store.insert_account(audit.connection, store.AccountRow(username, found.name, password_hash,
                                                                        AccountStatus.ACTIVE.value, None, now, now))
                audit.append(operation.success_entry())
        log.info("portal account %s added for subscriber %s", username, found.name)
        return self.find(username)

    def lock(self, username: str) -> Account:
        """Refuse the account's logins until `unlock`, and end its sessions."""
        return self._change(username, "portal.user.lock", AccountStatus.LOCKED, (AccountStatus.ACTIVE, AccountStatus.LOCKED))

    def unlock(self, username: str) -> Account:
        """Let the account log in again: an operator's lock lifted, or a lockout after wrong passwords ended early."""
        return self._change(username, "portal.user.unlock", AccountStatus.ACTIVE, (AccountStatus.ACTIVE, AccountStatus.LOCKED))

    def remove(self, username: str) -> Account:
        """Refuse the account for good and end its sessions; its entry stays, so the trail still names an account."""
        return self._change(username, "portal.user.remove", AccountStatus.REMOVED, (AccountStatus.ACTIVE, AccountStatus.LOCKED))

    def _change(self, username: str, operation_name: str, to: AccountStatus, allowed_from: tuple[AccountStatus, ...]) -> Account:
        audit = self._audit()
        with AuditedOperation(audit, self.actor, operation_name) as operation:
            username = checked_username(username)
            operation.subject["username"] = username
            with transaction(audit.connection):
                row = store.find_account(audit.connection, username)
                if row is None:
                    raise BadInputError(f"no portal account named {username!r}")
                if AccountStatus(row.status) not in allowed_from:
                    raise ConflictError(f"portal account {username!r} is {row.status}: it cannot be made {to.value}")
                store.set_account_status(audit.connection, username, to.value, None, self._now())
                store.clear_failures(audit.connection, username)
                if to is not AccountStatus.ACTIVE:
                    store.delete_sessions_of(audit.connection, username)
                audit.append(operation.success_entry({"from": row.status, "to": to.value}))
        log.info("portal account %s: %s -> %s", username, row.status, to.value)
        return self.find(username)

    # -- reading -----------------------------------------------------------------------------------

    def list(self) -> list[Account]:
        return [_account(row) for row in store.list_accounts(self._open())]

    def find(self, username: str) -> Account | None:
        row = store.find_account(self._open(), checked_username(username))
        return None if row is None else _account(row)

    def audit_overview(self, limit: int = 50) -> tuple[list[dict], VerificationReport]:
        """The service store's audit trail (the register's changes, the requests, the portal's logins): its last
        `limit` entries, newest first, and the whole chain verified (with the audit key's checkpoints, when one is set)."""
        entries, checkpoints = rows_from_database(self._open())
        signer = self._audit().signer
        report = verify_trail(entries, checkpoints, signer.public_key() if signer is not None else None)
        return list(reversed(entries[-limit:])), report

    # -- logging in, and the sessions --------------------------------------------------------------

    def login(self, username: str, password: str, *, address: str = "") -> tuple[Session, str]:
        """A new password session and its token (for the cookie), or LoginRefused / AccountLocked. Each wrong
        password is counted; the MAX_FAILURES-th within FAILURE_WINDOW locks the account for LOCKOUT. Audited."""
        audit = self._audit()
        with AuditedOperation(audit, self.actor, "portal.login", {"kind": SessionKind.PASSWORD.value,
                                                                 "address": str(address)[:64]}) as operation:
            if not isinstance(username, str) or not _USERNAME.fullmatch(username) or not isinstance(password, str) \
                    or not 0 < len(password) <= MAX_PASSWORD:
                raise LoginRefused(REFUSED_LOGIN)
            operation.subject["username"] = username
            now = self._clock()
            row = self._take_attempt(audit, username, now)
            if row is None:
                self._verify(self._dummy_hash(), password)  # the same work as for a real account: no timing tells which names exist
                raise LoginRefused(REFUSED_LOGIN)
            if not self._verify(row.password_hash, password):
                self._lock_if_due(audit, operation, username, now)
            subscriber = self._portal_subscriber(audit.connection, row.subscriber)
            session, token = self._new_session(SessionKind.PASSWORD, subscriber, username=username, fingerprint=None)
            with transaction(audit.connection):
                store.clear_failures(audit.connection, username)
                store.delete_expired_sessions(audit.connection, _text(now))
                store.insert_session(audit.connection, _session_row(session, token, _text(now)))
                audit.append(operation.success_entry(subscriber=subscriber.name))
        log.info("portal login: %s (subscriber %s)", username, subscriber.name)
        return session, token

    def certificate_session(self, subscriber: Subscriber, fingerprint: str) -> tuple[Session, str]:
        """A session for a browser that presented a client certificate the register authorised (the caller
        checks that), bound to that certificate. Audited as a login."""
        audit = self._audit()
        with AuditedOperation(audit, self.actor, "portal.login", {"kind": SessionKind.CERTIFICATE.value,
                                                                 "subscriber": subscriber.name, "fingerprint": fingerprint}) as operation:
            session, token = self._new_session(SessionKind.CERTIFICATE, subscriber, username=None, fingerprint=fingerprint)
            now = _text(self._clock())
            with transaction(audit.connection):
                store.delete_expired_sessions(audit.connection, now)
                store.insert_session(audit.connection, _session_row(session, token, now))
                audit.append(operation.success_entry())
        return session, token

    def session(self, token: str | None) -> Session | None:
        """The live session of `token` (its end moved on: it was used), None for no or an unknown token, SessionExpired
        for one that has ended. A password session whose subscriber may no longer use the portal is ended too."""
        if not token or not _TOKEN.fullmatch(token):
            return None
        connection, digest = self._open(), _digest(token)
        row = store.find_session(connection, digest)
        if row is None:
            return None
        now = self._clock()
        if _parse(row.expires_at) <= now:
            with transaction(connection):
                store.delete_session(connection, digest)
            raise SessionExpired("your session has expired: log in again")
        found = subscriber_store.find_subscriber(connection, row.subscriber)
        subscriber = None if found is None else _subscriber(found)
        if subscriber is None or (row.kind == SessionKind.PASSWORD and not subscriber.may_use(Interface.PORTAL)):
            with transaction(connection):
                store.delete_session(connection, digest)
            raise SessionExpired("your session has ended: the subscriber may no longer use the portal")
        expires = min(now + timedelta(seconds=self.session_seconds), _parse(row.created_at) + timedelta(seconds=SESSION_MAX_SECONDS))
        with transaction(connection):
            store.extend_session(connection, digest, _text(expires))
        return Session(SessionKind(row.kind), subscriber, row.username, row.fingerprint, row.csrf_token, _text(expires))

    def logout(self, token: str | None) -> None:
        if token and _TOKEN.fullmatch(token):
            connection = self._open()
            with transaction(connection):
                store.delete_session(connection, _digest(token))

    # -- the steps of a login ----------------------------------------------------------------------

    def _dummy_hash(self) -> str:
        """A hash of a random password nobody knows, checked against for an unknown user name."""
        if PortalAccounts._DUMMY is None:
            PortalAccounts._DUMMY = self._password_hasher().hash(secrets.token_urlsafe(32))
        return PortalAccounts._DUMMY

    def _verify(self, password_hash: str, password: str) -> bool:
        from argon2.exceptions import InvalidHashError, VerificationError
        try:
            return self._password_hasher().verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def _refuse_locked(self, row: store.AccountRow, now: datetime) -> None:
        if row.status == AccountStatus.LOCKED:
            raise AccountLocked("this account is locked: ask your organisation's SMKI contact to unlock it")
        if row.locked_until is not None and now < _parse(row.locked_until):
            raise AccountLocked(f"this account is locked after {MAX_FAILURES} wrong passwords, until {row.locked_until}")

    def _take_attempt(self, audit: AuditTrail, username: str, now: datetime) -> store.AccountRow | None:
        """The account (None: no such account), its attempt counted as a wrong password before the password is checked,
        in one write transaction: guesses sent in parallel each take one of the MAX_FAILURES, and none is checked once
        they are taken (a right password then clears the count). A locked account is refused without a check."""
        with transaction(audit.connection):
            row = store.find_account(audit.connection, username)
            if row is None or row.status == AccountStatus.REMOVED:
                return None
            self._refuse_locked(row, now)
            if store.failures_since(audit.connection, username, _text(now - FAILURE_WINDOW)) >= MAX_FAILURES:
                raise AccountLocked(f"{MAX_FAILURES} wrong passwords within an hour: this account is locked")
            store.record_failure(audit.connection, username, _text(now))
        return row

    def _lock_if_due(self, audit: AuditTrail, operation: AuditedOperation, username: str, now: datetime) -> None:
        """A wrong password (already counted by _take_attempt): the MAX_FAILURES-th within the window locks the account."""
        with transaction(audit.connection):
            failures = store.failures_since(audit.connection, username, _text(now - FAILURE_WINDOW))
            if failures >= MAX_FAILURES:
                until = _text(now + LOCKOUT)
                store.set_account_status(audit.connection, username, AccountStatus.ACTIVE.value, until, _text(now))
                store.clear_failures(audit.connection, username)
                store.delete_sessions_of(audit.connection, username)
        if failures >= MAX_FAILURES:
            log.warning("portal account %s locked until %s after %d wrong passwords", username, until, failures)
            operation.subject["locked_until"] = until
            raise AccountLocked(f"{MAX_FAILURES} wrong passwords within an hour: this account is locked until {until}")
        raise LoginRefused(REFUSED_LOGIN)

    def _portal_subscriber(self, connection, name: str) -> Subscriber:
        found = subscriber_store.find_subscriber(connection, name)
        subscriber = None if found is None else _subscriber(found)
        if subscriber is None or not subscriber.may_use(Interface.PORTAL):
            raise LoginRefused("this account's subscriber may not use the SMKI Portal (suspended, removed, or not granted it)")
        return subscriber

    def _new_session(self, kind: SessionKind, subscriber: Subscriber, *, username: str | None,
                     fingerprint: str | None) -> tuple[Session, str]:
        token = secrets.token_urlsafe(32)
        expires = _text(self._clock() + timedelta(seconds=self.session_seconds))
        return Session(kind, subscriber, username, fingerprint, secrets.token_urlsafe(32), expires), token

    def _now(self) -> str:
        return _text(self._clock())


# ---- values, checked where they enter -----------------------------------------------------------

def checked_username(username: str) -> str:
    if not isinstance(username, str) or not _USERNAME.fullmatch(username):
        raise BadInputError("a portal user name is 1 to 64 letters, digits and . _ @ -, starting with a letter or digit")
    return username


def checked_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadInputError(f"a portal password is {MIN_PASSWORD} to {MAX_PASSWORD} characters")  # never echoed
    return password


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _text(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _account(row: store.AccountRow) -> Account:
    return Account(row.username, row.subscriber, AccountStatus(row.status), row.locked_until, row.created_at, row.changed_at)


def _session_row(session: Session, token: str, now: str) -> store.SessionRow:
    return store.SessionRow(_digest(token), session.kind.value, session.subscriber.name, session.username, session.fingerprint,
                            session.csrf_token, now, session.expires_at)


