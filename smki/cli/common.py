"""Options and output helpers shared by every command group."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from pathlib import Path

from smki.errors import BadInputError
from smki.hsm.config import KeyRef, default_module_path, parse_key_id, parse_pkcs11_uri
from smki.hsm.pins import SOURCE_FORMS, PinSource

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


class DatabaseTarget(click.ParamType):
    """A --db value: an SQLite file (a Path), or a PostgreSQL URL postgresql://... (kept as str)."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from smki.store.postgres import is_database_url

        if isinstance(value, Path) or not is_database_url(value):
            if not str(value).strip():
                self.fail("an empty name is no database file", param, ctx)
            return click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx)
        return value


DATABASE = DatabaseTarget()


class StateTarget(DatabaseTarget):
    """A --state value: an authority's state directory (a Path), or its database's PostgreSQL URL (kept as str)."""

    name = "DIR|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from smki.store.postgres import is_database_url

        if isinstance(value, Path) or not is_database_url(value):
            if not str(value).strip():
                self.fail("an empty name is no state directory", param, ctx)
            return click.Path(file_okay=False, path_type=Path).convert(value, param, ctx)
        return value


STATE = StateTarget()


def _option_name(param: click.Parameter | None) -> str:
    return max(param.opts, key=len) if param is not None and param.opts else "the secret source"


class SecretSource(click.ParamType):
    """A secret-source option (--pin-source, --so-pin-source, --audit-pin-source, --api-key-source):
    parsed into a PinSource with the command line, before the command runs.

    A malformed value is refused (exit 3) before anything is opened or audited, and the message
    names the option, never the value: an operator who typed the secret itself must not find it
    on the screen or in the signed audit trail. Raised as BadInputError, not click's
    BadParameter, so the refusal is the usual one line.
    """

    name = "SOURCE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> PinSource:
        return value if isinstance(value, PinSource) else PinSource.parse(value, _option_name(param))


class CustodianSecretSource(click.ParamType):
    """A --passphrase-source value, CUSTODIAN=SOURCE: (custodian, PinSource); refused as SecretSource is."""

    name = "CUSTODIAN=SOURCE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, PinSource]:
        if isinstance(value, tuple):
            return value
        option = _option_name(param)
        custodian, separator, spec = value.partition("=")
        if not separator or not custodian.strip():
            # Nothing of the value is repeated: without "=" it may be a passphrase, whole.
            raise BadInputError(f"{option}: give CUSTODIAN=SOURCE with SOURCE {SOURCE_FORMS}, e.g. alice=env:ALICE_PASSPHRASE "
                                "(a passphrase itself is never accepted)")
        return custodian, PinSource.parse(spec, option)


class ActorName(click.ParamType):
    """An --actor value: printable text, as it goes into every audit entry (JSON) and on screens.

    Refused (exit 3) without repeating it: an undecodable byte, a control or bidirectional
    override character, or an overlong name would break or disguise the trail's entries.
    """

    name = "NAME"
    MAX_LENGTH = 128

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not isinstance(value, str) or not value.strip() or not value.isprintable() or len(value) > self.MAX_LENGTH:
            raise BadInputError(f"{_option_name(param)}: give a name of printable text, 1 to {self.MAX_LENGTH} characters "
                                "(no control or bidirectional-override characters)")
        return value


class SerialNumber(click.ParamType):
    """A certificate serial number argument: hex (colons allowed), checked where it enters, upper-case."""

    name = "SERIAL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from smki.store.certificates import normalised_serial_hex

        return normalised_serial_hex(value)


class PolicyReference(click.ParamType):
    """A Certificate Policy value: a file (a Path), or `builtin:organisation` / `builtin:device`, a policy smki
    ships (kept as that text). An unknown `builtin:` name is refused (exit 3) before anything is opened."""

    name = "FILE|builtin:NAME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        from smki.shipped import builtin_name, builtin_policy

        try:
            kind = builtin_policy(value)
        except BadInputError as exc:
            raise BadInputError(f"{_option_name(param)}: {exc}" if isinstance(param, click.Option) else str(exc)) from None
        return click.Path(dir_okay=False, path_type=Path).convert(value, param, ctx) if kind is None else builtin_name(kind)


class KeyUri(click.ParamType):
    """A pkcs11: URI option (--key-uri, --audit-key-uri, --anchor-key-uri): checked with the command line, kept as text.

    Checked here, not only when the command opens the key, so that a URI the command would refuse (one
    carrying pin-value=, say) is never repeated by anything that shows the parsed options (`smki config show`)."""

    name = "URI"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if value:  # an empty one stands for none given, as it always has
            parse_pkcs11_uri(value)  # its refusals name the problem, never the URI
        return value


SECRET_SOURCE = SecretSource()
KEY_URI = KeyUri()
ACTOR = ActorName()
SERIAL = SerialNumber()
CUSTODIAN_SECRET_SOURCE = CustodianSecretSource()
POLICY = PolicyReference()
# The one description of a policy value, for every --policy option and policy argument.
POLICY_HELP = ("a file, or builtin:organisation / builtin:device for the policies smki ships "
               "(recorded by the SHA-256 of the shipped file, as for any file)")


