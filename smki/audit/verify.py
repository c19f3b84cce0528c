"""Verifying an audit trail: the whole chain, every checkpoint signature, the first break named.

Works on a live database or on an exported file, with only the audit public key.
What it detects: an altered entry (its hash no longer matches), a deleted, inserted or
reordered entry (sequence numbers and prev_hash links break), a truncated tail after a
checkpoint (the checkpoint names a head beyond the last entry), a replaced or forged
checkpoint signature. With a pinned audit key every entry must be covered by a checkpoint
signed with it: a trail rewritten with its checkpoints and stored key deleted, or an entry
appended after the last checkpoint, fails. What the trail alone cannot show is a tail
removed together with its checkpoints; an auditor detects that by giving a head recorded
earlier (`ChainHead`, from a verification report or an export), which must still be in it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from smki.audit.canonical import CANONICALISATION
from smki.audit.trail import GENESIS_HASH, checkpoint_message, entry_hash, key_id_of
from smki.errors import BadInputError, StoreError
from smki.files import MAX_AUDIT_EXPORT_BYTES, read_input
from smki.store.audit_log import entries_and_checkpoints
from smki.store.connection import Connection

EXPORT_FORMAT = "smki-audit-export/1"


@dataclass(frozen=True)
class ChainHead:
    """An entry's sequence number and hash: the head of the chain up to it, written SEQ:HASH."""

    seq: int
    entry_hash: str

    @classmethod
    def parse(cls, text: str, where: str) -> "ChainHead":
        seq, _, digest = text.strip().partition(":")
        digest = digest.lower()
        if not seq.isdigit() or len(seq) > 18 or len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise BadInputError(f"{where}: a chain head is SEQ:HASH (an entry number and its 64-hex-digit entry hash)")
        return cls(int(seq), digest)

    @classmethod
    def of_entries(cls, entries: list[dict]) -> "ChainHead":
        """The head of these entries as recorded (the genesis hash at entry 0 for none)."""
        return cls(entries[-1]["seq"], entries[-1]["entry_hash"]) if entries else cls(0, GENESIS_HASH)

    def __str__(self) -> str:
        return f"{self.seq}:{self.entry_hash}"


@dataclass(frozen=True)
class VerificationReport:
    entries: int
    checkpoints: int
    last_signed_seq: int
    first_broken_seq: int | None = None
    problem: str | None = None
    head: ChainHead | None = None  # the verified head, for an auditor to record (None when broken)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "checkpoints": self.checkpoints, "last_signed_seq": self.last_signed_seq,
                "first_broken_seq": self.first_broken_seq, "problem": self.problem,
                "head": None if self.head is None else str(self.head)}


def rows_from_database(connection: Connection) -> tuple[list[dict], list[dict]]:
    """The trail's entries and checkpoints as an export holds them (signatures in hex)."""
    try:
        entries, checkpoints = entries_and_checkpoints(connection)
    except StoreError as exc:  # the store's connection maps the driver's errors (smki.store.connection)
        raise BadInputError(f"no audit trail in this database ({exc.detail})") from None
    for checkpoint in checkpoints:
        checkpoint["signature"] = bytes(checkpoint["signature"]).hex()
    return entries, checkpoints


def _body(row: dict) -> dict:
    return {"seq": row["seq"], "time": row["time"], "actor": row["actor"], "operation": row["operation"],
            "subject": json.loads(row["subject"]), "policy": None if row["policy"] is None else json.loads(row["policy"]),
            "outcome": row["outcome"], "details": json.loads(row["details"])}


def verify_trail(entries: list[dict], checkpoints: list[dict], public_key: ec.EllipticCurvePublicKey | None, *,
                 require_signed_head: bool = False, expected_heads: tuple[ChainHead, ...] = ()) -> VerificationReport:
    """Check the chain in stored order, each head an auditor recorded earlier, then every checkpoint;
    report the first broken entry.

    Without a public key only a trail with no checkpoints can be checked (the chain alone).
    `require_signed_head` (a pinned key): every entry must be covered by a checkpoint signed with it.
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
    for recorded in expected_heads:
        if recorded.seq > len(entries):
            return broken(len(entries) + 1, f"the trail ends at entry {len(entries)} but held entry {recorded.seq} when its head "
                                            f"was recorded: the tail was removed")
        if hashes_by_seq.get(recorded.seq, GENESIS_HASH) != recorded.entry_hash:
            return broken(recorded.seq, f"entry {recorded.seq} is not the head recorded earlier ({recorded}): entries up to "
                                        f"{recorded.seq} were rewritten")
    if public_key is None:
        if checkpoints:
            return broken(checkpoints[0]["seq"], "the trail has signed checkpoints but no audit public key was given")
        return VerificationReport(len(entries), 0, 0, head=ChainHead.of_entries(entries))
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
    if require_signed_head and last_signed < len(entries):
        # Whoever can write the database can append entries or rebuild the chain; only the key's signature can vouch.
        return broken(last_signed + 1, f"entries {last_signed + 1} to {len(entries)} are covered by no checkpoint signed "
                                       f"with the pinned audit key (appended or rewritten after the last signed checkpoint)")
    return VerificationReport(len(entries), len(checkpoints), last_signed, head=ChainHead.of_entries(entries))


def export_trail(connection: Connection, public_key_pem: str) -> bytes:
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
    if not isinstance(document.get("audit_public_key"), str):
        raise BadInputError(f"{path}: audit_public_key is missing or not a PEM string")
    return (_export_rows(document, "entries", _ENTRY_FIELDS, path), _export_rows(document, "checkpoints", _CHECKPOINT_FIELDS, path),
            document["audit_public_key"])


# The shape of an export's rows, as export_trail writes them (the database's columns), checked
# before verify_trail reads them: a hand-made or damaged file is bad input, not a crash.
_TEXT = (str,)
_ENTRY_FIELDS = {"seq": (int,), "time": _TEXT, "actor": _TEXT, "operation": _TEXT, "subject": _TEXT, "policy": (str, type(None)),
                 "outcome": _TEXT, "details": _TEXT, "prev_hash": _TEXT, "entry_hash": _TEXT}
_CHECKPOINT_FIELDS = {"seq": (int,), "head_hash": _TEXT, "time": _TEXT, "context": _TEXT, "key_id": _TEXT, "signature": _TEXT}


def _export_rows(document: dict, name: str, fields: dict[str, tuple[type, ...]], path: Path) -> list[dict]:
    rows = document.get(name)
    if not isinstance(rows, list):
        raise BadInputError(f"{path}: {name} is missing or not a list")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadInputError(f"{path}: {name}[{index}] is not an object")
        for field, types in fields.items():
            value = row.get(field)
            if field not in row or not isinstance(value, types) or isinstance(value, bool):
                raise BadInputError(f"{path}: {name}[{index}].{field} is missing or not a {types[0].__name__}")
    return rows
