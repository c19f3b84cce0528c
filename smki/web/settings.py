"""The service's configuration file (`kind: service`), for `smki serve --config FILE`.

Read as smki/config.py reads an authority's file: one YAML loader (bounded, duplicate keys refused),
a strict schema, a secret written in the file refused before the schema sees it, relative paths
relative to the file, and every refusal `FILE:LINE: field: what is wrong` (exit 3). The authorities'
own files (issuing_oca, issuing_dca, librarian) are loaded with smki.config.load_configuration and
must be of their kind.

    kind: service
    listen: {address: 0.0.0.0, port: 8443}
    workers: 2
    tls: {certificate: server.pem, key: server.key, client_ca: iki-ca.pem}   # or: tls: {proxy: true, ...}
    database: service.db                 # the service's own store: subscriber register, request audit
    issuing_oca: issuing-oca.yaml
    issuing_dca: issuing-dca.yaml
    librarian: librarian.yaml
    repository: {api_key_source: env:REPO_API_KEY, published: published/, public_crl: true, public_search: false}
    limits: {max_body_bytes: 67108864, max_connections: 1024, request_timeout: 20, keepalive_timeout: 5}
    access_log: stderr                   # or a file
    batches: {processor: true, poll_seconds: 2, lease_seconds: 60}   # a batch processor beside the workers (with issuing_dca)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import smki
from smki.config import AuthorityKind, ConfigError, Configuration, load_configuration, refuse_secrets
from smki.errors import BadInputError
from smki.hsm.pins import SOURCE_FORMS, PinSource
from smki.policy.loading import line_of, read_validated_yaml
from smki.store.postgres import has_password, is_database_url

STDERR = "stderr"
DEFAULT_PORT = 8443
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class BatchProcessing:
    """The batch processor `smki serve` runs beside its workers when it hosts the Issuing DCA: one process that
    claims approved batches from the queue (several services on one PostgreSQL store share the queue, each batch
    claimed by one). `processor: false` leaves processing to `smki ca batches process` elsewhere."""

    processor: bool = True
    poll_seconds: float = 2.0
    lease_seconds: float = 60.0  # a batch whose processor stopped renewing its lease this long is taken over


@dataclass(frozen=True)
class Limits:
    """What one worker takes from its clients. The defaults are this service's; the SEC names none."""

    max_body_bytes: int = 64 * 1024 * 1024  # the batch service's (a 50,000-CSR SubmitCSRBatch is ~30 MB)
    max_other_body_bytes: int = 64 * 1024  # every other route's
    max_connections: int = 1024  # per worker, open at once
    max_connections_per_client: int = 256  # from one client address (a quarter by default)
    request_timeout: float = 20.0  # seconds for a request (line, headers, body) to arrive whole from its first byte
    request_line_timeout: float = 5.0  # seconds a connection (new, or idle keep-alive) may wait before a request starts

    MAX_REQUEST_LINE_BYTES = 8190  # 414 above (aiohttp's default)
    MAX_FIELD_BYTES = 8192  # one header line; 431 above (distinct from the line's, so a refusal says which)
    MAX_HEADERS = 64  # 431 above

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_other_body_bytes", "max_connections", "max_connections_per_client"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise BadInputError(f"limits.{name} must be a positive whole number")
        for name in ("request_timeout", "request_line_timeout"):
            if not getattr(self, name) > 0:
                raise BadInputError(f"limits.{name} must be a positive number of seconds")

    @classmethod
    def with_defaults(cls, *, max_connections: int = 1024, max_connections_per_client: int | None = None,
                      request_timeout: float = 20.0, request_line_timeout: float = 5.0, **others) -> "Limits":
        """Limits whose per-client bound defaults to a quarter of max_connections (at least 1), and whose
        wait for a request to start is at most the request's own timeout."""
        per_client = max(1, max_connections // 4) if max_connections_per_client is None else max_connections_per_client
        return cls(max_connections=max_connections, max_connections_per_client=per_client, request_timeout=request_timeout,
                   request_line_timeout=min(request_line_timeout, request_timeout), **others)


@dataclass(frozen=True)
class TlsSettings:
    """TLS terminated here (certificate, key, client_ca), or by a reverse proxy (proxy=True)."""

    certificate: Path | None = None
    key: Path | None = None
    client_ca: Path | None = None
    key_pin_source: PinSource | None = None  # for an encrypted key file
    proxy: bool = False
    client_certificate_header: str = "X-SSL-Client-Cert"  # the proxy's URL-encoded PEM of the verified client certificate
    trusted: tuple[str, ...] = ("127.0.0.1", "::1")  # proxy addresses whose header is believed


@dataclass(frozen=True)
class RepositorySettings:
    api_key_source: PinSource | None = None
    published: Path | None = None
    public_crl: bool = True  # CRL and ARL downloads need no key: relying parties fetch them anonymously
    public_search: bool = False


@dataclass(frozen=True)
class ServiceSettings:
    path: Path | None
    address: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    tls: TlsSettings | None = None  # None: plain HTTP (the repository alias, tests)
    database: str | None = None
    issuing_oca: Configuration | None = None
    issuing_dca: Configuration | None = None
    librarian: Configuration | None = None
    repository: RepositorySettings = field(default_factory=RepositorySettings)
    limits: Limits = field(default_factory=Limits)
    access_log: str | None = None  # a file, STDERR, or None (no access log)
    build: str = smki.__version__
    batches: BatchProcessing = field(default_factory=lambda: BatchProcessing())

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None and not self.tls.proxy else "http"


_TEXT = {"type": "string", "minLength": 1}
_POSITIVE = {"type": "integer", "minimum": 1}
_SECONDS = {"type": "number", "exclusiveMinimum": 0}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind"],
    "properties": {
        "kind": {"const": AuthorityKind.SERVICE.value},
        "listen": {"type": "object", "additionalProperties": False, "properties": {
            "address": _TEXT, "port": {"type": "integer", "minimum": 0, "maximum": 65535}}},
        "workers": {"type": "integer", "minimum": 1, "maximum": 256},
        "tls": {"type": "object", "additionalProperties": False, "properties": {
            "certificate": _TEXT, "key": _TEXT, "client_ca": _TEXT, "key_pin_source": _TEXT, "proxy": {"type": "boolean"},
            "client_certificate_header": _TEXT, "trusted": {"type": "array", "items": _TEXT, "minItems": 1}}},
        "database": _TEXT,
        "issuing_oca": _TEXT,
        "issuing_dca": _TEXT,
        "librarian": _TEXT,
        "repository": {"type": "object", "additionalProperties": False, "properties": {
            "api_key_source": _TEXT, "published": _TEXT, "public_crl": {"type": "boolean"}, "public_search": {"type": "boolean"}}},
        "limits": {"type": "object", "additionalProperties": False, "properties": {
            "max_body_bytes": _POSITIVE, "max_other_body_bytes": _POSITIVE, "max_connections": _POSITIVE,
            "max_connections_per_client": _POSITIVE, "request_timeout": _SECONDS, "keepalive_timeout": _SECONDS}},
        "access_log": _TEXT,
        "build": _TEXT,
        "batches": {"type": "object", "additionalProperties": False, "properties": {
            "processor": {"type": "boolean"}, "poll_seconds": _SECONDS, "lease_seconds": _SECONDS}},
    },
}


