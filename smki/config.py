"""Configuration files: one YAML file per authority, naming what its operators would otherwise
repeat on every command (token, key, module, PIN source, state, policy, environment, issuer
certificate, audit key, defaults such as workers).

This module only reads and checks a file and turns it into a typed, frozen `Configuration`; the
CLI (smki.cli.configured) maps its settings onto each command's options, where a flag on the
command line overrides the file. The file is read by the one YAML loader (smki.files.read_yaml
through smki.policy.loading.read_validated_yaml: bounded, duplicate keys refused) and checked
strictly; every refusal reads `FILE:LINE: field: what is wrong` (exit 3):

- an unknown key or a wrong type;
- a secret written in the file (a key such as pin, so_pin, password, passphrase, api_key), or a
  pin_source that is not a source (env:NAME, fd:N, prompt). Neither value is ever repeated: it
  may be the PIN itself;
- an input that does not exist: the PKCS#11 module, a policy file, the issuer certificate.
  Relative paths are relative to the file. The state directory and the database need not exist
  yet (the commands that create state create them). A policy named `builtin:NAME` is passed on
  as written, for the policy loader to resolve.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from smki.errors import BadInputError
from smki.hsm.config import KeyRef, parse_key_id, parse_pkcs11_uri, token_label_text, token_serial_text
from smki.hsm.pins import SOURCE_FORMS, PinSource
from smki.policy import Environment
from smki.policy.loading import line_of, read_validated_yaml
from smki.shipped import builtin_policy
from smki.store.postgres import has_password, is_database_url

CONFIG_ENV = "SMKI_CONFIG"
PIN_SOURCE_KEY = "pin_source"
# A key whose name says it holds a secret. `pin_source` names where a secret is, not the secret.
_SECRET_KEY = re.compile(r"(?:^|[_-])(?:pins?|password|passwd|passphrase|secret|api[_-]?key|apikey|private[_-]?key)(?:[_-]|$)", re.I)


class ConfigError(BadInputError):
    """A configuration file that cannot be used: `FILE:LINE: field: what is wrong`."""


class Setting(enum.StrEnum):
    """A setting of a configuration file, named by its place in the file."""

    MODULE = "hsm.module"
    TOKEN = "hsm.token"
    TOKEN_SERIAL = "hsm.token_serial"
    KEY_LABEL = "hsm.key.label"
    KEY_ID = "hsm.key.id"
    KEY_URI = "hsm.key_uri"
    PIN_SOURCE = "hsm.pin_source"
    STATE = "state"
    DATABASE = "database"
    POLICY = "policy"
    ENVIRONMENT = "environment"
    ISSUER_CERTIFICATE = "issuer_certificate"
    AUDIT_KEY = "audit.key"  # the audit key as a pkcs11: URI (audit.key_uri, or audit.token + audit.key)
    AUDIT_PIN_SOURCE = "audit.pin_source"
    ACTOR = "defaults.actor"
    WORKERS = "defaults.workers"
    CHUNK_SIZE = "defaults.chunk_size"
    VERIFY_ONE_IN = "defaults.verify_one_in"


class AuthorityKind(enum.StrEnum):
    """What a configuration file is for (its `kind`): names the file's purpose, and the template."""

    ISSUING_OCA = "issuing-oca"
    ISSUING_DCA = "issuing-dca"
    LIBRARIAN = "librarian"
    AUDITOR = "auditor"
    SERVICE = "service"  # `smki serve`: read by smki.web.settings, never by load_configuration


_KEY = {"type": "object", "additionalProperties": False, "required": ["label", "id"],
        "properties": {"label": {"type": "string", "minLength": 1}, "id": {"type": "string", "minLength": 1}}}
_TEXT = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 1}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kind": {"enum": [kind.value for kind in AuthorityKind]},
        "authority": _TEXT,
        "hsm": {"type": "object", "additionalProperties": False, "properties": {
            "module": _TEXT, "token": _TEXT, "token_serial": _TEXT, "key": _KEY, "key_uri": _TEXT, "pin_source": _TEXT}},
        "state": _TEXT,
        "database": _TEXT,
        "policy": _TEXT,
        "environment": {"enum": [environment.value for environment in Environment]},
        "issuer_certificate": _TEXT,
        "audit": {"type": "object", "additionalProperties": False, "properties": {
            "key_uri": _TEXT, "token": _TEXT, "key": _KEY, "pin_source": _TEXT}},
        "defaults": {"type": "object", "additionalProperties": False, "properties": {
            "actor": _TEXT, "workers": _COUNT, "chunk_size": _COUNT, "verify_one_in": _COUNT}},
    },
}


@dataclass(frozen=True)
class ConfiguredValue:
    """One setting's value, as a command-line option takes it (paths made absolute), and where it was written."""

    setting: Setting
    value: str | int
    line: int


