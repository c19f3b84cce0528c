"""A throwaway PostgreSQL server for the test run, and the `database_target` fixture (SQLite and PostgreSQL).

Use with `pytest_plugins = ["postgres_server"]` in a test module. The server is made with the
machine's own PostgreSQL binaries (Debian's `postgresql` package, which scripts/bootstrap.sh
installs): `initdb` into a temporary directory, `pg_ctl start` listening only on a Unix socket
in that directory (no TCP), trust authentication, fsync off; it is stopped and its directory
removed at the end of the session. initdb refuses to run as root, so as root (CI and here) the
server runs as the `postgres` user the Debian package creates (or `nobody`), which owns the
temporary directory. Each test gets its own schema (`options=-csearch_path=...` in the URL).

Missing binaries are a test failure, not a skip: a store that claims PostgreSQL support must be
tested on it. SMKI_PG_BIN names the directory holding initdb and pg_ctl, if elsewhere.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

DATABASE = "smki_test"
_schema_numbers = itertools.count(1)


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: $SMKI_PG_BIN, Debian's /usr/lib/postgresql/N/bin (newest), or PATH."""
    candidates = [os.environ.get("SMKI_PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
                         reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for candidate in filter(None, candidates):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root, whom initdb refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


def _free_port() -> int:
    """A port number nobody listens on: it names the socket file and keys shared memory (there is no TCP)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    directory: Path
    port: int
    user: pwd.struct_passwd | None

    @property
    def superuser(self) -> str:
        return self.user.pw_name if self.user else pwd.getpwuid(os.geteuid()).pw_name

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A server program, as the server's user, in its directory."""
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        result = subprocess.run([str(self.bin_dir / command[0]), *command[1:]], cwd=self.directory, env=env,
                                capture_output=True, text=True, timeout=120, **kwargs)
        if check and result.returncode != 0:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip()}\n{tail}")
        return result

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        url = f"postgresql://{quote(self.superuser)}@/{database}?host={quote(str(self.directory), safe='')}&port={self.port}"
        return url + (f"&options={quote(f'-csearch_path={schema}', safe='')}" if schema else "")

    def new_schema(self) -> str:
        """A fresh, empty schema in the test database: one authority's store per test."""
        import psycopg

        name = f"t{os.getpid()}_{next(_schema_numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return name

    def start(self) -> None:
        data = self.directory / "data"
        self.run("initdb", "--pgdata", str(data), "--username", self.superuser, "--auth", "trust", "--encoding", "UTF8",
                 "--locale", "C", "--no-sync", "--no-instructions")
        settings = (f"-c listen_addresses='' -c unix_socket_directories='{self.directory}' -p {self.port} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60")
        self.run("pg_ctl", "--pgdata", str(data), "--log", str(self.directory / "server.log"), "--wait", "--timeout", "60",
                 "-o", settings, "start")
        self.run("createdb", "--host", str(self.directory), "--port", str(self.port), "--username", self.superuser, DATABASE)

    def stop(self) -> None:
        if (self.directory / "data" / "postmaster.pid").exists():
            self.run("pg_ctl", "--pgdata", str(self.directory / "data"), "--mode", "immediate", "--wait", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server started for this test run and stopped at its end."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin, $SMKI_PG_BIN or PATH: "
                    "install Debian's postgresql package (scripts/bootstrap.sh does) to run the PostgreSQL store tests",
                    pytrace=False)
    user = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="smki-pg-"))
    if user is not None:
        os.chown(directory, user.pw_uid, user.pw_gid)
    server = PostgresServer(bin_dir, directory, _free_port(), user)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_target(request, tmp_path) -> str:
    """Where a test's store lives: an SQLite file, or a PostgreSQL URL naming a fresh schema on the test server."""
    if request.param == "sqlite":
        return str(tmp_path / "smki.db")
    server = request.getfixturevalue("postgres_server")
    return server.url(schema=server.new_schema())