def load_service_settings(path: Path | str) -> ServiceSettings:
    """The service configuration at `path`, checked; ConfigError (exit 3) names FILE:LINE: field otherwise."""
    path = Path(path)
    data, lines, _ = read_validated_yaml(path, SCHEMA, ConfigError, "a service configuration is a mapping of settings "
                                         "(kind: service, listen, workers, tls, database, issuing_oca, issuing_dca, librarian, "
                                         "repository, limits, access_log)", what="configuration",
                                         before_schema=lambda data, lines: refuse_secrets(path, data, lines))
    reader = _Reader(path, lines)
    librarian = _authority(reader, data, "librarian", AuthorityKind.LIBRARIAN)
    if librarian is not None and "api_key_source" not in data.get("repository", {}):
        raise reader.error(("librarian",), "the repository web service needs repository.api_key_source (env:NAME, fd:N or prompt)")
    listen = data.get("listen", {})
    return ServiceSettings(
        path=path, address=listen.get("address", "127.0.0.1"), port=listen.get("port", DEFAULT_PORT),
        workers=data.get("workers", DEFAULT_WORKERS), tls=_tls(reader, data["tls"]) if "tls" in data else None,
        database=_database(reader, data["database"]) if "database" in data else None,
        issuing_oca=_authority(reader, data, "issuing_oca", AuthorityKind.ISSUING_OCA),
        issuing_dca=_authority(reader, data, "issuing_dca", AuthorityKind.ISSUING_DCA),
        librarian=librarian,
        repository=_repository(reader, data.get("repository", {})),
        limits=_limits(reader, data.get("limits", {}), behind_proxy=bool(data.get("tls", {}).get("proxy"))),
        access_log=_access_log(reader, data["access_log"]) if "access_log" in data else None,
        build=data.get("build", smki.__version__),
        batches=BatchProcessing(**data.get("batches", {})))