@dataclass(frozen=True)
class Configuration:
    """A checked configuration file: the settings it gives, each with its line."""

    path: Path
    kind: AuthorityKind | None
    authority: str | None
    values: Mapping[Setting, ConfiguredValue]
    kind_line: int = 1

    def get(self, setting: Setting) -> ConfiguredValue | None:
        return self.values.get(setting)

    def where(self, setting: Setting) -> str:
        """FILE:LINE of a setting the file gives."""
        return f"{self.path}:{self.values[setting].line}"


def load_configuration(path: Path | str) -> Configuration:
    """The configuration file at `path`, checked; ConfigError (exit 3) names FILE:LINE: field otherwise."""
    path = Path(path)
    data, lines, _ = read_validated_yaml(path, SCHEMA, ConfigError, "a configuration file is a mapping of settings "
                                         "(hsm, state, policy, environment, issuer_certificate, audit, defaults)",
                                         what="configuration", before_schema=lambda data, lines: refuse_secrets(path, data, lines))
    reader = _Reader(path, lines)
    values = [*_hsm_values(reader, data.get("hsm", {})), *_authority_values(reader, data), *_audit_values(reader, data),
              *(reader.value(Setting(f"defaults.{name}"), ("defaults", name), value) for name, value in data.get("defaults", {}).items())]
    return Configuration(path, AuthorityKind(data["kind"]) if "kind" in data else None, data.get("authority"),
                         MappingProxyType({value.setting: value for value in values}), reader.line(("kind",)))


