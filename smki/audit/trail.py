"""Appending to the audit trail, inside the caller's own transaction.

Each entry holds time, actor, operation, subject (serials, EUI-64s), the policy that applied,
the outcome and details, plus `prev_hash` (the previous entry's hash) and its own
`entry_hash = SHA-256(prev_hash || canonical(entry))`; the first entry chains from
`GENESIS_HASH`. Because `append` uses the caller's connection and never commits, an
operation's state and its entry are committed together or not at all.

Checkpoints sign the chain head (sequence number, head hash, time, context) with the audit
key, held in the HSM: per batch, per ceremony, and every `checkpoint_every` entries.
This layer takes the signer as a duck type (`.public_key`, `.sign(data) -> DER`): it sits
below the HSM layer and never imports it.

The trail lives in the database it protects, so whoever can write that database can cut its
tail (entries and checkpoints together) and roll the state tables back to match: the chain,
the checkpoints and reconciliation all still agree. A `HeadAnchor` (a duck type too; the HSM
layer keeps it in the audit key's token, out of the database's reach) holds the last head a
run checkpointed and committed. Before an authority acts, `check_anchor` refuses a trail that
no longer holds that head. The anchor is written after the checkpoint's commit, so a crash in
between leaves it behind the trail, never ahead of it: the check stays true.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from smki.audit.canonical import canonical, canonical_text
from smki.errors import BadInputError, RefusedError
from smki.store import audit_log
from smki.store.connection import Connection

GENESIS_HASH = hashlib.sha256(b"smki audit trail genesis v1").hexdigest()
OUTCOMES = ("success", "refused", "failed")
# Keys that would put a secret in the trail: refused wherever they appear in subject or details.
_SECRET_KEY = re.compile(r"pin|passphrase|password|secret|share", re.IGNORECASE)


class CheckpointSigner(Protocol):
    @property
    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes) -> bytes: ...


class HeadAnchor(Protocol):
    """Where a trail's last checkpointed head is kept beyond the database's reach (e.g. the HSM)."""

    def load(self) -> tuple[int, str] | None: ...

    def store(self, seq: int, head_hash: str) -> None: ...


def _refuse_secrets(value: object, where: str) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if _SECRET_KEY.search(str(key)):
                raise BadInputError(f"audit {where} key {key!r} looks like a secret; secrets never enter the audit trail")
            _refuse_secrets(inner, where)
    elif isinstance(value, (list, tuple)):
        for inner in value:
            _refuse_secrets(inner, where)


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    operation: str  # e.g. key.generate, certificate.issue, batch.issue, certificate.lodge
    outcome: str = "success"
    subject: dict = field(default_factory=dict)  # serials, EUI-64s, key URIs
    details: dict = field(default_factory=dict)
    policy: dict | None = None  # {"name", "version", "sha256"} of the policy that applied
    time: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise BadInputError(f"audit outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        if not self.actor or not self.operation:
            raise BadInputError("an audit entry needs an actor and an operation")
        _refuse_secrets(self.subject, "subject")
        _refuse_secrets(self.details, "details")
        if not self.time:
            object.__setattr__(self, "time", datetime.now(timezone.utc).isoformat(timespec="microseconds"))

    def body(self, seq: int) -> dict:
        """What the entry hash covers (with the previous hash)."""
        return {"seq": seq, "time": self.time, "actor": self.actor, "operation": self.operation, "subject": self.subject,
                "policy": self.policy, "outcome": self.outcome, "details": self.details}


def entry_hash(prev_hash: str, body: dict) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical(body)).hexdigest()


def _body_text(seq: int, time: str, actor: str, operation: str, subject: str, policy: str, outcome: str, details: str) -> str:
    """canonical(body) assembled from parts already in canonical form: keys in sorted order."""
    return (f'{{"actor":{canonical_text(actor)},"details":{details},"operation":{canonical_text(operation)},'
            f'"outcome":{canonical_text(outcome)},"policy":{policy},"seq":{seq},"subject":{subject},"time":{canonical_text(time)}}}')


def checkpoint_message(seq: int, head_hash: str, time: str, context: str) -> bytes:
    return canonical({"type": "smki-audit-checkpoint/1", "seq": seq, "head_hash": head_hash, "time": time, "context": context})


def key_id_of(public_key: ec.EllipticCurvePublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()[:16]


class AuditTrail:
    """The audit trail in the authority's own database (its tables come from the store's migrations; smki.store.audit_log
    reads and writes them)."""

    def __init__(self, connection: Connection, checkpoint_signer: CheckpointSigner | None = None,
                 checkpoint_every: int = 1000, anchor: HeadAnchor | None = None) -> None:
        if checkpoint_every < 1:
            raise BadInputError("checkpoint_every must be at least 1")
        self.connection, self.signer, self.checkpoint_every = connection, checkpoint_signer, checkpoint_every
        self.anchor = anchor
        self._checkpointed: tuple[int, str] | None = None  # the last head this run signed, to anchor once committed
        self._anchor_broken = False  # a trail that lost its anchored head never moves the anchor again
        # Set while several operations share one checkpoint at their end (operations.audited.one_checkpoint).
        self.checkpoint_deferred = False

    def check_anchor(self) -> None:
        """Refuse (one line, exit 1) when the trail no longer holds the head last anchored (no anchor: nothing to check)."""
        anchored = self.anchor.load() if self.anchor is not None else None
        if anchored is None:
            return
        seq, head_hash = anchored
        recorded = audit_log.entry_hash_at(self.connection, seq)
        if recorded != head_hash:
            self._anchor_broken = True
            what = "no longer holds" if recorded is None else "holds a different"
            raise RefusedError(f"the audit trail {what} entry {seq}, the head its audit key's token anchored: the trail was "
                               "truncated or rewritten (and the state with it); nothing is done from it until it is restored")

    def anchor_checkpointed(self) -> None:
        """Record the last checkpointed head in the anchor: call only once the checkpoint's transaction has committed."""
        if self.anchor is not None and self._checkpointed is not None and not self._anchor_broken:
            self.anchor.store(*self._checkpointed)

    def head(self) -> tuple[int, str]:
        return audit_log.head(self.connection) or (0, GENESIS_HASH)

    def append(self, *entries: AuditEntry) -> int:
        """Append entries in the caller's transaction (the caller commits); return the last sequence number."""
        if not self.connection.in_transaction:
            raise RuntimeError("audit entries are appended inside the transaction of the state they describe")
        seq, previous = self.head()
        first_seq = seq
        rows = []
        policy_object, policy_text = object(), ""  # batches share one policy: encode it once
        for entry in entries:
            seq += 1
            if entry.policy is not policy_object:
                policy_object, policy_text = entry.policy, canonical_text(entry.policy)
            subject, details = canonical_text(entry.subject), canonical_text(entry.details)
            body = _body_text(seq, entry.time, entry.actor, entry.operation, subject, policy_text, entry.outcome, details)
            current = hashlib.sha256(bytes.fromhex(previous) + body.encode("utf-8")).hexdigest()
            rows.append((seq, entry.time, entry.actor, entry.operation, subject,
                         None if entry.policy is None else policy_text, entry.outcome, details, previous, current))
            previous = current
        audit_log.insert_entries(self.connection, rows)
        if self.signer is not None and seq // self.checkpoint_every > first_seq // self.checkpoint_every:
            self.checkpoint(f"every {self.checkpoint_every} entries")
        return seq

    def checkpoint(self, context: str) -> int:
        """Sign the current chain head with the audit key (in the caller's transaction); return its sequence number."""
        if self.signer is None:
            raise BadInputError("no audit key attached: cannot sign a checkpoint")
        seq, head_hash = self.head()
        if seq == 0:
            return 0
        when = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        key_id = key_id_of(self.signer.public_key)
        pem = self.signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        signature = self.signer.sign(checkpoint_message(seq, head_hash, when, context))
        audit_log.record_checkpoint(self.connection, seq, head_hash, when, context, key_id, pem, signature)
        self._checkpointed = (seq, head_hash)
        return seq
