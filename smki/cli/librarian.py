"""`smki librarian`: lodge certificates, CRLs and ARLs, publish the repository, write bulk files, search, serve.

Each command reads its options, calls one method of smki.librarian.Librarian, and prints the result.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import click

from smki.cli.configured import ConfiguredGroup
from smki.cli.common import DATABASE, SECRET_SOURCE, audit_key_ref, audit_options, emit, json_option
from smki.librarian import Librarian

db_option = click.option("--db", "database", required=True, type=DATABASE,
                         help="The repository database: an SQLite file, or a postgresql:// URL.")
publish_option = click.option("--publish", "publish_dir", type=click.Path(file_okay=False, path_type=Path),
                              help="Then publish the repository into this directory (as `smki librarian publish --dir`).")


@click.group("librarian", cls=ConfiguredGroup)
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
    librarian = Librarian(database, actor=actor, audit_key=audit_key_ref(audit_key_uri), audit_pin=pin_source)
    lodgements, publication = librarian.lodge_many(files, trust_root=trust_root, publish_to=publish_dir)
    lodged, published = [row.summary() for row in lodgements], _summary(publication)
    if publish_dir is None:
        emit(as_json, lodged, _lodged_text)
    else:
        emit(as_json, {"lodged": lodged, "published": published},
             lambda d: "\n".join(filter(None, [_lodged_text(d["lodged"]), _published_text(d["published"])])))


def _lodged_text(rows: list[dict]) -> str:
    return "\n".join(f"{_lodged_verb(r)} {r['file']}  serial {r['serial']}" for r in rows)


def _lodged_verb(row: dict) -> str:
    return "already lodged" if row["already_lodged"] else "lodged"


def _summary(publication) -> dict | None:
    return None if publication is None else publication.summary()


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
    librarian = Librarian(database, actor=actor, audit_key=audit_key_ref(audit_key_uri), audit_pin=pin_source)
    lodgements, publication = librarian.lodge_crls(files, publish_to=publish_dir)
    lodged, published = [row.summary() for row in lodgements], _summary(publication)
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
    librarian = Librarian(database, actor=actor, audit_key=audit_key_ref(audit_key_uri), audit_pin=pin_source)
    published = librarian.publish(directory).summary()
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
    files = [f.summary() for f in Librarian(database).write_bulk_files(out_dir, since=since or None)]
    emit(as_json, files, lambda rows: "\n".join(f"wrote {r['file']}: {r['kind']}, {r['certificates']} certificate(s), sha256 {r['sha256']}" for r in rows))


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
    records = Librarian(database).find(eui64=eui64 or None, serial=serial or None, ski=ski or None, role=role or None,
                                       usage=usage or None, status=status, limit=limit)
    rows = [record.summary() for record in records]
    emit(as_json, rows, lambda rs: "\n".join(
        f"{r['serial_hex']}  {r['certificate_type']:<12} {r['entity_id'] or '-':<16} role {r['role'] or '-':<2} {r['key_usage'] or '-'} status {r['status']}"
        for r in rs) or "no certificate matches")
    if not records:
        raise SystemExit(1)


@librarian_group.command("serve")
@db_option
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0 picks a free one).")
@click.option("--api-key-source", required=True, type=SECRET_SOURCE, metavar="SOURCE",
              help="Where to read the API key parties must send: env:NAME, fd:N or prompt (never argv).")
@click.option("--published", type=click.Path(file_okay=False, path_type=Path),
              help="The published directory (`smki librarian publish --dir`): serves crl/<NAME>.crl and index.json.")
@json_option
def serve_command(database, address, port, api_key_source, published, as_json) -> None:
    """Serve the SMKI Repository web service (XML search and retrieve, plain downloads).

    A thin alias of `smki serve` hosting the repository only, in this one process, over plain HTTP:
    the same service (aiohttp), the same answers. The API key is taken from the X-API-Key header or
    the apikey query parameter; CRL and ARL downloads need none.

    Prints the address it listens on, then serves until interrupted (Ctrl-C or SIGTERM stops it: exit 0,
    its normal end). With --json, one line on stdout once it listens: {"url": ...} (useful with --port 0).
    """
    from smki.web.server import serve_repository

    server = serve_repository(Librarian(database).web_application(api_key=api_key_source, published=published), address, port)
    if as_json:
        click.echo(json.dumps({"url": server.url}))
    click.echo(f"serving the SMKI Repository on {server.url}/services/ (Ctrl-C to stop)", err=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM ends it as Ctrl-C does: requests in flight answered
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.shutdown()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
