"""An authority's state tables checked against what its audit trail records, before it signs from them.

The tables a CA signs from (issued certificates, revocations, the last cRLNumber) can be edited by
anyone who can write the database, and such edits leave the hash chain intact. So every successful
audit entry that changes them says what it changed, in `details["state"]` (the `StateChange`
below, written once here), and `reconcile_issuer` replays those records for one issuer and
compares them with the tables. A CRL, an ARL or a revocation goes ahead only when they agree.

The trail is trusted here as it stands: `smki audit verify --public-key` (with a head recorded
earlier) is what shows the trail itself is whole.

Cost: one scan of the audit entries whose details name the issuer (a LIKE filter in the
database; other issuers' batches are never decoded), and one index range scan of the issuer's
certificates and revocations. A 50,000-certificate batch is about ten audit entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum

from smki.errors import RefusedError
from smki.store.connection import Connection, Dialect, dialect_of
from smki.store.revocations import last_crl_number

STATE_KEY = "state"  # the key of details that holds a StateChange


class _Part(str, Enum):
    ISSUED = "issued"  # {issuer SKI: [serial hex, ...]}
    REVOKED = "revoked"  # {issuer SKI: [[serial hex, revoked_at ISO, reason], ...]}
    CRL_NUMBER = "crl_number"  # {issuer SKI: the cRLNumber just issued}


@dataclass
class StateChange:
    """What one operation changed in the state tables, as its audit entry records it."""

    issued: dict[str, list[str]] = field(default_factory=dict)
    revoked: dict[str, list[list[str]]] = field(default_factory=dict)
    crl_numbers: dict[str, int] = field(default_factory=dict)

    def issue(self, issuer_key_id: str, *serials: str) -> "StateChange":
        self.issued.setdefault(issuer_key_id, []).extend(serials)
        return self

    def revoke(self, issuer_key_id: str, serial_hex: str, revoked_at: str, reason: str) -> "StateChange":
        self.revoked.setdefault(issuer_key_id, []).append([serial_hex, revoked_at, reason])
        return self

    def crl(self, issuer_key_id: str, number: int) -> "StateChange":
        self.crl_numbers[issuer_key_id] = number
        return self

    def details(self, **others: object) -> dict:
        """An audit entry's details: `others` and this change."""
        parts = {_Part.ISSUED.value: self.issued, _Part.REVOKED.value: self.revoked, _Part.CRL_NUMBER.value: self.crl_numbers}
        return {**others, STATE_KEY: {name: value for name, value in parts.items() if value}}


# Matched as SQLite's LIKE matches (ASCII case ignored) on both engines: the pattern is a parameter.
_NAMING_ISSUER = {dialect: f"SELECT details FROM audit_entries WHERE outcome = 'success' AND details {dialect.like_ignoring_case} ? "
                           "ORDER BY seq" for dialect in Dialect}
_ANY_STATE = {dialect: f"SELECT 1 FROM audit_entries WHERE details {dialect.like_ignoring_case} ? LIMIT 1" for dialect in Dialect}


@dataclass
class _IssuerState:
    issued: set[str] = field(default_factory=set)
    revoked: dict[str, tuple[str, str]] = field(default_factory=dict)  # serial -> (revoked_at, reason)
    status_revoked: set[str] = field(default_factory=set)  # held only: certificates whose status is R (recorded: the revoked)
    crl_number: int = 0


def _recorded(connection: Connection, issuer_key_id: str) -> _IssuerState:
    """The issuer's state as the audit trail's successful entries record it, in order."""
    state = _IssuerState()
    # The issuer's SKI is a key of the state record; the LIKE spares decoding every other entry.
    rows = connection.execute(_NAMING_ISSUER[dialect_of(connection)], (f'%"{issuer_key_id}"%',))
    for (details,) in rows:
        change = json.loads(details).get(STATE_KEY)
        if not isinstance(change, dict):
            continue
        state.issued.update(change.get(_Part.ISSUED.value, {}).get(issuer_key_id, ()))
        for serial, revoked_at, reason in change.get(_Part.REVOKED.value, {}).get(issuer_key_id, ()):
            state.revoked[serial] = (revoked_at, reason)
        number = change.get(_Part.CRL_NUMBER.value, {}).get(issuer_key_id)
        if number is not None:
            state.crl_number = max(state.crl_number, number)
    return state


