"""`smki portal`: the SMKI Portal's password accounts (the pages themselves are served by `smki serve`).

Each command reads its options, calls one method of smki.register.accounts.PortalAccounts, and prints the result.
"""

from __future__ import annotations

import click

from smki.cli.common import SECRET_SOURCE, audit_key_ref, audit_options, emit, json_option
from smki.cli.subscribers import register_options, service_database
from smki.register.accounts import MAX_FAILURES, MIN_PASSWORD, PortalAccounts


def open_accounts(config_file, database, actor: str = "portal", audit_key_uri: str | None = None, pin_source=None) -> PortalAccounts:
    if database is None and config_file is None:
        raise click.UsageError("name the service's store with --config FILE (a service configuration) or --database PATH|URL")
    return PortalAccounts(database if database is not None else service_database(config_file), actor=actor,
                          audit_key=audit_key_ref(audit_key_uri), audit_pin=pin_source)


@click.group("portal")
def portal_group() -> None:
    """The SMKI Portal (the web pages `smki serve` offers at /portal/).

    A browser reaches the portal with a client certificate the subscriber register grants the portal
    interface, or, on the Internet portal, with a user name and password: the accounts these commands manage.
    """


USERS_HELP = f"""Password accounts of the Internet portal, kept in the service's store (argon2id hashes).

Each account acts for one Authorised Subscriber of the register (`smki subscribers`), which must be
granted the portal interface. {MAX_FAILURES} wrong passwords within an hour lock an account for an hour
(`unlock` ends that early). Every change and every login is audited in the register's trail.

Exit codes: 0 done, 1 refused, 2 usage, 3 bad input (an unknown name, a malformed value, a password
shorter than {MIN_PASSWORD} characters), 4 audit key, 5 contradicts the store (a name taken, a change that does not apply).
"""


@portal_group.group("users", help=USERS_HELP)
def users_group() -> None:
    pass


@users_group.command("add")
@register_options
@click.argument("name", metavar="USER")
@click.option("--subscriber", required=True, help="The register's name of the Authorised Subscriber the account acts for.")
@click.option("--password-source", type=SECRET_SOURCE, default="prompt", show_default=True, metavar="SOURCE",
              help=f"Where to read the new password ({MIN_PASSWORD}+ characters): env:NAME, fd:N or prompt. Never argv.")
@audit_options
@json_option
def add_command(config_file, database, name, subscriber, password_source, actor, audit_key_uri, pin_source, as_json) -> None:
    """Add the portal account USER for a subscriber (audited)."""
    password = password_source.read("portal password")
    with open_accounts(config_file, database, actor, audit_key_uri, pin_source) as accounts:
        account = accounts.add(name, subscriber=subscriber, password=password)
    emit(as_json, account.summary(), lambda s: f"added {_line(s)}")


@users_group.command("list")
@register_options
@json_option
def list_command(config_file, database, as_json) -> None:
    """List every portal account, removed ones included. Exit 0, even when empty."""
    with open_accounts(config_file, database) as accounts:
        rows = [account.summary() for account in accounts.list()]
    emit(as_json, rows, lambda rs: "\n".join(_line(r) for r in rs) or "no portal accounts")


def _line(summary: dict) -> str:
    locked = f"  locked until {summary['locked_until']}" if summary["locked_until"] else ""
    return f"{summary['username']:<24} {summary['status']:<8} subscriber {summary['subscriber']}{locked}"


def _status_command(verb: str, help_text: str):
    @users_group.command(verb, help=help_text)
    @register_options
    @click.argument("name", metavar="USER")
    @audit_options
    @json_option
    def command(config_file, database, name, actor, audit_key_uri, pin_source, as_json) -> None:
        with open_accounts(config_file, database, actor, audit_key_uri, pin_source) as accounts:
            changed = getattr(accounts, verb)(name)
        emit(as_json, changed.summary(), lambda s: f"{s['username']}: now {s['status']}")
    return command


lock_command = _status_command("lock", "Lock the account USER: its logins are refused and its sessions end until `unlock` (audited).")
unlock_command = _status_command("unlock", "Unlock the account USER: an operator's lock, or the hour's lock after wrong passwords (audited).")
remove_command = _status_command("remove", "Remove the account USER for good, ending its sessions; the name is never reused (audited).")
