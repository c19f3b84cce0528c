"""`smki librarian`: search the repository and serve the SMKI Repository web service."""

from __future__ import annotations

from pathlib import Path

import click

from smki.authorities.repository_service import RepositoryService, make_server
from smki.cli.common import audit_options, audit_trail, checkpoint, emit, json_option
from smki.authorities.lodging import lodge_certificate
from smki.cli.cert import read_certificate
from smki.errors import BadInputError, SmkiError
from smki.hsm.pins import PinSource
from smki.identifiers import EUI64, KeyUsage, RemotePartyRole
from smki.store import find_certificate, list_certificates, open_database

db_option = click.option("--db", "database", required=True, type=click.Path(dir_okay=False, path_type=Path),
                         help="The repository database (SQLite file).")


@click.group("librarian")
def librarian_group() -> None:
    """The Certificate Librarian: repository search and the SMKI Repository web service."""


@librarian_group.command("lodge")
@db_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--trust-root", is_flag=True, help="Accept self-signed roots among FILES as trust anchors.")
@audit_options
@json_option
def lodge_command(database, files, trust_root, actor, audit_key_uri, pin_source, as_json) -> None:
    """Lodge certificates (PEM or DER) in the repository, issuers first.

    Each must chain by AKI -> SKI to a lodged certificate (or a root given with --trust-root)
    whose key verifies its signature. Stops at the first refusal; what was lodged before it stays.
    """
    connection = open_database(database, create=True)
    audit = audit_trail(connection, audit_key_uri, pin_source)
    lodged = []
    try:
        for path in files:
            try:
                serial = lodge_certificate(connection, read_certificate(path), trust_root=trust_root, audit=audit, actor=actor)
            except SmkiError as exc:
                exc.args = (f"{path}: {exc}",)
                raise
            lodged.append({"file": str(path), "serial": serial})
    finally:
        checkpoint(audit, f"lodge of {len(files)} file(s)")
    emit(as_json, lodged, lambda rows: "\n".join(f"lodged {r['file']}  serial {r['serial']}" for r in rows))


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
@click.option("--api-key-source", required=True, metavar="SOURCE",
              help="Where to read the API key parties must send: env:NAME, fd:N or prompt (never argv).")
@click.option("--published", type=click.Path(file_okay=False, path_type=Path), help="Directory of published CRL/ARL files.")
def serve_command(database, address, port, api_key_source, published) -> None:
    """Serve the SMKI Repository web service (XML search and retrieve, plain downloads).

    Prints the address it listens on, then serves until interrupted.
    """
    open_database(database).close()  # a clear error now rather than on the first request
    api_key = PinSource.parse(api_key_source).read("repository API key")
    server = make_server(RepositoryService(lambda: open_database(database), {api_key}, published), address, port)
    host, bound_port = server.server_address[:2]
    click.echo(f"serving the SMKI Repository on http://{host}:{bound_port}/services/ (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
