"""`smki audit`: verify, show and export an authority's audit trail."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from smki.audit.verify import ChainHead, export_trail, load_export, rows_from_database, verify_trail
from smki.cli.configured import ConfiguredGroup
from smki.cli.common import DATABASE, KEY_URI, SECRET_SOURCE, emit, json_option, key_ref_from_options
from smki.errors import BadInputError, RefusedError
from smki.files import MAX_PUBLIC_KEY_BYTES, read_input, read_text_input, write_new_file
from smki.hsm.config import default_module_path
from smki.profiles.pem import PemLabel, single_object
from smki.store import open_database
from smki.store.audit_log import audit_key_pems
from smki.store.connection import Connection


@click.group("audit", cls=ConfiguredGroup)
def audit_group() -> None:
    """The tamper-evident audit trail: hash-chained entries, checkpoints signed in the HSM."""


def _public_key(pem: bytes, where: str) -> ec.EllipticCurvePublicKey:
    der = single_object(pem, (PemLabel.PUBLIC_KEY,), where)  # exactly one key, nothing around it
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError):
        raise BadInputError(f"{where}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadInputError(f"{where}: not an EC public key")
    return key


def _key_from_file(path: Path) -> ec.EllipticCurvePublicKey:
    return _public_key(read_input(path, MAX_PUBLIC_KEY_BYTES), str(path))


def _stored_key(connection: Connection) -> ec.EllipticCurvePublicKey | None:
    pems = audit_key_pems(connection)
    if not pems:
        return None  # no checkpoint was ever signed: the chain alone is checked
    if len(pems) != 1:
        raise BadInputError(f"the database holds {len(pems)} audit keys: name the one to trust with --public-key")
    return _public_key(pems[0].encode(), "audit key stored in the database")


@audit_group.command("verify")
@click.option("--db", "database", type=DATABASE, help="An authority's database: an SQLite file or a postgresql:// URL (opened read-only).")
@click.option("--export", "export_file", type=click.Path(dir_okay=False, path_type=Path), help="An exported trail.")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path),
              help="The audit public key (PEM) to trust. Pinned: every entry must be covered by a checkpoint it signed. "
                   "Without it, the key stored with the trail is used, and said so.")
@click.option("--expect-head", "expected_heads", multiple=True, metavar="SEQ:HASH",
              help="A head recorded earlier (printed by an earlier verify): the trail must still hold it. Repeatable.")
@click.option("--since-export", "since_exports", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="An earlier export of this trail: the trail must still hold its last entry. Repeatable.")
@click.option("--anchor-key-uri", type=KEY_URI, help="pkcs11: URI of the trail's audit key: the head its token anchors must still be in the "
                                       "trail (needs the token's PIN, from --pin-source).")
@click.option("--pin-source", type=SECRET_SOURCE, default="prompt", show_default=True, metavar="SOURCE",
              help="With --anchor-key-uri: where to read the audit key token's PIN: env:NAME, fd:N or prompt (never argv).")
@json_option
def verify_command(database, export_file, public_key, expected_heads, since_exports, anchor_key_uri, pin_source, as_json) -> None:
    """Check the whole chain and every checkpoint signature; name the first broken entry; print the
    head verified (SEQ:HASH) for the auditor to record and give back later with --expect-head.

    Exit 0 when intact, 1 when broken.
    """
    if (database is None) == (export_file is None):
        raise click.UsageError("give exactly one of --db or --export")
    heads = tuple(ChainHead.parse(text, "--expect-head") for text in expected_heads)
    heads += tuple(ChainHead.of_entries(load_export(path)[0]) for path in since_exports)
    if anchor_key_uri:
        heads += (_anchored_head(anchor_key_uri, pin_source),)
    trusted_from = str(public_key) if public_key else "the key stored with the trail (give --public-key to pin it)"
    if database:
        connection = open_database(database, read_only=True, any_schema=True)
        entries, checkpoints = rows_from_database(connection)
        key = _key_from_file(public_key) if public_key else _stored_key(connection)
    else:
        entries, checkpoints, pem = load_export(export_file)
        key = _key_from_file(public_key) if public_key else _public_key(pem.encode(), f"{export_file} audit_public_key")
    report = verify_trail(entries, checkpoints, key, require_signed_head=public_key is not None, expected_heads=heads)
    data = {**report.as_json(), "public_key_from": trusted_from, "expected_heads": [str(head) for head in heads]}
    emit(as_json, data, lambda d: (
        (f"audit trail intact: {d['entries']} entries, {d['checkpoints']} checkpoints, signed up to entry {d['last_signed_seq']} "
         f"(audit key: {d['public_key_from']}){_unsigned_tail(d)}; head {d['head']}" if d["checkpoints"] else
         f"audit chain intact: {d['entries']} entries, no signed checkpoint yet (attach an audit key with --audit-key-uri); head {d['head']}")
        if d["ok"] else f"AUDIT TRAIL BROKEN at entry {d['first_broken_seq']}: {d['problem']}"))
    if not report.ok:
        raise SystemExit(1)


def _anchored_head(audit_key_uri: str, pin_source) -> ChainHead:
    """The head anchored beside the audit key in its token (what the authority checks before it acts)."""
    from smki.hsm.anchor import TokenHeadAnchor
    from smki.hsm.signer import open_signer

    key = key_ref_from_options(default_module_path(), audit_key_uri, None, None, None)
    open_signer(key, pin_source)  # logs in, and the audit key must be there
    anchored = TokenHeadAnchor.for_key(key).load()
    if anchored is None:
        raise RefusedError(f"token {key.token_label!r} anchors no audit trail head for key {key.key_label!r}")
    return ChainHead(*anchored)


def _unsigned_tail(report: dict) -> str:
    """Said aloud when the stored key was used: entries after the last checkpoint are vouched for by nobody."""
    if report["last_signed_seq"] >= report["entries"]:
        return ""
    return f", entries {report['last_signed_seq'] + 1} to {report['entries']} not yet signed"


@audit_group.command("show")
@click.option("--db", "database", required=True, type=DATABASE, help="An SQLite file or a postgresql:// URL (opened read-only).")
@click.option("--operation", help="Only this operation (e.g. certificate.lodge), or a prefix ending in '.' (certificate.).")
@click.option("--outcome", type=click.Choice(["success", "refused", "failed"]))
@click.option("--since", help="Only entries at or after this ISO 8601 time.")
@click.option("--subject", help="Only entries whose subject mentions this text (a serial, an EUI-64).")
@json_option
def show_command(database, operation, outcome, since, subject, as_json) -> None:
    """Print audit entries, oldest first, filtered."""
    entries, _ = rows_from_database(open_database(database, read_only=True, any_schema=True))
    selected = [e for e in entries
                if (not operation or e["operation"] == operation or (operation.endswith(".") and e["operation"].startswith(operation)))
                and (not outcome or e["outcome"] == outcome) and (not since or e["time"] >= since)
                and (not subject or subject.upper() in e["subject"].upper())]
    for entry in selected:
        for name in ("subject", "details", "policy"):
            entry[name] = json.loads(entry[name]) if entry[name] else None
    emit(as_json, selected, lambda rows: "\n".join(
        f"{e['seq']:>6} {e['time']} {e['actor']:<12} {e['operation']:<22} {e['outcome']:<8} {json.dumps(e['subject'], sort_keys=True)}"
        for e in rows) or "no entries")


@audit_group.command("export")
@click.option("--db", "database", required=True, type=DATABASE, help="An SQLite file or a postgresql:// URL (opened read-only).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The export file (never overwritten).")
@click.option("--public-key", type=click.Path(dir_okay=False, path_type=Path), help="The audit public key to include (default: the stored one).")
@json_option
def export_command(database, out, public_key, as_json) -> None:
    """Write a self-contained trail (entries, checkpoints, public key, encoding rules) to verify elsewhere.

    With --json: the file, its SHA-256, how many entries and checkpoints it holds, and its head
    (SEQ:HASH, as `audit verify` prints it; null for an empty trail).
    """
    connection = open_database(database, read_only=True, any_schema=True)
    if public_key:
        _key_from_file(public_key)  # one P-256 public key, nothing else, before it goes into the export
    key_pem = (read_text_input(public_key, MAX_PUBLIC_KEY_BYTES) if public_key else
               next(iter(audit_key_pems(connection)), None))
    if not key_pem:
        raise RefusedError("the trail has no checkpoint key yet; give --public-key")
    export = export_trail(connection, key_pem)
    write_new_file(out, export)
    document = json.loads(export)
    entries = document["entries"]
    emit(as_json, {"file": str(out), "sha256": hashlib.sha256(export).hexdigest(), "entries": len(entries),
                   "checkpoints": len(document["checkpoints"]), "head": str(ChainHead.of_entries(entries)) if entries else None},
         lambda d: f"wrote {d['file']}")
