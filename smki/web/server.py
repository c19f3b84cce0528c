"""Running the service: in this process on a thread (the repository alias, the test kit), or as
`smki serve`: worker processes sharing one port.

RunningService serves one application on its own event loop thread until `shutdown()`, which
answers the requests in flight, then runs the application's cleanup (the audit buffer flushed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

from aiohttp import web

from smki.config import Configuration, Setting
from smki.errors import EXIT_BAD_INPUT, EXIT_CONFLICT, EXIT_HSM, BadInputError, ConflictError, HsmError, SmkiError
from smki.hsm.child_env import children_get_allowed_environment
from smki.hsm.config import KeyRef, parse_key_id, parse_pkcs11_uri
from smki.hsm.pins import PinSource
from smki.web import access_log, metrics
from smki.web.app import REPOSITORY_ONLY, hosted_routes, make_app
from smki.web.settings import Limits, RepositorySettings, ServiceSettings, load_service_settings
from smki.web.tls import server_context
from smki.web.transport import GuardedRunner

SHUTDOWN_GRACE = 10.0  # seconds for requests in flight to be answered at shutdown


class RepositoryServices:
    """The Services of a repository-only service: the Librarian's RepositoryService, and nothing to issue."""

    def __init__(self, service, build: str) -> None:
        self._service, self.build = service, build

    def repository(self):
        return self._service

    def health(self) -> dict[str, str]:
        self._service.connection().execute("SELECT 1").fetchone()
        return {"store": "ok"}

    def _absent(self, *_: Any) -> Any:
        raise BadInputError("this service hosts the repository only")

    issuing_oca = issuing_dca = librarian = register = _absent


class RunningService:
    """An aiohttp application served on its own thread and event loop (port 0: a free port)."""

    def __init__(self, app: web.Application, limits: Limits, address: str = "127.0.0.1", port: int = 0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._app, self._limits, self._ssl = app, limits, ssl_context
        self._requested = (address, port)
        self._loop = asyncio.new_event_loop()
        self._runner: GuardedRunner | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="smki-service", daemon=True)
        self.address: tuple[str, int] = (address, port)

    def start(self) -> "RunningService":
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # noqa: BLE001 - handed to start(), in the caller's thread
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        left = asyncio.all_tasks(self._loop)  # connections the cleanup closed, still unwinding
        for task in left:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        self._loop.close()

    async def _start(self) -> None:
        self._runner = GuardedRunner(self._app, self._limits, shutdown_timeout=SHUTDOWN_GRACE)
        await self._runner.setup()
        site = web.TCPSite(self._runner, *self._requested, ssl_context=self._ssl, backlog=1024, reuse_address=True)
        await site.start()
        host, port = site._server.sockets[0].getsockname()[:2]  # noqa: SLF001 - the port the system picked
        self.address = (host, port)

    @property
    def server_address(self) -> tuple[str, int]:
        return self.address

    @property
    def url(self) -> str:
        """The service's base URL, e.g. http://127.0.0.1:41234."""
        host, port = self.address
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"

    def wait(self) -> None:
        """Block until the service stops (signals are handled between bounded waits)."""
        while self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def shutdown(self) -> None:
        """Answer the requests in flight, close the connections, stop the thread (once; later calls do nothing)."""
        if self._thread.is_alive() and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()

    def __enter__(self) -> "RunningService":
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def serve_repository(service, address: str = "127.0.0.1", port: int = 0, *,
                     repository: RepositorySettings | None = None, limits: Limits | None = None,
                     ssl_context: ssl.SSLContext | None = None, build: str | None = None, **limit_values) -> RunningService:
    """The SMKI Repository web service for `service` (a RepositoryService), started on a thread.
    `limit_values` (max_connections, max_connections_per_client, request_timeout, request_line_timeout,
    max_other_body_bytes) make the Limits when `limits` is not given."""
    limits = limits or Limits.with_defaults(**{"max_other_body_bytes": REPOSITORY_BODY_BYTES,
                                               "max_connections": REPOSITORY_MAX_CONNECTIONS, **limit_values})
    settings = ServiceSettings(path=None, address=address, port=port, workers=1, repository=repository or RepositorySettings(),
                               limits=limits, **({"build": build} if build else {}))
    app = make_app(RepositoryServices(service, settings.build), settings, route_modules=REPOSITORY_ONLY)
    return RunningService(app, limits, address, port, ssl_context).start()


