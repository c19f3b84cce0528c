"""Verifying an audit trail: the whole chain, every checkpoint signature, the first break named.

Works on a live database or on an exported file, with only the audit public key.
What it detects: an altered entry (its hash no longer matches), a deleted, inserted or
reordered entry (sequence numbers and prev_hash links break), a truncated tail after a
checkpoint (the checkpoint names a head beyond the last entry), a replaced or forged
checkpoint signature. Entries appended after the last checkpoint are covered by the
chain but not yet by a signature: checkpoint at the end of every operation.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smki.audit.canonical import CANONICALISATION
from smki.audit.trail import GENESIS_HASH, checkpoint_message, entry_hash, key_id_of
from smki.errors import BadInputError
from smki.files import MAX_AUDIT_EXPORT_BYTES, read_input

EXPORT_FORMAT = "smki-audit-export/1"


@dataclass(frozen=True)
class VerificationReport:
    entries: int
    checkpoints: int
    last_signed_seq: int
    first_broken_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "checkpoints": self.checkpoints, "last_signed_seq": self.last_signed_seq,
                "first_broken_seq": self.first_broken_seq, "problem": self.problem}


def rows_from_database(connection: sqlite3.Connection) -> tuple[list[dict], list[dict]]:
    try:
        # seq is the INTEGER PRIMARY KEY, i.e. SQLite's rowid: stored order, on PostgreSQL too.
        entries = [dict(row) for row in connection.execute("SELECT * FROM audit_entries ORDER BY seq")]
        checkpoints = [dict(row) for row in connection.execute("SELECT * FROM audit_checkpoints ORDER BY seq")]
    except sqlite3.DatabaseError as exc:
        raise BadInputError(f"no audit trail in this database ({exc})") from None
    for checkpoint in checkpoints:
        checkpoint["signature"] = bytes(checkpoint["signature"]).hex()
    return entries, checkpoints


def _body(row: dict) -> dict:
    return {"seq": row["seq"], "time": row["time"], "actor": row["actor"], "operation": row["operation"],
            "subject": json.loads(row["subject"]), "policy": None if row["policy"] is None else json.loads(row["policy"]),
            "outcome": row["outcome"], "details": json.loads(row["details"])}


def verify_trail(entries: list[dict], checkpoints: list[dict], public_key: ec.EllipticCurvePublicKey | None) -> VerificationReport:
    """Check the chain in stored order, then every checkpoint; report the first broken entry.

    Without a public key only a trail with no checkpoints can be checked (the chain alone).
    """
    hashes_by_seq: dict[int, str] = {}
    previous, expected_seq = GENESIS_HASH, 1

    def broken(seq: int | None, problem: str) -> VerificationReport:
        return VerificationReport(len(entries), len(checkpoints), 0, seq, problem)

    for row in entries:
        seq = row["seq"]
        if seq != expected_seq:
            return broken(expected_seq, f"entry {expected_seq} expected, found entry {seq} (deleted, inserted or reordered entries)")
        if row["prev_hash"] != previous:
            return broken(seq, f"entry {seq} does not chain to entry {seq - 1} (prev_hash differs)")
        try:
            recomputed = entry_hash(previous, _body(row))
        except (ValueError, TypeError):
            return broken(seq, f"entry {seq} is malformed")
        if recomputed != row["entry_hash"]:
            return broken(seq, f"entry {seq} was altered (its hash does not match its contents)")
        hashes_by_seq[seq] = previous = recomputed
        expected_seq += 1
    if public_key is None:
        if checkpoints:
            return broken(checkpoints[0]["seq"], "the trail has signed checkpoints but no audit public key was given")
        return VerificationReport(len(entries), 0, 0)
    key_id = key_id_of(public_key)
    last_signed = 0
    for checkpoint in checkpoints:
        seq = checkpoint["seq"]
        if checkpoint["key_id"] != key_id:
            return broken(seq, f"checkpoint at entry {seq} was signed by audit key {checkpoint['key_id']}, not {key_id}")
        message = checkpoint_message(seq, checkpoint["head_hash"], checkpoint["time"], checkpoint["context"])
        try:
            public_key.verify(bytes.fromhex(checkpoint["signature"]), message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return broken(seq, f"checkpoint at entry {seq}: signature does not verify under the audit key")
        if seq not in hashes_by_seq:
            return broken(len(entries) + 1, f"checkpoint at entry {seq} names entries that are missing: the trail was truncated after entry {len(entries)}")
        if hashes_by_seq[seq] != checkpoint["head_hash"]:
            return broken(seq, f"checkpoint at entry {seq} signed another chain head: entries up to {seq} were rewritten")
        last_signed = max(last_signed, seq)
    return VerificationReport(len(entries), len(checkpoints), last_signed)


def export_trail(connection: sqlite3.Connection, public_key_pem: str) -> bytes:
    entries, checkpoints = rows_from_database(connection)
    document = {"format": EXPORT_FORMAT, "canonicalisation": CANONICALISATION, "genesis_hash": GENESIS_HASH,
                "entry_hash": "SHA-256(prev_hash bytes || canonical({seq,time,actor,operation,subject,policy,outcome,details}))",
                "checkpoint_message": "canonical({type:'smki-audit-checkpoint/1',seq,head_hash,time,context}), ECDSA P-256 SHA-256",
                "audit_public_key": public_key_pem, "entries": entries, "checkpoints": checkpoints}
    return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def load_export(path: Path) -> tuple[list[dict], list[dict], str]:
    data = read_input(Path(path), MAX_AUDIT_EXPORT_BYTES)
    try:
        document = json.loads(data)
    except ValueError:
        raise BadInputError(f"{path}: not a JSON audit export") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise BadInputError(f"{path}: not an {EXPORT_FORMAT} file")
    return document["entries"], document["checkpoints"], document["audit_public_key"]
