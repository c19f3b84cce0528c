"""`smki tls`: TLS credentials for the online services (`smki serve`)."""

from __future__ import annotations

from pathlib import Path

import click

from smki.cli.common import audit_options, emit, json_option
from smki.cli.subscribers import open_register, register_options
from smki.register.lab_credentials import DEFAULT_ROLES, LAB_ORGANISATION, make_lab_credentials


@click.group("tls")
def tls_group() -> None:
    """TLS credentials for `smki serve`: lab credentials for tests. A real deployment uses its IKI-issued ones."""


@tls_group.command("lab-credentials")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, help="Another name or address for the server certificate (besides localhost, "
              "127.0.0.1 and ::1); repeatable.")
@click.option("--role", "roles", multiple=True, default=[role.camel_name for role in DEFAULT_ROLES], show_default=True,
              help="A RemotePartyRole to make a client certificate for (name or code); repeatable.")
@click.option("--operator/--no-operator", default=True, show_default=True,
              help="Also a client certificate for the Issuing Authority's operator (OU 07, the operator and portal interfaces).")
@click.option("--organisation", default=LAB_ORGANISATION, show_default=True,
              help="The organisation name in the subjects (each client's O is this and its role).")
@click.option("--register", "register_them", is_flag=True,
              help="Also register each client in the subscriber register (--config or --database), by fingerprint.")
@register_options
@audit_options
@json_option
def lab_credentials_command(directory, hosts, roles, operator, organisation, register_them, config_file, database, actor,
                            audit_key_uri, pin_source, as_json) -> None:
    """Make lab TLS credentials in DIRECTORY: a test transport CA, a server certificate and client certificates.

    As the IKI's: RSA 2048 keys, SHA-256 signatures; a client's subject is O = organisation, OU = its
    RemotePartyRole code, CN = its system's name (lab-<role>). The CA is named LAB ONLY and its key is not
    kept. Writes lab-transport-ca.pem (the service's client_ca, and the clients' CA), server.pem and
    server.key.pem, client-<role>.pem and client-<role>.key.pem (keys 0600), and credentials.json (an
    index: files, EUI-64s from the documentation range, fingerprints, interfaces).

    Never overwrites: any of those files present is refused (exit 5) and nothing is written. With
    --register, each client is also registered (audited) under its system's name.
    """
    register = open_register(config_file, database, actor, audit_key_uri, pin_source) if register_them else None
    if register is None and (config_file or database or audit_key_uri):
        raise click.UsageError("--config, --database and --audit-key-uri are for --register; give --register too")
    try:
        credentials = make_lab_credentials(directory, roles=roles, hosts=hosts, operator=operator, organisation=organisation,
                                           register=register)
    finally:
        if register is not None:
            register.close()
    summary = {**credentials.summary(), "registered": register is not None}
    emit(as_json, summary, _text)


def _text(summary: dict) -> str:
    lines = [f"wrote lab TLS credentials in {summary['directory']} (LAB ONLY: not for a real deployment)",
             f"  CA      {summary['ca']}",
             f"  server  {summary['server']['certificate']} for {', '.join(summary['server']['names'])}"]
    lines += [f"  client  {c['certificate']}  {c['name']} (OU {c['ou']}, EUI-64 {c['eui64']})"
              + ("  registered" if summary["registered"] else "") for c in summary["clients"]]
    return "\n".join(lines)
