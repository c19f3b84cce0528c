"""`smki subscribers`: the register of Authorised Subscribers the online services (`smki serve`) identify callers by.

Each command reads its options, calls one method of smki.register.SubscriberRegister, and prints the result.
"""

from __future__ import annotations

from pathlib import Path

import click

from smki.cli.common import DATABASE, audit_key_ref, audit_options, emit, json_option
from smki.config import ConfigError
from smki.register import Interface, Match, SubscriberRegister

ALL_INTERFACES = "all"


def service_database(config_file: Path) -> Path | str:
    """The `database:` setting of a service configuration file (kind: service), read as `smki serve` reads it."""
    from smki.web.settings import load_service_settings

    settings = load_service_settings(config_file)
    if settings.database is None:
        raise ConfigError(f"{config_file}: database: give the service's database (an SQLite file or a postgresql:// URL)")
    return settings.database


def register_options(func):
    """--config (a service configuration file, whose `database:` is the register) or --database."""
    func = click.option("--database", type=DATABASE, help="The register's database: an SQLite file or a postgresql:// URL "
                        "(overrides the configuration file's).")(func)
    return click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                        help="The service's configuration file (`smki serve --config FILE`): its `database:` holds the register.")(func)


def open_register(config_file: Path | None, database: Path | str | None, actor: str = "register",
                  audit_key_uri: str | None = None, pin_source=None) -> SubscriberRegister:
    if database is None and config_file is None:
        raise click.UsageError("name the register with --config FILE (a service configuration) or --database PATH|URL")
    return SubscriberRegister(database if database is not None else service_database(config_file), actor=actor,
                              audit_key=audit_key_ref(audit_key_uri), audit_pin=pin_source)


@click.group("subscribers")
def subscribers_group() -> None:
    """The register of Authorised Subscribers: which client certificate belongs to which party, its EUI-64,
    its RemotePartyRole(s) and the online interfaces it may use.

    `smki serve` identifies every caller of a CSR interface by its TLS client certificate through this
    register: an unknown, expired, suspended or removed certificate, or one not granted the interface, is
    refused (HTTP 403). A change takes effect in every running worker within 2 seconds. Every change
    is audited in the register's own trail (`smki audit verify --db ...`), beside the requests' entries.

    Exit codes: 0 done, 1 refused, 2 usage, 3 bad input (an unknown name, a malformed value),
    4 audit key, 5 contradicts the register (a name or certificate already registered, a status
    change that does not apply).
    """


@subscribers_group.command("add")
@register_options
@click.option("--name", required=True, help="The subscriber's name in the register (1-64 of A-Z a-z 0-9 . _ @ -): "
              "one per authorised system, e.g. acme-supplier-adhoc. Never reused, even after removal.")
@click.option("--eui64", required=True, help="The party's EUI-64 (16 hex digits, separators allowed).")
@click.option("--role", "roles", multiple=True, required=True,
              help="A RemotePartyRole the party acts for (supplier, networkOperator, other, ... or its code); repeatable.")
@click.option("--interface", "interfaces", multiple=True, required=True,
              type=click.Choice([*(i.value for i in Interface), ALL_INTERFACES]),
              help="An interface it may use; repeatable, or `all`.")
@click.option("--certificate", type=click.Path(dir_okay=False, path_type=Path),
              help="Its TLS client certificate (PEM or DER).")
@click.option("--fingerprint", help="Instead of --certificate: the certificate's SHA-256 fingerprint (64 hex digits, colons allowed).")
@click.option("--match", type=click.Choice([m.value for m in Match]), default=Match.FINGERPRINT.value, show_default=True,
              help="fingerprint: exactly this certificate; issuer-and-key: any certificate its issuer gives for its key, "
                   "so a renewal for the same key still matches (needs --certificate).")