class _Reader:
    """Turns a file's values into ConfiguredValues: lines, paths relative to the file, refusals as FILE:LINE: field."""

    def __init__(self, path: Path, lines: dict) -> None:
        self.path, self.lines, self.base = path, lines, path.resolve().parent

    def line(self, where: tuple) -> int:
        return line_of(self.lines, where)

    def error(self, where: tuple, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}:{self.line(where)}: {'.'.join(where)}: {problem}")

    def value(self, setting: Setting, where: tuple, value: str | int) -> ConfiguredValue:
        return ConfiguredValue(setting, value, self.line(where))

    def checked(self, where: tuple, check, value):
        """`check(value)`, its BadInputError (worded without the value) refused as FILE:LINE: field."""
        try:
            return check(value)
        except BadInputError as exc:
            raise self.error(where, str(exc)) from None

    def input_path(self, setting: Setting, where: tuple, text: str) -> ConfiguredValue:
        """An input file: relative to the configuration file, and it must exist."""
        path = self.base / text
        if not path.is_file():
            raise self.error(where, f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        return self.value(setting, where, str(path))

    def place(self, setting: Setting, where: tuple, text: str) -> ConfiguredValue:
        """A place a command may create (a state directory, a database file): relative to the configuration file."""
        return self.value(setting, where, str(self.base / text))


def _hsm_values(reader: _Reader, hsm: dict) -> Iterator[ConfiguredValue]:
    if "key_uri" in hsm and ({"token", "key"} & set(hsm)):
        raise reader.error(("hsm", "key_uri"), "give the key either as key_uri or as token and key, not both")
    if "module" in hsm:
        yield reader.input_path(Setting.MODULE, ("hsm", "module"), hsm["module"])
    if "token" in hsm:
        yield reader.value(Setting.TOKEN, ("hsm", "token"), reader.checked(("hsm", "token"), token_label_text, hsm["token"]))
    if "token_serial" in hsm:
        yield reader.value(Setting.TOKEN_SERIAL, ("hsm", "token_serial"),
                           reader.checked(("hsm", "token_serial"), token_serial_text, hsm["token_serial"]))
    if "key" in hsm:
        key = hsm["key"]
        reader.checked(("hsm", "key", "id"), parse_key_id, key["id"])
        yield reader.value(Setting.KEY_LABEL, ("hsm", "key", "label"), key["label"])
        yield reader.value(Setting.KEY_ID, ("hsm", "key", "id"), key["id"])
    if "key_uri" in hsm:
        reader.checked(("hsm", "key_uri"), parse_pkcs11_uri, hsm["key_uri"])
        yield reader.value(Setting.KEY_URI, ("hsm", "key_uri"), hsm["key_uri"])
    if PIN_SOURCE_KEY in hsm:
        yield reader.value(Setting.PIN_SOURCE, ("hsm", PIN_SOURCE_KEY), hsm[PIN_SOURCE_KEY])


def _authority_values(reader: _Reader, data: dict) -> Iterator[ConfiguredValue]:
    # A state is a directory or a postgresql:// URL (several services on several hosts share one); a database a file or a URL.
    for setting, key in ((Setting.STATE, "state"), (Setting.DATABASE, "database")):
        if key in data:
            yield _place_or_url(reader, setting, key, data[key])
    if "policy" in data:
        policy = data["policy"]
        # A shipped policy (builtin:NAME) stands as it is; an unknown name is refused here, at its line.
        yield reader.value(Setting.POLICY, ("policy",), policy) if reader.checked(("policy",), builtin_policy, policy) \
            else reader.input_path(Setting.POLICY, ("policy",), policy)
    if "environment" in data:
        yield reader.value(Setting.ENVIRONMENT, ("environment",), data["environment"])
    if "issuer_certificate" in data:
        yield reader.input_path(Setting.ISSUER_CERTIFICATE, ("issuer_certificate",), data["issuer_certificate"])


def _place_or_url(reader: _Reader, setting: Setting, key: str, text: str) -> ConfiguredValue:
    if not is_database_url(text):
        return reader.place(setting, (key,), text)
    if has_password(text):
        raise reader.error((key,), "a password is never written in a configuration file: give the URL without it "
                                   "(PostgreSQL reads it from PGPASSWORD or ~/.pgpass)")
    return reader.value(setting, (key,), text)


def _audit_values(reader: _Reader, data: dict) -> Iterator[ConfiguredValue]:
    audit = data.get("audit", {})
    if "key_uri" in audit:
        if {"token", "key"} & set(audit):
            raise reader.error(("audit", "key_uri"), "give the audit key either as key_uri or as token and key, not both")
        reader.checked(("audit", "key_uri"), parse_pkcs11_uri, audit["key_uri"])
        yield reader.value(Setting.AUDIT_KEY, ("audit", "key_uri"), audit["key_uri"])
    elif {"token", "key"} & set(audit):
        if not {"token", "key"} <= set(audit):
            raise reader.error(("audit",), "name the audit key with key_uri, or with both token and key (label, id)")
        module = str(reader.base / data["hsm"]["module"]) if "module" in data.get("hsm", {}) else ""
        # The commands take the audit key as a URI: it carries the authority's module, so the audit key is on the same HSM.
        key = reader.checked(("audit", "key"), lambda key: KeyRef(audit["token"], key["label"], parse_key_id(key["id"]), module), audit["key"])
        yield reader.value(Setting.AUDIT_KEY, ("audit", "token"), key.uri)
    if PIN_SOURCE_KEY in audit:
        yield reader.value(Setting.AUDIT_PIN_SOURCE, ("audit", PIN_SOURCE_KEY), audit[PIN_SOURCE_KEY])


def refuse_secrets(path: Path, data, lines: dict, where: tuple = ()) -> None:
    """(Also the service configuration's, smki.web.settings.) Before the schema (whose messages repeat values): refuse a secret written in the file, a
    pin_source that is no source, and a value with a control character; no message repeats the value."""
    if isinstance(data, list):
        for index, item in enumerate(data):
            refuse_secrets(path, item, lines, where + (index,))
        return
    if not isinstance(data, dict):
        return
    for key, value in data.items():
        place = where + (key,)
        field = ".".join(str(part) for part in place)
        line = lines.get(place, 1)
        if isinstance(value, str) and not value.isprintable():
            # No setting holds one; a NUL in a path would reach the system as a crash (exit 70), a terminal
            # control sequence would reach `config show`'s screen. Not repeated: the value may be anything.
            raise ConfigError(f"{path}:{line}: {field}: holds a control character (a setting is printable text)")
        if key == PIN_SOURCE_KEY:
            if not isinstance(value, str) or not _is_source(value):
                raise ConfigError(f"{path}:{line}: {field}: not a secret source: give {SOURCE_FORMS} "
                                  "(a PIN itself is never written in a configuration file)")
        elif isinstance(key, str) and _SECRET_KEY.search(key) and not key.endswith("_source"):
            raise ConfigError(f"{path}:{line}: {field}: a secret is never written in a configuration file; "
                              f"say where it comes from with {PIN_SOURCE_KEY}: {SOURCE_FORMS}")
        else:
            refuse_secrets(path, value, lines, place)


def _is_source(text: str) -> bool:
    try:
        PinSource.parse(text)
    except BadInputError:
        return False
    return True


_ISSUING_TEMPLATE = """\
# smki configuration: the {title}. Every command takes --config {kind}.yaml (or $SMKI_CONFIG);
# an option given on the command line overrides the setting here. Relative paths are relative to
# this file. No PIN is ever written here: only where it comes from (env:NAME, fd:N or prompt).
# `smki config show --config {kind}.yaml ca issue-{short}` shows what a command would take from it.
kind: {kind}
authority: {kind}
hsm:
  # module: /usr/lib/vendor/pkcs11.so     # default: $SMKI_PKCS11_MODULE, else SoftHSM2
  token: SMKI-{upper}                    # the token's label
  key: {{label: {kind}, id: "01"}}           # the CA key pair: CKA_LABEL and CKA_ID (hex, quoted)
  # key_uri: "pkcs11:token=SMKI-{upper};object={kind};id=%01"   # instead of token and key
  pin_source: env:SMKI_{env}_PIN
state: state/{kind}                      # the authority's state directory (its database and audit trail)
policy: {policy}                      # the adopted Certificate Policy: a file, or builtin:NAME
environment: test                        # test or production: which OIDs of the policy apply
issuer_certificate: {kind}.pem           # this authority's own certificate
audit:                                   # the audit key: each operation ends with a checkpoint it signs
  token: SMKI-{upper}
  key: {{label: {kind}-audit, id: "02"}}
  pin_source: env:SMKI_{env}_PIN
defaults:
  actor: {kind}-operator                 # who acts, as the audit trail records it (default $USER)
{extra}"""

_TEMPLATES = {
    AuthorityKind.ISSUING_OCA: _ISSUING_TEMPLATE.format(
        title="Issuing OCA (Organisation Certificates, revocation, the Organisation CRL)", kind="issuing-oca", short="org",
        upper="ISSUING-OCA", env="OCA", policy="builtin:organisation", extra=""),
    AuthorityKind.ISSUING_DCA: _ISSUING_TEMPLATE.format(
        title="Issuing DCA (Device Certificates, one at a time or in batches)", kind="issuing-dca", short="device",
        upper="ISSUING-DCA", env="DCA", policy="builtin:device",
        extra="  workers: 2                             # batch worker processes (default: the CPU count)\n"
              "  # chunk_size: 1000\n  # verify_one_in: 1\n"),
    AuthorityKind.LIBRARIAN: """\
# smki configuration: the Certificate Librarian. Every command takes --config librarian.yaml (or $SMKI_CONFIG);
# an option given on the command line overrides the setting here. Relative paths are relative to this file.
kind: librarian
authority: librarian
database: repository.db                  # an SQLite file, or postgresql://HOST/NAME
audit:                                   # the Librarian's audit key: each run ends with a checkpoint it signs
  key_uri: "pkcs11:token=SMKI-LIBRARIAN-AUDIT;object=librarian-audit;id=%01"
  pin_source: env:SMKI_LIBRARIAN_PIN     # never the PIN itself: env:NAME, fd:N or prompt
defaults:
  actor: librarian
""",
    AuthorityKind.SERVICE: """\
# smki configuration: the online service (`smki serve --config service.yaml`): the Issuing Authorities'
# CSR web services and the SMKI Repository web service. Relative paths are relative to this file.
# No secret is ever written here: only where it comes from (env:NAME, fd:N or prompt).
kind: service
listen: {address: 0.0.0.0, port: 8443}
workers: 2                               # worker processes (each with its own HSM sessions)
tls:                                     # TLS 1.2+ terminated here; the client certificate is checked against client_ca
  certificate: tls/server.pem
  key: tls/server.key
  client_ca: tls/iki-ca.pem              # the IKI CA that issued the parties' transport certificates
  # key_pin_source: env:SMKI_TLS_KEY_PASSPHRASE   # for an encrypted key
# tls: {proxy: true, client_certificate_header: X-SSL-Client-Cert, trusted: [127.0.0.1]}   # behind a reverse proxy
database: state/service.db               # the service's own store (subscriber register, request audit): SQLite or postgresql://HOST/NAME
issuing_oca: issuing-oca.yaml            # the authorities' own configuration files
issuing_dca: issuing-dca.yaml
librarian: librarian.yaml
repository:
  api_key_source: env:SMKI_REPOSITORY_API_KEY
  published: repository-www              # the published directory (`smki librarian publish --dir`)
  public_crl: true                       # CRL and ARL downloads need no API key
  public_search: false
limits:
  max_body_bytes: 67108864               # the batch service (64 MiB); every other route takes 64 KiB
  max_connections: 1024                  # per worker
  request_timeout: 20                    # seconds for a request to arrive whole
  keepalive_timeout: 5                   # seconds an idle connection is kept
access_log: stderr                       # or a file; it never holds a query string or an API key
""",
    AuthorityKind.AUDITOR: """\
# smki configuration: an auditor checking one authority's trail (`smki audit verify --config auditor.yaml --public-key KEY`).
# Relative paths are relative to this file.
kind: auditor
authority: issuing-oca
database: state/issuing-oca/smki.db      # the authority's database (opened read-only)
audit:                                   # its audit key, whose token anchors the last head it checkpointed
  key_uri: "pkcs11:token=SMKI-ISSUING-OCA;object=issuing-oca-audit;id=%02"
  pin_source: prompt
""",
}


def template(kind: AuthorityKind) -> str:
    """A commented example configuration file for `kind` (`smki config template KIND`)."""
    return _TEMPLATES[kind]