REPOSITORY_BODY_BYTES = 16 * 1024  # a search or retrieve request is a few hundred bytes
REPOSITORY_MAX_CONNECTIONS = 256  # `smki librarian serve`'s bound since it began (64 from one address)


# -- `smki serve`: worker processes on one port ------------------------------------------------------------------

WORKER_START_TIMEOUT = 120.0  # seconds for a worker to open its actors and listen
RESTART_PAUSE = 1.0  # seconds between restarts of a worker that keeps dying
log = logging.getLogger("smki.web")


class SecretName(enum.StrEnum):
    """The secrets a service reads once, in the parent, and hands to its workers through the spawn pipe."""

    REPOSITORY_API_KEY = "repository api key"
    TLS_KEY = "TLS key passphrase"
    OCA_PIN = "issuing-oca PIN"
    OCA_AUDIT_PIN = "issuing-oca audit PIN"
    DCA_PIN = "issuing-dca PIN"
    DCA_AUDIT_PIN = "issuing-dca audit PIN"
    LIBRARIAN_AUDIT_PIN = "librarian audit PIN"


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is started with (pickled through the spawn pipe: never argv, never the environment).
    The secrets are `PinSource.given` values: out of every repr."""

    settings_path: Path
    port: int  # the port the parent reserved (the file may say 0)
    secrets: Mapping[SecretName, PinSource]
    log_level: int = logging.WARNING  # the parent's (smki -v, -q, SMKI_LOG_LEVEL)


class OneLineFormatter(logging.Formatter):
    """`smki serve: worker N: level: message`, and of an exception only its kind: a traceback never reaches the log."""

    def __init__(self, index: int) -> None:
        super().__init__(f"smki serve: worker {index}: %(levelname)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        kind = f" ({record.exc_info[0].__name__})" if record.exc_info and record.exc_info[0] else ""
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None})
        return super().format(record) + kind


def configure_worker_logging(index: int, level: int) -> None:
    """A spawned worker starts with no logging: smki's and aiohttp's records go to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(index))
    for name in ("smki", "aiohttp"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def read_secrets(settings: ServiceSettings) -> dict[SecretName, PinSource]:
    """Every secret the service needs, read once from its source (env:, fd:, prompt), kept out of reprs."""
    sources: dict[SecretName, PinSource | None] = {
        SecretName.REPOSITORY_API_KEY: settings.repository.api_key_source,
        SecretName.TLS_KEY: settings.tls.key_pin_source if settings.tls else None,
        SecretName.OCA_PIN: _source(settings.issuing_oca, Setting.PIN_SOURCE),
        SecretName.OCA_AUDIT_PIN: _source(settings.issuing_oca, Setting.AUDIT_PIN_SOURCE),
        SecretName.DCA_PIN: _source(settings.issuing_dca, Setting.PIN_SOURCE),
        SecretName.DCA_AUDIT_PIN: _source(settings.issuing_dca, Setting.AUDIT_PIN_SOURCE),
        SecretName.LIBRARIAN_AUDIT_PIN: _source(settings.librarian, Setting.AUDIT_PIN_SOURCE),
    }
    return {name: PinSource.given(source.read(str(name)), str(name)) for name, source in sources.items() if source is not None}


def _source(configuration: Configuration | None, setting: Setting) -> PinSource | None:
    value = configuration.get(setting) if configuration is not None else None
    return PinSource.parse(str(value.value), f"{configuration.where(setting)}: {setting}") if value is not None else None


class WorkerServices:
    """One worker's actors, each opened when first used and kept for the worker's life (its own HSM session).
    Called on the worker's single actor thread only."""

    def __init__(self, settings: ServiceSettings, secrets: Mapping[SecretName, PinSource]) -> None:
        self.settings, self.build, self._secrets = settings, settings.build, secrets
        self._opened: dict[str, Any] = {}

    def _once(self, name: str, open_it):
        if name not in self._opened:
            self._opened[name] = open_it()
        return self._opened[name]

    def _secret(self, name: SecretName) -> PinSource | None:
        return self._secrets.get(name)

    def _configured(self, configuration: Configuration | None, what: str) -> Configuration:
        if configuration is None:
            raise BadInputError(f"{self.settings.path}: {what}: not configured: this service does not host it")
        return configuration

    def issuing_oca(self):
        return self._once("issuing_oca", lambda: open_issuing(self._configured(self.settings.issuing_oca, "issuing_oca"),
                                                              self._secret(SecretName.OCA_PIN), self._secret(SecretName.OCA_AUDIT_PIN)))

    def issuing_dca(self):
        return self._once("issuing_dca", lambda: open_issuing(self._configured(self.settings.issuing_dca, "issuing_dca"),
                                                              self._secret(SecretName.DCA_PIN), self._secret(SecretName.DCA_AUDIT_PIN)))

    def librarian(self):
        return self._once("librarian", lambda: open_librarian(self._configured(self.settings.librarian, "librarian"),
                                                              self._secret(SecretName.LIBRARIAN_AUDIT_PIN)))

    def repository(self):
        def open_it():
            key = self._secret(SecretName.REPOSITORY_API_KEY)
            return self.librarian().web_application(api_key=key.read() if key else None, published=self.settings.repository.published)
        return self._once("repository", open_it)

    def register(self):
        def open_it():
            from smki.register import SubscriberRegister  # the register's branch: SubscriberRegister(database)
            if self.settings.database is None:
                raise BadInputError(f"{self.settings.path}: database: not configured: the subscriber register needs it")
            return SubscriberRegister(self.settings.database)
        return self._once("register", open_it)

    def open(self) -> None:
        """Open everything the service hosts before the first request: the repository's store, the register, and each
        Issuing Authority checked ready (its state, adopted policy, HSM login and key): a wrong PIN or a missing key
        stops the service's start (exit 4), not its first request."""
        if self.settings.librarian is not None:
            self.repository()
        if self.settings.database is not None:
            self.register()
        for name in ("issuing_oca", "issuing_dca"):
            if getattr(self.settings, name) is not None:
                getattr(self, name)().check_ready()

    def health(self) -> dict[str, str]:
        """The cheapest checks: the repository's store answers a SELECT; each opened authority is reported open."""
        checks = {}
        if self.settings.librarian is not None:
            self.repository().connection().execute("SELECT 1").fetchone()
            checks["store"] = "ok"
        for name in ("issuing_oca", "issuing_dca"):
            if getattr(self.settings, name) is not None:
                checks[name] = "ready" if name in self._opened else "not opened yet"
        return checks

    def close(self) -> None:
        for actor in self._opened.values():
            close = getattr(actor, "close", None)
            if close is not None:
                close()
        self._opened.clear()


def _value(configuration: Configuration, setting: Setting):
    value = configuration.get(setting)
    return value.value if value is not None else None


def _key(configuration: Configuration, uri_setting: Setting) -> KeyRef | None:
    uri = _value(configuration, uri_setting)
    module = _value(configuration, Setting.MODULE) or ""
    if uri is not None:
        key = parse_pkcs11_uri(str(uri))
        return key.with_module(module) if module and not key.module_path else key
    if uri_setting is Setting.KEY_URI and _value(configuration, Setting.TOKEN) and _value(configuration, Setting.KEY_LABEL):
        return KeyRef(str(_value(configuration, Setting.TOKEN)), str(_value(configuration, Setting.KEY_LABEL)),
                      parse_key_id(str(_value(configuration, Setting.KEY_ID))), module)
    return None


def open_issuing(configuration: Configuration, pin: PinSource | None, audit_pin: PinSource | None):
    """The Issuing Authority an issuing-oca/-dca configuration file describes (as its CLI commands would open it)."""
    from smki.issuing import IssuingAuthority

    certificate = _value(configuration, Setting.ISSUER_CERTIFICATE)
    return IssuingAuthority(_value(configuration, Setting.STATE), certificate=Path(certificate) if certificate else None,
                            key=_key(configuration, Setting.KEY_URI), pin=pin, policy=_value(configuration, Setting.POLICY),
                            environment=_value(configuration, Setting.ENVIRONMENT),
                            actor=str(_value(configuration, Setting.ACTOR) or configuration.authority or "service"),
                            audit_key=_key(configuration, Setting.AUDIT_KEY), audit_pin=audit_pin)


def open_librarian(configuration: Configuration, audit_pin: PinSource | None):
    from smki.librarian import Librarian

    return Librarian(_value(configuration, Setting.DATABASE), actor=str(_value(configuration, Setting.ACTOR) or "librarian"),
                     audit_key=_key(configuration, Setting.AUDIT_KEY), audit_pin=audit_pin)


def reuse_port_socket(address: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT: each worker binds its own, the kernel spreads connections among them."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        raise ConflictError(f"cannot listen on {address}:{port}: {exc.strerror}") from None
    return sock


def event_loop_runner() -> asyncio.Runner:
    """The worker's event loop: uvloop's when it is installed (optional, `pip install smki[serve]`: its sockets and TLS
    cost a served repository request ~8 % less worker CPU than asyncio's), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def worker_main(spec: WorkerSpec, index: int, events) -> None:
    """A worker process (spawned): its own settings, actors, HSM sessions and event loop; SIGTERM
    stops it gracefully (requests in flight answered, the audit buffer flushed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent stops the workers
    try:
        configure_worker_logging(index, spec.log_level)
        settings = dataclasses.replace(load_service_settings(spec.settings_path), port=spec.port)
        access_log.configure(settings.access_log)
        services = WorkerServices(settings, spec.secrets)
        tls_key = spec.secrets.get(SecretName.TLS_KEY)
        context = server_context(settings.tls, tls_key.read() if tls_key else None) if settings.tls and not settings.tls.proxy else None
        app = make_app(services, settings, route_modules=hosted_routes(settings))
        with event_loop_runner() as runner:
            runner.run(_serve_worker(app, settings, context, lambda: events.put(("ready", index, os.getpid()))))
    except SmkiError as exc:
        events.put(("failed", index, str(exc), exc.exit_code))
        sys.exit(exc.exit_code)
    except (OSError, ssl.SSLError) as exc:
        events.put(("failed", index, f"{type(exc).__name__}: {exc}", EXIT_BAD_INPUT))
        sys.exit(EXIT_BAD_INPUT)


PROCESSOR = -1  # the batch processor's index among the service's processes
PURGE_EVERY = 3600.0  # seconds between purges of batch results past the policy's retention period


def processor_main(spec: WorkerSpec, index: int, events) -> None:
    """The batch processor (spawned beside the workers when the service hosts the Issuing DCA): claims approved
    batches from the queue, one at a time, and runs each through the DCA's batch issuance (its own signing
    processes); purges results past retention. SIGTERM stops it between batches; one still running when the
    parent's grace runs out is killed with it, and resumed by the next processor to take its lease (here after a
    restart, or on another host sharing the store), with no duplicate and no gap."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        configure_worker_logging(index, spec.log_level)
        settings = load_service_settings(spec.settings_path)
        services = WorkerServices(settings, spec.secrets)
        dca = services.issuing_dca()
        dca.check_ready()
        events.put(("ready", index, os.getpid()))
        workers = _value(settings.issuing_dca, Setting.WORKERS)
        chunk = {"chunk_size": _value(settings.issuing_dca, Setting.CHUNK_SIZE)} if settings.issuing_dca.get(Setting.CHUNK_SIZE) else {}
    except SmkiError as exc:
        events.put(("failed", index, str(exc), exc.exit_code))
        sys.exit(exc.exit_code)
    last_purge = -PURGE_EVERY
    while not stopping.is_set():
        try:
            if time.monotonic() - last_purge >= PURGE_EVERY:
                last_purge = time.monotonic()
                dca.purge_batches()
            dca.process_batches(stop=stopping.is_set, workers=workers, once=True, lease_seconds=settings.batches.lease_seconds, **chunk)
        except SmkiError as exc:  # one batch's failure (audited by the actor) must not stop the queue: logged, retried at its lease's end
            log.error("batch processor: %s", exc)
        stopping.wait(settings.batches.poll_seconds)
    services.close()


async def _serve_worker(app: web.Application, settings: ServiceSettings, context: ssl.SSLContext | None, ready) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = GuardedRunner(app, settings.limits, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    site = web.SockSite(runner, reuse_port_socket(settings.address, settings.port), ssl_context=context, backlog=1024)
    await site.start()
    ready()
    await stop.wait()
    await runner.cleanup()  # stops listening, answers requests in flight, then the app's cleanup (audit flush)


class ServiceProcesses:
    """The parent of `smki serve`: reads the secrets, reserves the port, starts the workers (spawn), restarts
    one that dies, and on SIGTERM or SIGINT stops them all gracefully."""

    def __init__(self, settings: ServiceSettings) -> None:
        if settings.path is None:
            raise BadInputError("smki serve needs a configuration file")
        self.settings = settings
        self._stop = threading.Event()
        self._context = multiprocessing.get_context("spawn")
        with children_get_allowed_environment():
            resource_tracker.ensure_running()  # started now (the queue needs it), it never sees the operator's secrets
        self._events = self._context.Queue()
        self._workers: dict[int, multiprocessing.process.BaseProcess] = {}

    def start(self) -> str:
        """Start every worker and wait until each listens; the service's URL. SmkiError if one cannot start."""
        secrets = read_secrets(self.settings)
        if self.settings.tls is not None and not self.settings.tls.proxy:
            tls_key = secrets.get(SecretName.TLS_KEY)
            try:  # refused here, once, rather than by every worker
                server_context(self.settings.tls, tls_key.read() if tls_key else None)
            except (OSError, ssl.SSLError) as exc:
                raise BadInputError(f"{self.settings.path}: tls: the certificate, key or client CA will not load: {exc.strerror or exc}") from None
        # Held (bound, never listening) for the service's life: port 0 becomes one port every worker binds.
        self._reserved = reuse_port_socket(self.settings.address, self.settings.port)
        self.port = self._reserved.getsockname()[1]
        self._metrics_dir = tempfile.mkdtemp(prefix="smki-metrics-")
        os.environ[metrics.MULTIPROCESS_ENV] = self._metrics_dir  # before any worker starts: each inherits it
        self._spec = WorkerSpec(self.settings.path, self.port, secrets, logging.getLogger("smki").getEffectiveLevel())
        indexes = set(range(self.settings.workers))
        if self.settings.issuing_dca is not None and self.settings.batches.processor:
            indexes.add(PROCESSOR)
        for index in sorted(indexes):
            self._spawn(index)
        self._await_ready(indexes)
        host = self.settings.address if ":" not in self.settings.address else f"[{self.settings.address}]"
        return f"{self.settings.scheme}://{host}:{self.port}"

    def _spawn(self, index: int) -> None:
        target, name = (processor_main, "smki-batch-processor") if index == PROCESSOR else (worker_main, f"smki-worker-{index}")
        process = self._context.Process(target=target, args=(self._spec, index, self._events), name=name)
        with children_get_allowed_environment(also=worker_environment_names()):
            process.start()  # the secrets travel in the spawn pipe; the environment holds none of them
        self._workers[index] = process

    def _await_ready(self, waiting: set[int]) -> None:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while waiting:
            try:
                event = self._events.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise HsmError(f"a worker did not start within {WORKER_START_TIMEOUT:g} s") from None
            if event[0] == "failed":
                self.stop()
                raise _failure(event[2], event[3])
            waiting.discard(event[1])

    def request_stop(self, *_: Any) -> None:
        self._stop.set()

    def serve(self) -> None:
        """Until request_stop (the signal handlers): restart any worker that dies."""
        while not self._stop.is_set():
            sentinels = {process.sentinel: index for index, process in self._workers.items()}
            for ready in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                if self._stop.is_set():
                    break
                self._restart(sentinels[ready])

    def _restart(self, index: int) -> None:
        dead = self._workers[index]
        dead.join()
        log.error("smki serve: worker %d (pid %s) ended with exit %s: restarting it", index, dead.pid, dead.exitcode)
        metrics.worker_gone(dead.pid)
        time.sleep(RESTART_PAUSE)
        self._spawn(index)
        try:
            self._await_ready({index})
        except SmkiError as exc:
            log.error("smki serve: worker %d could not restart: %s", index, exc)
            self._stop.set()

    def stop(self) -> None:
        """SIGTERM to every worker (each answers its requests in flight), then wait; kill one that hangs."""
        for process in self._workers.values():
            if process.is_alive():
                process.terminate()
        for process in self._workers.values():
            process.join(SHUTDOWN_GRACE + 5)
            if process.is_alive():
                log.error("smki serve: worker pid %s did not stop: killed", process.pid)
                process.kill()
                process.join()
        self._workers.clear()
        reserved = getattr(self, "_reserved", None)
        if reserved is not None:
            reserved.close()
        metrics_dir = getattr(self, "_metrics_dir", None)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def worker_environment_names() -> set[str]:
    """What a worker needs beyond any smki child's environment (smki.hsm.child_env): the metrics directory,
    and PostgreSQL's client variables (PGPASSWORD, PGSSLMODE, ...), since a worker opens its store itself."""
    return {metrics.MULTIPROCESS_ENV} | {name for name in os.environ if name.startswith("PG")}


def _failure(message: str, exit_code: int) -> SmkiError:
    kind = {EXIT_BAD_INPUT: BadInputError, EXIT_HSM: HsmError, EXIT_CONFLICT: ConflictError}.get(exit_code, SmkiError)
    return kind(f"a worker could not start: {message}")
