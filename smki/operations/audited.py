"""An audited operation: the authority's state and audit trail, and the entry a refusal leaves.

Success is recorded by the operation itself, in the same transaction as the state it changes
(`AuditedOperation.succeed`); a refusal or failure is recorded here, once, for every actor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from smki.audit.trail import AuditEntry, AuditTrail
from smki.errors import SmkiError
from smki.hsm.config import KeyRef
from smki.hsm.pins import PinSource
from smki.store.database import transaction

log = logging.getLogger(__name__)

STATE_DATABASE = "smki.db"


def state_database(state: Path | str) -> Path | str:
    """The database of an authority's state: `smki.db` in a state directory, or a postgresql:// URL as it is."""
    from smki.store.postgres import is_database_url

    return state if is_database_url(state) else Path(state) / STATE_DATABASE


def open_state(state: Path | str, *, read_only: bool = False, any_schema: bool = False, create: bool = True):
    """The authority's database, migrated. Read-only opens never write; `create=False` refuses (exit 3) a state
    that does not exist yet, so that a mistyped --state is not made into a new, empty authority."""
    from smki.store import open_database

    if read_only:
        return open_database(state_database(state), read_only=True, any_schema=any_schema)
    return open_database(state_database(state), create=create)



class ActorState:
    """An actor's state database, opened when first needed: for writing by an operation, read-only by a dry
    run (which reads the writable connection instead once this actor has opened one: the same state)."""

    def __init__(self, state: Path | str) -> None:
        self.path = state
        self._writable = None
        self._read_only = None

    def writable(self, *, create: bool = True):
        if self._writable is None:
            self._writable = open_state(self.path, create=create)
        return self._writable

    def readable(self):
        if self._writable is not None:
            return self._writable
        if self._read_only is None:
            self._read_only = open_state(self.path, read_only=True)
        return self._read_only

    def dry_run(self, operation: str, audit_key: KeyRef | None, audit_pin, subject: dict[str, Any] | None = None) -> "DryRunOperation":
        """A dry run of `operation` on the state read-only: with an audit key, the trail's anchored head is
        checked as a real run checks it (nothing is signed); nothing is recorded."""
        log.info("dry run of %s: every check, nothing signed, recorded or written", operation)
        if audit_key is not None:
            open_audit_trail(self.readable(), audit_key, audit_pin)
        return DryRunOperation(self.readable(), operation, subject)

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """Wait in the kernel (an flock beside the SQLite file) for this process's turn to write, before BEGIN IMMEDIATE:
        SQLite's own wait for its write lock sleeps in growing steps (up to 100 ms), so two processes that write
        many short transactions (the service's workers) would each sleep while the other commits. PostgreSQL: no-op."""
        from smki.store.postgres import is_database_url

        if is_database_url(self.path):
            yield
            return
        import fcntl

        with open(Path(self.path) / f"{STATE_DATABASE}.write-turn", "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(turn, fcntl.LOCK_UN)

    def close(self) -> None:
        for connection in (self._writable, self._read_only):
            if connection is not None:
                connection.close()
        self._writable = self._read_only = None

def open_audit_trail(connection, audit_key: KeyRef | None = None, pin: PinSource | str | None = None) -> AuditTrail:
    """The database's audit trail, with the HSM audit key attached when one is named.

    With an audit key, the trail is checked against the head anchored in the key's token before
    anything is done (a trail cut back with its state is refused, exit 1); `checkpoint` moves the
    anchor once the run's checkpoint has committed.
    """
    if audit_key is None:
        return AuditTrail(connection)
    from smki.hsm.anchor import TokenHeadAnchor
    from smki.hsm.signer import open_signer, signer_for

    signer = signer_for(audit_key, pin) if isinstance(pin, str) else open_signer(audit_key, pin or PinSource.parse("prompt"))
    audit = AuditTrail(connection, signer, anchor=TokenHeadAnchor.for_key(audit_key))
    audit.check_anchor()
    return audit


def checkpoint(audit: AuditTrail, context: str, anchor: bool = True) -> None:
    """Sign the chain head at the end of a run (in its own transaction), if an audit key is attached; then
    (unless `anchor` is false) anchor that head in the audit key's token."""
    if audit.signer is not None:
        with transaction(audit.connection):
            audit.checkpoint(context)
        if anchor:
            audit.anchor_checkpointed()  # after the commit: a crash before it leaves the anchor behind, which is safe


@contextmanager
def one_checkpoint(audit: AuditTrail, context: str) -> Iterator[None]:
    """Several operations (the files of one lodging run), one signed checkpoint at their end: one HSM
    signature for the run, not one per file. The anchor moves only when the whole run succeeded."""
    if audit.checkpoint_deferred:  # already inside one: the outer run signs
        yield
        return
    audit.checkpoint_deferred, succeeded = True, False
    try:
        yield
        succeeded = True
    finally:
        audit.checkpoint_deferred = False
        checkpoint(audit, context, anchor=succeeded)


class AuditedDatabase:
    """An actor whose state is one database and its audit trail (the Librarian, the subscriber register, the portal's
    accounts), each opened when first needed; a context manager that closes them."""

    def __init__(self, database: Path | str, *, actor: str, audit_key: KeyRef | None = None,
                 audit_pin: PinSource | str | None = None) -> None:
        from smki.store.postgres import is_database_url

        self.database: Path | str = database if is_database_url(database) else Path(database)
        self.actor, self._audit_key, self._audit_pin = actor, audit_key, PinSource.hidden(audit_pin)
        self._connection = None
        self._trail: AuditTrail | None = None

    def _open(self, *, create: bool = False):
        if self._connection is None:
            from smki.store import open_database

            self._connection = open_database(self.database, create=create)
        return self._connection

    def _audit(self, *, create: bool = False) -> AuditTrail:
        if self._trail is None:
            self._trail = open_audit_trail(self._open(create=create), self._audit_key, self._audit_pin)
        return self._trail

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection, self._trail = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AuditedOperation:
    """One operation of an actor, as a context manager: on the way out, a refusal (SmkiError) or a
    failure (any other exception) is appended to the trail, and the run's checkpoint is signed.

    `subject` is what the entry names (serials, files); the operation fills it in as it learns it.
    """

    def __init__(self, audit: AuditTrail, actor: str, operation: str, subject: dict[str, Any] | None = None) -> None:
        self.audit, self.actor, self.operation = audit, actor, operation
        self.subject: dict[str, Any] = dict(subject or {})

    @property
    def connection(self):
        return self.audit.connection

    def __enter__(self) -> "AuditedOperation":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        succeeded = error is None
        if not succeeded:
            outcome = "refused" if isinstance(error, SmkiError) else "failed"
            reason = str(error) if isinstance(error, SmkiError) else type(error).__name__
            with transaction(self.connection):
                self.audit.append(AuditEntry(self.actor, self.operation, outcome, self.subject, {"reason": reason}))
        # A refused run changed no state, so it leaves the anchor where it is (behind: safe; the next success
        # covers its entry). This also keeps a run refused on a copy of the state from anchoring the copy.
        if not self.audit.checkpoint_deferred:
            checkpoint(self.audit, self.operation, anchor=succeeded)

    def success_entry(self, details: dict | None = None, policy: dict | None = None, **subject: Any) -> AuditEntry:
        """The success entry, to append inside the transaction that changes the state it describes."""
        return AuditEntry(self.actor, self.operation, "success", {**self.subject, **subject}, details or {}, policy=policy)


class DryRunOperation:
    """An operation's dry run: the same checks on the state, read-only, and nothing recorded.

    It has what a check reads from an AuditedOperation (`connection`, `subject`, `operation`) but no
    audit trail: a dry run is not an operation, so neither its success nor its refusal leaves an
    entry, and no checkpoint is signed. Code that would record (`audit` is None) must not be reached.
    """

    audit = None

    def __init__(self, connection, operation: str, subject: dict[str, Any] | None = None) -> None:
        self.connection, self.operation = connection, operation
        self.subject: dict[str, Any] = dict(subject or {})

    def __enter__(self) -> "DryRunOperation":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        return None