def _held(connection: Connection, issuer_key_id: str) -> _IssuerState:
    """The issuer's state as the tables hold it (index range scans on the issuer's key)."""
    state = _IssuerState()
    # Serials alone are read from the primary key's index (no row lookups): half the time of reading status with them.
    state.issued = {serial for (serial,) in connection.execute("SELECT serial_hex FROM certificates WHERE issuer_key_id = ?", (issuer_key_id,))}
    state.status_revoked = {serial for (serial,) in connection.execute(
        "SELECT serial_hex FROM certificates WHERE issuer_key_id = ? AND status = 'R'", (issuer_key_id,))}
    state.revoked = {serial: (revoked_at, reason) for serial, revoked_at, reason in connection.execute(
        "SELECT serial_hex, revoked_at, reason FROM revocations WHERE issuer_key_id = ?", (issuer_key_id,))}
    state.crl_number = last_crl_number(connection, issuer_key_id)
    return state


def _differences(recorded: _IssuerState, held: _IssuerState) -> list[str]:
    def some(serials: set[str], what: str) -> list[str]:
        return [f"{len(serials)} {what} (first {min(serials)})"] if serials else []

    altered = {serial for serial, facts in recorded.revoked.items() if held.revoked.get(serial, facts) != facts}
    found = [
        *some(recorded.issued - held.issued, "certificate(s) the audit trail records issuing are missing from the state"),
        *some(held.issued - recorded.issued, "certificate(s) in the state were issued by no audited operation"),
        *some(set(recorded.revoked) - set(held.revoked), "revocation(s) the audit trail records are missing from the state"),
        *some(set(held.revoked) - set(recorded.revoked), "revocation(s) in the state were made by no audited operation"),
        *some(altered, "revocation(s) in the state differ in time or reason from the audit trail"),
        *some(set(recorded.revoked) ^ held.status_revoked, "certificate(s) have a status R that disagrees with the audit trail"),
    ]
    if recorded.crl_number != held.crl_number:
        found.append(f"the last cRLNumber is {held.crl_number} in the state but {recorded.crl_number} in the audit trail")
    return found


def differences(connection: Connection, issuer_key_id: str) -> list[str]:
    """What the issuer's state tables hold that its audit trail does not record, or the other way round."""
    return _differences(_recorded(connection, issuer_key_id), _held(connection, issuer_key_id))


def issuers(connection: Connection) -> list[str]:
    """Every issuer the state tables name (certificates, revocations, cRLNumbers)."""
    return sorted({issuer for (issuer,) in connection.execute(
        "SELECT DISTINCT issuer_key_id FROM certificates UNION SELECT issuer_key_id FROM revocations "
        "UNION SELECT issuer_key_id FROM crl_numbers")})


def records_state_changes(connection: Connection) -> bool:
    """Whether any audit entry records a state change (trails written before smki did have none)."""
    return connection.execute(_ANY_STATE[dialect_of(connection)], (f'%"{STATE_KEY}":{{%',)).fetchone() is not None


def state_as_changes(connection: Connection, issuer_key_id: str, serials_per_change: int = 5000) -> list[StateChange]:
    """The issuer's state tables as they stand, written as state changes (issued serials in chunks, as
    batches record them): what adopting a trail written before smki recorded state changes records."""
    held = _held(connection, issuer_key_id)
    serials = sorted(held.issued)
    changes = [StateChange().issue(issuer_key_id, *serials[start:start + serials_per_change])
               for start in range(0, len(serials), serials_per_change)] or [StateChange()]
    last = changes[-1]
    for serial, (revoked_at, reason) in sorted(held.revoked.items()):
        last.revoke(issuer_key_id, serial, revoked_at, reason)
    if held.crl_number:
        last.crl(issuer_key_id, held.crl_number)
    return changes


def reconcile_issuer(connection: Connection, issuer_key_id: str) -> None:
    """Refuse (one line, exit 1) when the issuer's state tables disagree with its audit trail."""
    found = differences(connection, issuer_key_id)
    if found:
        more = f" (and {len(found) - 1} more kind(s) of difference)" if len(found) > 1 else ""
        raise RefusedError(f"the state of issuer {issuer_key_id} disagrees with its audit trail: {found[0]}{more}; "
                           "nothing is signed from it until it is restored or explained")
