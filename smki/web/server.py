"""Running the service: in this process on a thread (the repository alias, the test kit), or as
`smki serve`: worker processes sharing one port (smki.web.workers).

RunningService serves one application on its own event loop thread until `shutdown()`, which
answers the requests in flight, then runs the application's cleanup (the audit buffer flushed).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from typing import Any

from aiohttp import web

from smki.errors import BadInputError
from smki.web.app import REPOSITORY_ONLY, make_app
from smki.web.settings import Limits, RepositorySettings, ServiceSettings
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