@audit_options
@json_option
def add_command(config_file, database, name, eui64, roles, interfaces, certificate, fingerprint, match, actor,
                audit_key_uri, pin_source, as_json) -> None:
    """Register a subscriber and its client certificate (audited)."""
    granted = list(Interface) if ALL_INTERFACES in interfaces else list(interfaces)
    with open_register(config_file, database, actor, audit_key_uri, pin_source) as register:
        registered = register.add(name, eui64, roles, granted, certificate=certificate, fingerprint=fingerprint, match=match)
    emit(as_json, registered.summary(), lambda s: f"registered {_line(s)}")


@subscribers_group.command("add-certificate")
@register_options
@click.argument("name")
@click.option("--certificate", type=click.Path(dir_okay=False, path_type=Path), help="The client certificate (PEM or DER).")
@click.option("--fingerprint", help="Instead of --certificate: its SHA-256 fingerprint (64 hex digits, colons allowed).")
@click.option("--match", type=click.Choice([m.value for m in Match]), default=Match.FINGERPRINT.value, show_default=True,
              help="As for `add`.")
@audit_options
@json_option
def add_certificate_command(config_file, database, name, certificate, fingerprint, match, actor, audit_key_uri, pin_source,
                            as_json) -> None:
    """Register another client certificate for subscriber NAME (a renewal registered by fingerprint; audited).
    Its earlier certificates stay registered: suspend or remove the subscriber to refuse them."""
    with open_register(config_file, database, actor, audit_key_uri, pin_source) as register:
        registered = register.add_certificate(name, certificate=certificate, fingerprint=fingerprint, match=match)
    emit(as_json, registered.summary(), lambda s: f"registered another certificate: {_line(s)}")


@subscribers_group.command("remove-certificate")
@register_options
@click.argument("name")
@click.option("--fingerprint", required=True, help="The certificate's SHA-256 fingerprint, as `list` shows it.")
@audit_options
@json_option
def remove_certificate_command(config_file, database, name, fingerprint, actor, audit_key_uri, pin_source, as_json) -> None:
    """Stop accepting one client certificate of subscriber NAME (compromised, retired; audited). Its other
    certificates still match; refused within 2 seconds in every running worker."""
    with open_register(config_file, database, actor, audit_key_uri, pin_source) as register:
        registered = register.remove_certificate(name, fingerprint)
    emit(as_json, registered.summary(), lambda s: f"certificate no longer registered: {_line(s)}")


@subscribers_group.command("list")
@register_options
@json_option
def list_command(config_file, database, as_json) -> None:
    """List every subscriber, removed ones included, with its client certificates. Exit 0, even when empty."""
    with open_register(config_file, database) as register:
        rows = [entry.summary() for entry in register.list()]
    emit(as_json, rows, lambda rs: "\n".join(_line(r) for r in rs) or "no subscribers registered")


def _line(summary: dict) -> str:
    certificates = ", ".join(f"{c['match']} {c['fingerprint'][:16]}..." for c in summary["certificates"])
    return (f"{summary['name']:<24} {summary['status']:<9} EUI-64 {summary['eui64']}  roles {','.join(summary['roles'])}  "
            f"interfaces {','.join(summary['interfaces'])}  certificate {certificates}")


def _status_command(verb: str, method: str, help_text: str):
    @subscribers_group.command(verb, help=help_text)
    @register_options
    @click.argument("name")
    @audit_options
    @json_option
    def command(config_file, database, name, actor, audit_key_uri, pin_source, as_json) -> None:
        with open_register(config_file, database, actor, audit_key_uri, pin_source) as register:
            changed = getattr(register, method)(name)
        emit(as_json, changed.summary(), lambda s: f"{s['name']}: now {s['status']}")
    return command


suspend_command = _status_command("suspend", "suspend", "Suspend a subscriber: its requests are refused until `resume` "
                                  "(audited; exit 5 unless it is active).")
resume_command = _status_command("resume", "resume", "Resume a suspended subscriber (audited; exit 5 unless it is suspended).")
remove_command = _status_command("remove", "remove", "Remove a subscriber for good: its requests are refused and its name "
                                 "is never reused; the entry stays for the audit trail (audited; exit 5 if already removed).")