def pin_source_option(name: str = "--pin-source", default: str | None = "prompt", what: str = "the token's user PIN") -> Callable:
    return click.option(
        name, type=SECRET_SOURCE, default=default, show_default=True, metavar="SOURCE",
        help=f"Where to read {what}: env:NAME (an environment variable you name), fd:N (an open file "
        "descriptor) or prompt. A PIN is never accepted on the command line.",
    )


def module_option() -> Callable:
    return click.option(
        "--module", "module_path", default=default_module_path, show_default="$SMKI_PKCS11_MODULE or SoftHSM2",
        help="Path of the PKCS#11 module (a real HSM's library, or SoftHSM2's).",
    )


def token_serial_option(func: Callable) -> Callable:
    return click.option("--token-serial", help="Serial number of the token (as `smki hsm list` shows it): picks one of several "
                        "tokens with the same label. In a key URI, write serial=... instead.")(func)


def key_options(func: Callable) -> Callable:
    """--token/--key-label/--key-id or --key-uri: where a CA key is."""
    for option in reversed([
        click.option("--key-uri", type=KEY_URI, help="RFC 7512 URI of the key, e.g. pkcs11:token=SMKI-ROOT-OCA;object=root-oca;id=%01 "
                     "(serial=... picks one of several tokens with that label; module-path=... overrides --module)"),
        click.option("--token", "token_label", help="Label of the token holding the key."),
        token_serial_option,
        click.option("--key-label", help="CKA_LABEL of the key pair."),
        click.option("--key-id", help="CKA_ID of the key pair, in hex (e.g. 01)."),
    ]):
        func = option(func)
    return func


def key_ref_from_options(module_path: str, key_uri: str | None, token_label: str | None, key_label: str | None, key_id: str | None,
                         token_serial: str | None = None) -> KeyRef:
    """The key the options name, in `module_path` unless its URI names a module-path of its own."""
    if key_uri:
        if token_serial:
            raise click.UsageError("--token-serial goes with --token; in a key URI write serial=... instead")
        return parse_pkcs11_uri(key_uri).with_module(module_path)
    if not (token_label and key_label and key_id):
        raise click.UsageError("name the key with --key-uri, or with --token, --key-label and --key-id")
    return KeyRef(token_label, key_label, parse_key_id(key_id), module_path, token_serial or "")


def audit_options(func: Callable) -> Callable:
    """--actor, and the audit key (--audit-key-uri, --pin-source) that signs the run's checkpoint."""
    func = click.option("--pin-source", type=SECRET_SOURCE, default="prompt", show_default=True, metavar="SOURCE",
                        help="Where to read the audit key token's PIN: env:NAME, fd:N or prompt (never argv).")(func)
    func = click.option("--audit-key-uri", type=KEY_URI, help="pkcs11: URI of the audit key; when given, the run ends with a signed checkpoint.")(func)
    return click.option("--actor", type=ACTOR, default=lambda: os.environ.get("USER", "operator"), show_default="$USER",
                        help="Who is acting, as recorded in the audit trail.")(func)


def audit_key_ref(audit_key_uri: str | None, module_path: str | None = None) -> KeyRef | None:
    """The audit key an --audit-key-uri names (None when none is named), in the command's --module
    (`module_path`; $SMKI_PKCS11_MODULE or SoftHSM2 for a command without one) unless the URI names its own."""
    if not audit_key_uri:
        return None
    return key_ref_from_options(module_path or default_module_path(), audit_key_uri, None, None, None)


def state_option(func: Callable) -> Callable:
    """--state, --actor, and the authority's audit key (--audit-key-uri, --audit-pin-source)."""
    return state_options()(func)


def state_options(state_type: click.ParamType = click.Path(file_okay=False, path_type=Path),
                  state_help: str = "The authority's state directory: its database (issued certificates, audit trail) lives here."):
    """state_option, with another kind of --state (a state directory or a postgresql:// URL: DATABASE)."""
    def decorate(func: Callable) -> Callable:
        for option in reversed([
            click.option("--state", "state_dir", required=True, type=state_type, help=state_help),
            click.option("--actor", type=ACTOR, default=lambda: os.environ.get("USER", "operator"), show_default="$USER",
                         help="Who is acting, as recorded in the audit trail."),
            click.option("--audit-key-uri", type=KEY_URI, help="pkcs11: URI of the authority's audit key; the operation ends with a signed checkpoint."),
            click.option("--audit-pin-source", type=SECRET_SOURCE, default="prompt", show_default=True, metavar="SOURCE",
                         help="Where to read the audit key token's PIN: env:NAME, fd:N or prompt."),
        ]):
            func = option(func)
        return func
    return decorate


def emit(as_json: bool, data: Any, human: Callable[[Any], str]) -> None:
    """Print `data` as JSON, or as the human text `human(data)` returns."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        click.echo(human(data))


def progress(iterable, length: int, label: str):
    """A progress bar on a terminal only: scripts and CI get clean output."""
    if sys.stderr.isatty():
        return click.progressbar(iterable, length=length, label=label, file=sys.stderr)
    return _NoProgress(iterable)


class _NoProgress:
    def __init__(self, iterable) -> None:
        self._iterable = iterable

    def __enter__(self):
        return self._iterable

    def __exit__(self, *exc_info) -> None:
        return None