class _Reader:
    def __init__(self, path: Path, lines: dict) -> None:
        self.path, self.lines, self.base = path, lines, path.resolve().parent

    def error(self, where: tuple, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}:{line_of(self.lines, where)}: {'.'.join(where)}: {problem}")

    def input_path(self, where: tuple, text: str) -> Path:
        path = self.base / text
        if not path.is_file():
            raise self.error(where, f"{path}: no such file" if not path.exists() else f"{path}: not a file")
        return path

    def source(self, where: tuple, text: str) -> PinSource:
        try:
            return PinSource.parse(text)
        except BadInputError:
            raise self.error(where, f"not a secret source: give {SOURCE_FORMS} (never the secret itself)") from None


def _tls(reader: _Reader, tls: dict) -> TlsSettings:
    if tls.get("proxy"):
        extra = sorted({"certificate", "key", "client_ca", "key_pin_source"} & set(tls))
        if extra:
            raise reader.error(("tls", extra[0]), "behind a proxy (tls.proxy: true) the proxy terminates TLS: no certificate here")
        return TlsSettings(proxy=True, client_certificate_header=tls.get("client_certificate_header", TlsSettings.client_certificate_header),
                           trusted=tuple(tls.get("trusted", TlsSettings.trusted)))
    missing = [name for name in ("certificate", "key", "client_ca") if name not in tls]
    if missing:
        raise reader.error(("tls",), f"give {', '.join(missing)} (or proxy: true behind a reverse proxy)")
    return TlsSettings(certificate=reader.input_path(("tls", "certificate"), tls["certificate"]),
                       key=reader.input_path(("tls", "key"), tls["key"]),
                       client_ca=reader.input_path(("tls", "client_ca"), tls["client_ca"]),
                       key_pin_source=reader.source(("tls", "key_pin_source"), tls["key_pin_source"]) if "key_pin_source" in tls else None)


def _database(reader: _Reader, database: str) -> str:
    if not is_database_url(database):
        return str(reader.base / database)
    if has_password(database):
        raise reader.error(("database",), "a password is never written in a configuration file: give the URL without it "
                                          "(PostgreSQL reads it from PGPASSWORD or ~/.pgpass)")
    return database


def _authority(reader: _Reader, data: dict, name: str, kind: AuthorityKind) -> Configuration | None:
    if name not in data:
        return None
    configuration = load_configuration(reader.input_path((name,), data[name]))
    if configuration.kind is not kind:
        raise reader.error((name,), f"{configuration.path} is of kind {configuration.kind or '(none)'}, not {kind}")
    return configuration


def _repository(reader: _Reader, repository: dict) -> RepositorySettings:
    published = repository.get("published")
    return RepositorySettings(
        api_key_source=reader.source(("repository", "api_key_source"), repository["api_key_source"]) if "api_key_source" in repository else None,
        published=None if published is None else reader.base / published,
        public_crl=repository.get("public_crl", True), public_search=repository.get("public_search", False))


def _limits(reader: _Reader, limits: dict, behind_proxy: bool) -> Limits:
    values = {name: limits[name] for name in ("max_body_bytes", "max_other_body_bytes", "max_connections",
                                              "max_connections_per_client", "request_timeout") if name in limits}
    if behind_proxy and "max_connections_per_client" not in values:
        # Every connection comes from the proxy's address: a per-address bound would bound the proxy.
        values["max_connections_per_client"] = values.get("max_connections", Limits.max_connections)
    if "keepalive_timeout" in limits:
        values["request_line_timeout"] = limits["keepalive_timeout"]
    try:
        return Limits.with_defaults(**values)
    except BadInputError as exc:
        raise reader.error(("limits",), str(exc)) from None


def _access_log(reader: _Reader, text: str) -> str:
    return STDERR if text == STDERR else str(reader.base / text)
