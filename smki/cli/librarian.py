"""`smki librarian`: lodge certificates, CRLs and ARLs, publish the repository, write bulk files, search, serve."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import click

from smki.librarian.bulk import write_bulk_files
from smki.librarian.crl_lodging import crl_der_from_file, lodge_crl
from smki.librarian.publishing import publish_repository
from smki.librarian.repository_service import RepositoryService, make_server
from smki.files import MAX_CRL_BYTES, read_input
from smki.cli.common import DATABASE, SECRET_SOURCE, audit_options, audit_trail, checkpoint, emit, json_option
from smki.librarian.lodging import AlreadyLodged, lodge_certificate
from smki.profiles.files import read_certificate
from smki.errors import BadInputError, SmkiError
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.store import find_certificate, list_certificates, open_database

db_option = click.option("--db", "database", required=True, type=DATABASE,
                         help="The repository database: an SQLite file, or a postgresql:// URL.")
publish_option = click.option("--publish", "publish_dir", type=click.Path(file_okay=False, path_type=Path),
                              help="Then publish the repository into this directory (as `smki librarian publish --dir`).")


@click.group("librarian")
def librarian_group() -> None:
    """The Certificate Librarian: lodging certificates, CRLs and ARLs, publishing, search, bulk files and the web service."""


@librarian_group.command("lodge")
@db_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trust-root", is_flag=True, help="Accept self-signed roots among FILES as trust anchors.")
@publish_option
@audit_options
@json_option
def lodge_command(database, files, trust_root, publish_dir, actor, audit_key_uri, pin_source, as_json) -> None:
    """Lodge certificates (PEM or DER) in the repository, issuers first.

    Each must chain by AKI -> SKI to a lodged certificate (or a root given with --trust-root)
    whose key verifies its signature. A file already lodged (the same bytes) is reported "already
    lodged" and the others are still lodged: exit 0 when every file is now lodged. Stops at the first
    refusal (5 for another certificate with a lodged issuer and serial); what was lodged before it stays.
    --publish publishes the repository even after a refusal (so repeating a run that died before
    publishing publishes what it lodged). With --publish, --json prints {"lodged": [...], "published": {...}}.
    """
    connection = open_database(database, create=True)
    audit = audit_trail(connection, audit_key_uri, pin_source)

    def lodge_one(path: Path) -> dict:
        serial = lodge_certificate(connection, read_certificate(path), trust_root=trust_root, audit=audit, actor=actor)
        return {"file": str(path), "serial": serial}

    lodged, published = _lodge_files(connection, audit, actor, files, lodge_one, publish_dir, "lodge")
    if publish_dir is None:
        emit(as_json, lodged, _lodged_text)
    else:
        emit(as_json, {"lodged": lodged, "published": published},
             lambda d: "\n".join(filter(None, [_lodged_text(d["lodged"]), _published_text(d["published"])])))


def _lodged_text(rows: list[dict]) -> str:
    return "\n".join(f"{_lodged_verb(r)} {r['file']}  serial {r['serial']}" for r in rows)


def _lodged_verb(row: dict) -> str:
    return "already lodged" if row["already_lodged"] else "lodged"


def _lodge_files(connection, audit, actor, files, lodge_one, publish_dir, context) -> tuple[list[dict], dict | None]:
    """Lodge FILES in order, stopping at the first refusal; with publish_dir, then publish the repository
    whatever was lodged, so the published directory matches the repository after every run.

    A file whose very bytes are already lodged is reported ("already_lodged": true, its audit entry a
    refusal naming it) and the others are still lodged: so repeating a run that stopped part-way, or
    died after its commit and before publishing, completes it, and exits 0 when every file is now
    lodged. A different certificate with a lodged issuer and serial, or a different list whose
    cRLNumber is not above the last, stays a refusal. End with the audit checkpoint."""
    lodged, refusal, published = [], None, None
    try:
        try:
            for path in files:
                try:
                    lodged.append({**lodge_one(path), "already_lodged": False})
                except AlreadyLodged as exc:
                    lodged.append({"file": str(path), **exc.summary, "already_lodged": True})
                except SmkiError as exc:
                    if not str(exc).startswith(f"{path}:"):  # read errors already name the file
                        exc.args = (f"{path}: {exc}",)
                    raise
        except SmkiError as exc:
            refusal = exc
        if publish_dir is not None:
            published = publish_repository(connection, publish_dir, audit=audit, actor=actor).summary()
    finally:
        checkpoint(audit, f"{context} of {len(files)} file(s)")
    if refusal is not None:
        if published is not None:
            refusal.args = (f"{refusal}; the repository was published to {published['directory']} all the same",)
        raise refusal
    return lodged, published


def _published_text(published: dict | None) -> str:
    if published is None:
        return ""
    return (f"published {published['directory']}: {published['certificates']} certificate(s), "
            f"{len(published['crls'])} CRL/ARL(s), {published['files_written']} file(s) written")


@librarian_group.command("lodge-crl")
@db_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@publish_option
@audit_options
@json_option
def lodge_crl_command(database, files, publish_dir, actor, audit_key_uri, pin_source, as_json) -> None:
    """Lodge CRLs and ARLs (PEM or DER) in the repository, each checked first.

    The issuer is the lodged CA certificate whose SKI is the CRL's AKI, and its key must verify
    the signature; the CRL must lint clean; its cRLNumber must exceed the last lodged for that
    issuer; its nextUpdate must be in the future. A list from a root is an ARL. Lodged
    certificates it names get repository status R. A file already lodged (the same bytes) is
    reported "already lodged" and the others are still lodged: exit 0 when every file is now lodged.
    Stops at the first refusal (exit 1, as for another list whose cRLNumber is not above the last;
    3 for a file that is no CRL); what was lodged before it stays. --publish
    publishes the repository even after a refusal (so repeating a run that died before publishing
    publishes what it lodged).
    """
    connection = open_database(database)
    audit = audit_trail(connection, audit_key_uri, pin_source)

    def lodge_one(path: Path) -> dict:
        return {"file": str(path), **lodge_crl(connection, crl_der_from_file(read_input(path, MAX_CRL_BYTES)), audit=audit, actor=actor).summary()}

    lodged, published = _lodge_files(connection, audit, actor, files, lodge_one, publish_dir, "CRL lodge")
    emit(as_json, {"lodged": lodged, "published": published}, lambda d: "\n".join(filter(None, [
        *(f"{_lodged_verb(r)} {r['file']}  {r['kind'].upper()} number {r['crl_number']} from issuer {r['issuer_key_id']}, next update "
          f"{r['next_update']}, {len(r['newly_revoked'])} certificate(s) now revoked" for r in d["lodged"]),
        _published_text(d["published"])])))


@librarian_group.command("publish")
@db_option
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The published directory (created if missing).")
@audit_options
@json_option
def publish_command(database, directory, actor, audit_key_uri, pin_source, as_json) -> None:
    """Publish the repository as static files: certificates/<ISSUER-SKI>/<SERIAL>.cer, crl/<ISSUER-SKI>.crl
    (each issuer's highest lodged cRLNumber) and index.json, each file replaced atomically, the index last."""
    connection = open_database(database)
    audit = audit_trail(connection, audit_key_uri, pin_source)
    try:
        published = publish_repository(connection, directory, audit=audit, actor=actor).summary()
    finally:
        checkpoint(audit, "publish")
    emit(as_json, published, _published_text)


@librarian_group.command("bulk")
@db_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for smki-full-<DATE>.jsonl.gz and smki-delta-<DATE>.jsonl.gz (never overwritten).")
@click.option("--since", help="Start of the delta: ISO 8601 date or time, UTC unless an offset is given. Default: 24 hours ago.")
@json_option
def bulk_command(database, out_dir, since, as_json) -> None:
    """Write the bulk files: a full file (every certificate) and a delta file (lodged, or status changed, since --since).

    gzip-compressed JSON Lines, one certificate a line (format smki-bulk/1, described in the README).
    """
    connection = open_database(database)
    files = [f.summary() for f in write_bulk_files(connection, out_dir, since=_since(since) if since else None)]
    emit(as_json, files, lambda rows: "\n".join(f"wrote {r['file']}: {r['kind']}, {r['certificates']} certificate(s), sha256 {r['sha256']}" for r in rows))


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(f"--since: {text!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@librarian_group.command("find")
@db_option
@click.option("--eui64", help="Organisation EUI-64 or device ID (hwSerialNum).")
@click.option("--serial", help="Certificate serial number (hex).")
@click.option("--ski", help="Subject key identifier (hex).")
@click.option("--role", help="RemotePartyRole (name or code).")
@click.option("--usage", help="DS or KA.")
@click.option("--status", type=click.Choice(["P", "I", "N", "E", "R"]), help="Repository status.")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True)
@json_option
def find_command(database, eui64, serial, ski, role, usage, status, limit, as_json) -> None:
    """Find certificates by EUI-64, serial, subject key identifier, role, usage and status.

    Exit 0 with matches, 1 when nothing matches.
    """
    connection = open_database(database)
    if serial:
        records = find_certificate(connection, serial)
    else:
        records = list_certificates(
            connection, entity_id=EUI64.parse(eui64).hex if eui64 else None,
            subject_key_id=_hex(ski, "--ski") if ski else None, role=RemotePartyRole.parse(role).ou if role else None,
            key_usage=KeyUsage.parse(usage).value if usage else None, status=status, limit=limit)
    rows = [record.summary() for record in records]
    emit(as_json, rows, lambda rs: "\n".join(
        f"{r['serial_hex']}  {r['certificate_type']:<12} {r['entity_id'] or '-':<16} role {r['role'] or '-':<2} {r['key_usage'] or '-'} status {r['status']}"
        for r in rs) or "no certificate matches")
    if not records:
        raise SystemExit(1)


def _hex(text: str, option: str) -> str:
    cleaned = text.replace(":", "").upper()
    try:
        bytes.fromhex(cleaned)
    except ValueError:
        raise BadInputError(f"{option}: {text!r} is not hexadecimal") from None
    return cleaned


@librarian_group.command("serve")
@db_option
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0 picks a free one).")
@click.option("--api-key-source", required=True, type=SECRET_SOURCE, metavar="SOURCE",
              help="Where to read the API key parties must send: env:NAME, fd:N or prompt (never argv).")
@click.option("--published", type=click.Path(file_okay=False, path_type=Path),
              help="The published directory (`smki librarian publish --dir`): serves crl/<NAME>.crl and index.json.")
def serve_command(database, address, port, api_key_source, published) -> None:
    """Serve the SMKI Repository web service (XML search and retrieve, plain downloads).

    Prints the address it listens on, then serves until interrupted.
    """
    open_database(database).close()  # a clear error now rather than on the first request
    api_key = api_key_source.read("repository API key")
    server = make_server(RepositoryService(lambda: open_database(database), {api_key}, published), address, port)
    host, bound_port = server.server_address[:2]
    click.echo(f"serving the SMKI Repository on http://{host}:{bound_port}/services/ (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
