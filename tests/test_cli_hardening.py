"""Second hostile review of issue 12's fixes: non-UTF-8 and hostile values never crash the process
nor exit 70 (A); one client address cannot lock everyone out of the web service (B); no file is read
without bound, nor a FIFO waited on (C); no URI attribute text is echoed, and issue-batch outputs
naming one file are refused before anything is issued (D).

Cases that reach PKCS#11 run in a child process: a native crash there fails the test instead of
killing pytest.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from test_secrets_and_options import (DOCUMENTED_EXIT_CODES, ORG_POLICY, REPO, _argv_reaching_the_secret, all_commands,
                                      options, run_in_process)

from smki.errors import EXIT_BAD_INPUT

TESTS = Path(__file__).resolve().parent
UNDECODABLE = b"\xff\xfe".decode(errors="surrogateescape")  # what Python makes of argv bytes that are not UTF-8
CHILD_MEMORY = 1 << 30  # a child that reads without bound fails with MemoryError rather than taking the machine


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY))


def run_child(code: str, payload, timeout: float = 240, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, list]:
    """Run `code` in a child Python (tests/ and the checkout importable) with `payload` as JSON on
    stdin; it prints one JSON line per result. Returns the process and the results it printed."""
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(TESTS)!r}]\n{code}"],
                            input=json.dumps(payload), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                            start_new_session=True, preexec_fn=_limit_memory)
    return result, [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


# The child runs each argv through smki's main() in process, printing the case before and the
# result after: a native crash leaves the case it died on as the last line.
RUN_ARGVS = """
import getpass, json, sys
from test_secrets_and_options import run_in_process
def end_of_input(prompt=""):
    raise EOFError
getpass.getpass = end_of_input
for argv in json.load(sys.stdin):
    print(json.dumps({"running": argv}), flush=True)
    code, out, err = run_in_process(argv)
    print(json.dumps({"argv": argv, "code": code, "out": out, "err": err}), flush=True)
"""


def run_argvs_in_child(argvs: list[list[str]], cwd: Path) -> list[dict]:
    result, lines = run_child(RUN_ARGVS, argvs, cwd=cwd)
    finished = [line for line in lines if "code" in line]
    last = lines[-1] if lines else None
    assert result.returncode == 0 and len(finished) == len(argvs), (result.returncode, last, result.stderr[-2000:])
    return finished


def _value_slots(command: click.Command) -> list[click.Parameter]:
    """Every option that takes a value, and every argument."""
    return [p for p in command.params if isinstance(p, click.Argument)] + [o for o in options(command) if not o.is_flag]


# -- A: non-UTF-8 and hostile values --------------------------------------------------------------

def test_an_undecodable_value_anywhere_on_the_command_line_is_refused_before_any_command_runs(tmp_path):
    """Every value slot of every command (found by walking the command tree), given bytes that are
    not UTF-8: one line, exit 3, naming the option (or the position), never the value; nothing runs."""
    cases = []
    for path, command in all_commands():
        for param in _value_slots(command):
            if isinstance(param, click.Argument):
                cases.append((list(path) + [UNDECODABLE], None))
            else:
                cases.append((list(path) + [param.opts[0], UNDECODABLE], param.opts[0]))
                cases.append((list(path) + [f"{param.opts[0]}=QZ{UNDECODABLE}"], param.opts[0]))
    assert len(cases) > 200
    results = run_argvs_in_child([argv for argv, _ in cases], cwd=tmp_path)
    for (argv, option), result in zip(cases, results):
        lines = result["err"].strip().splitlines()
        where = (argv, result["code"], result["err"])
        assert result["code"] == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("smki: error: command-line argument"), where
        assert option is None or option in lines[0], where
        assert "\\udcff" not in lines[0] and "\\xff" not in lines[0] and "QZ" not in lines[0], where
    assert not any(tmp_path.iterdir())


HOSTILE_URIS = ["pkcs11:token=%ff%fe;object=k;id=%01", "pkcs11:token={token};object=%ff%fe;id=%01",
                "pkcs11:token={token};object=k%00;id=%01", "pkcs11:token=" + "x" * 33 + ";object=k;id=%01",
                "pkcs11:token=" + "%c3%bc" * 17 + ";object=k;id=%01", "pkcs11:token={token};object=k;id=%01?module-path=%ff",
                "pkcs11:token=%00;object=k;id=%01", "pkcs11:token={token};object=k;id=%01;pin123456"]
# Token labels over 32 bytes of UTF-8, and NULs. (A long key label is a valid one: not given, it would make a key.)
HOSTILE_TOKEN_LABELS = ["x" * 33, "\u00fc" * 17, "a\x00b", "\x00"]
HOSTILE_TEXT = ["a\x00b", "\x00"]


def test_hostile_pkcs11_values_reaching_every_command_never_crash_nor_exit_70(tmp_path, hsm_token):
    """Every key URI, token and key-label option of every command, with values the PKCS#11 module
    cannot take (not UTF-8 once percent-decoded, NUL, a token label over 32 bytes), in command lines
    that reach the token: a documented exit code, no traceback, no native crash."""
    cases = []
    for path, command in all_commands():
        for option in options(command):
            name = option.opts[0]
            values = ([uri.format(token=hsm_token.label) for uri in HOSTILE_URIS] if name.endswith("-uri")
                      else HOSTILE_TOKEN_LABELS if name in ("--token", "--label")
                      else HOSTILE_TEXT if name in ("--key-label", "--module") else [])
            for value in values:
                work = tmp_path / f"run{len(cases)}"
                work.mkdir()
                cases.append(_argv_reaching_the_secret(path, command, option, value, work, f"pkcs11:token={hsm_token.label};object=none;id=%7f",
                                                       hsm_token.label))
    assert len(cases) > 100
    for result in run_argvs_in_child(cases, cwd=tmp_path):
        where = (result["argv"], result["code"], result["err"])
        assert result["code"] in DOCUMENTED_EXIT_CODES and "Traceback" not in result["out"] + result["err"], where
        assert len(result["err"].strip().splitlines()) <= 1 and "pin123456" not in result["out"] + result["err"], where


HSM_FLOOR_CALLS = """
import json, os, sys
from smki.errors import BadInputError
from smki.hsm.config import KeyRef, default_module_path
from smki.hsm.keys import find_key_pair, find_public_key, generate_p256_key_pair
from smki.hsm.session import get_token, open_session
from smki.hsm.softhsm import init_token
token, label = json.load(sys.stdin)
module = default_module_path()
session = open_session(module, token, os.environ["SMKI_TEST_PIN"], rw=True)
calls = {
    "find_public_key": lambda: find_public_key(session, label, b"\\x01"),
    "find_key_pair": lambda: find_key_pair(session, label),
    "generate": lambda: generate_p256_key_pair(session, label, b"\\x7e\\x5c"),
    "get_token": lambda: get_token(module, label),
    "open_session": lambda: open_session(module, label, None),
    "init_token": lambda: init_token(label, "123456", "123456"),
    "KeyRef": lambda: KeyRef(label, "k", b"\\x01"),
    "KeyRef label": lambda: KeyRef(token, label, b"\\x01"),
    "KeyRef module": lambda: KeyRef(token, "k", b"\\x01", label),
}
for name, call in calls.items():
    print(json.dumps({"running": name}), flush=True)
    try:
        call()
        outcome = "accepted"
    except BadInputError as exc:
        outcome = "refused: " + str(exc)
    print(json.dumps({"call": name, "outcome": outcome}), flush=True)
"""


@pytest.mark.parametrize("label", [UNDECODABLE, "k\x00", "\udcff" * 3], ids=["surrogates", "nul", "lone-surrogates"])
def test_the_hsm_floor_refuses_a_label_it_cannot_pass_to_pkcs11(hsm_token, label):
    # The reported crash: python-pkcs11's get_objects on a surrogate-escaped label ("double free", rc 134).
    result, lines = run_child(HSM_FLOOR_CALLS, [hsm_token.label, label])
    outcomes = {line["call"]: line["outcome"] for line in lines if "call" in line}
    assert result.returncode == 0 and len(outcomes) == 9, (result.returncode, lines[-1:], result.stderr[-2000:])
    for name, outcome in outcomes.items():
        assert outcome.startswith("refused: ") and ("UTF-8" in outcome or "NUL" in outcome), (name, outcome)
        assert label not in outcome and repr(label)[1:-1] not in outcome, (name, outcome)


def _real_cli(*args: str | bytes, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real CLI with raw argv bytes, as a shell passes $'\\xff\\xfe'."""
    return subprocess.run([sys.executable, "-m", "smki.cli.main", *args], capture_output=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})}, timeout=120, start_new_session=True, cwd=REPO, preexec_fn=_limit_memory)


def test_the_reported_command_lines_are_one_line_refusals(tmp_path, hsm_token):
    state = str(tmp_path / "state")
    reported = [
        ["hsm", "pubkey", "--token", hsm_token.label, "--key-label", b"\xff\xfe", "--key-id", "01", "--out", str(tmp_path / "p.pem")],
        ["hsm", "keygen", "--token", b"\xff\xfe", "--key-label", "k", "--key-id", "01", "--pin-source", "env:SMKI_TEST_PIN", "--state", state],
        ["hsm", "pubkey", "--key-uri", "pkcs11:token=%ff"],
        ["ca", "revoke", b"\xff\xfe", "--policy", str(ORG_POLICY), "--state", state, "--reason", "keyCompromise"],
        ["policy", "adopt", str(ORG_POLICY), "--state", state, "--actor", b"\xff\xfe"],
        ["policy", "adopt", str(ORG_POLICY), "--state", state, b"--actor=\xff\xfe"],
    ]
    for argv in reported:
        result = _real_cli(*argv)
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        assert result.returncode == EXIT_BAD_INPUT and len(lines) == 1 and lines[0].startswith("smki: error: "), (argv, result)
    assert not (tmp_path / "state").exists() and not (tmp_path / "p.pem").exists()


@pytest.mark.parametrize("actor", ["", "  ", "eve\x1b[2J", "bob\u202eecila", "a\nb", "x" * 129, "nul\x00"])
def test_an_actor_that_is_not_printable_text_is_refused_and_never_audited(tmp_path, actor):
    state = tmp_path / "state"
    code, out, err = run_in_process(["policy", "adopt", str(ORG_POLICY), "--state", str(state), "--actor", actor])
    lines = err.strip().splitlines()
    assert code == EXIT_BAD_INPUT and len(lines) == 1 and "--actor" in lines[0], (code, err)
    assert not state.exists()
    assert run_in_process(["policy", "adopt", str(ORG_POLICY), "--state", str(state), "--actor", "Zoë Operator"])[0] == 0


def test_a_serial_that_is_not_hex_is_refused_where_it_enters(tmp_path):
    state = tmp_path / "state"
    assert run_in_process(["policy", "adopt", str(ORG_POLICY), "--state", str(state)])[0] == 0
    before = (state / "smki.db").read_bytes()
    for command, extra in (("revoke", ["--policy", str(ORG_POLICY), "--reason", "keyCompromise"]), ("reject", ["--policy", str(ORG_POLICY)]),
                           ("show", [])):
        for serial in ("zz", "\x01", "\u202e01", "0" * 41, "", ":"):
            code, out, err = run_in_process(["ca", command, serial, "--state", str(state), *extra])
            lines = err.strip().splitlines()
            assert code == EXIT_BAD_INPUT and len(lines) == 1 and "serial" in lines[0], (serial, code, err)
            assert lines[0].isprintable() and ("octets" in lines[0] or "hexadecimal" in lines[0]), (serial, err)
            assert (state / "smki.db").read_bytes() == before  # refused before anything, audit included


# -- B: one client address cannot lock everyone out -----------------------------------------------

@pytest.fixture
def service(tmp_path):
    from smki.librarian.repository_service import RepositoryService
    from smki.store import open_database

    open_database(tmp_path / "repo.db", create=True).close()
    published = tmp_path / "published"
    (published / "crl").mkdir(parents=True)
    return RepositoryService(lambda: open_database(tmp_path / "repo.db"), {"k3y"}, published)


def _serve(service, **options):
    from smki.web.server import serve_repository

    return serve_repository(service, **options)


def _connect(address, source: str = "127.0.0.1") -> socket.socket:
    connection = socket.create_connection(address, timeout=10, source_address=(source, 0))
    return connection


def _get(address, path: str, source: str = "127.0.0.1") -> bytes:
    """A GET's status line, from `source` (another loopback address is another client)."""
    with _connect(address, source) as connection:
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return connection.recv(4096).split(b"\r\n")[0]


def _answer_now(connection: socket.socket) -> bytes:
    connection.settimeout(2)
    try:
        return connection.recv(4096)
    except TimeoutError:
        return b"(nothing)"


def test_idle_sockets_from_one_address_do_not_lock_other_clients_out(service):
    """The reported attack: one address holds every connection it can. By default it gets a quarter
    of the bound; the next connection from it is answered 503 at once; another client is served."""
    from smki.web.server import REPOSITORY_MAX_CONNECTIONS as MAX_CONNECTIONS

    server = _serve(service)
    address = server.server_address
    held = []
    try:
        for _ in range(MAX_CONNECTIONS // 4):
            held.append(_connect(address))
        time.sleep(0.3)  # every held connection has its thread
        over = _connect(address)
        held.append(over)
        assert _answer_now(over).startswith(b"HTTP/1.1 503"), "a connection over the per-client cap is answered 503 at once"
        assert _get(address, "/index.json?apikey=k3y", source="127.0.0.2") == b"HTTP/1.1 402 Payment Required"
        held.pop(0).close()  # a slot of that address is free again once one of its connections ends
        time.sleep(0.3)
        assert _get(address, "/index.json?apikey=k3y") == b"HTTP/1.1 402 Payment Required"
    finally:
        for connection in held:
            connection.close()
        server.shutdown()


def test_the_per_client_cap_is_configurable_and_below_the_global_bound(service):
    server = _serve(service, max_connections=8, max_connections_per_client=2)
    address = server.server_address
    held = [_connect(address), _connect(address)]
    try:
        time.sleep(0.3)
        held.append(_connect(address))
        assert _answer_now(held[-1]).startswith(b"HTTP/1.1 503")
        for source in ("127.0.0.2", "127.0.0.3"):
            held += [_connect(address, source), _connect(address, source)]
        time.sleep(0.3)
        held.append(_connect(address, "127.0.0.4"))  # 6 held, under the bound of 8: served
        held[-1].sendall(b"GET /index.json?apikey=k3y HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer_now(held[-1]).startswith(b"HTTP/1.1 402")
    finally:
        for connection in held:
            connection.close()
        server.shutdown()


def test_a_connection_that_sends_no_request_is_closed_long_before_the_request_timeout(service):
    from smki.web.settings import Limits

    assert Limits.request_line_timeout <= 5 < Limits.request_timeout
    server = _serve(service, request_line_timeout=1.0)
    address = server.server_address
    try:
        silent, slow = _connect(address), _connect(address)
        started = time.monotonic()
        slow.sendall(b"GET /index.json?apikey=k3y HT")  # a request under way has the whole request timeout
        silent.settimeout(8)
        assert silent.recv(100) == b"" and time.monotonic() - started < 4, "an idle connection is closed after the request-line timeout"
        time.sleep(0.5)
        slow.sendall(b"TP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert _answer_now(slow).startswith(b"HTTP/1.1 402")
        kept = _connect(address)  # a keep-alive connection idle after its answer: closed after the same short wait
        kept.sendall(b"GET /index.json?apikey=k3y HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _answer_now(kept).startswith(b"HTTP/1.1 402")
        kept.settimeout(8)
        started = time.monotonic()
        assert kept.recv(100) == b"" and time.monotonic() - started < 4
        for connection in (silent, slow, kept):
            connection.close()
    finally:
        server.shutdown()


# -- C: reading files with no size bound ----------------------------------------------------------

def test_published_files_are_read_bounded_and_only_when_regular(service, capfd):
    from smki.files import MAX_CRL_BYTES

    published = service.published_dir
    with open(published / "crl" / "HUGE.crl", "wb") as sparse:  # over the CRL bound, without using the disk
        sparse.truncate(MAX_CRL_BYTES + 1)
    (published / "crl" / "GOOD.crl").write_bytes(b"\x30\x00")
    server = _serve(service)
    address = server.server_address
    try:
        assert _get(address, "/crl/GOOD.crl?apikey=k3y") == b"HTTP/1.1 200 OK"
        assert _get(address, "/crl/HUGE.crl?apikey=k3y") == b"HTTP/1.1 500 Internal Server Error"
        (published / "crl" / "ZERO.crl").symlink_to("/dev/zero")
        os.mkfifo(published / "index.json")
        started = time.monotonic()
        assert _get(address, "/crl/ZERO.crl?apikey=k3y") == b"HTTP/1.1 500 Internal Server Error"
        assert _get(address, "/index.json?apikey=k3y") == b"HTTP/1.1 500 Internal Server Error"
        assert time.monotonic() - started < 5
        assert _get(address, "/crl/ABSENT.crl?apikey=k3y") == b"HTTP/1.1 402 Payment Required"
    finally:
        server.shutdown()
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("smki librarian serve: published file refused: ") for line in lines), lines
    assert "not a regular file" in lines[1] + lines[2] and "limit" in lines[0]


OPEN_BATCH = """
import json, sys
from smki.requests.batch import open_batch, BatchRefused
for path in json.load(sys.stdin):
    print(json.dumps({"running": path}), flush=True)
    try:
        open_batch(path, 50000)
        outcome = "accepted"
    except BatchRefused as exc:
        outcome = "refused: " + str(exc)
    print(json.dumps({"path": path, "outcome": outcome}), flush=True)
"""


def test_a_batch_that_is_no_regular_file_is_refused_before_it_is_read(tmp_path):
    """/dev/zero (or a link to it) once grew to gigabytes; a FIFO hung forever. In a child process
    with bounded memory and time, so that the old behaviour fails the test instead of the machine."""
    os.mkfifo(tmp_path / "fifo.zip")
    (tmp_path / "zero.zip").symlink_to("/dev/zero")
    entries = tmp_path / "entries"
    entries.mkdir()
    os.mkfifo(entries / "a.csr")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "a.csr").symlink_to("/dev/zero")
    paths = [str(tmp_path / "fifo.zip"), str(tmp_path / "zero.zip"), "/dev/zero", str(entries), str(linked)]
    started = time.monotonic()
    result, lines = run_child(OPEN_BATCH, paths, timeout=30)
    outcomes = {line["path"]: line["outcome"] for line in lines if "path" in line}
    assert result.returncode == 0 and len(outcomes) == len(paths), (lines[-1:], result.stderr[-1000:])
    assert time.monotonic() - started < 20
    for path, outcome in outcomes.items():
        assert outcome.startswith("refused: ") and "not a regular file" in outcome, (path, outcome)


# -- D: no URI text echoed; outputs naming one file ----------------------------------------------

@pytest.mark.parametrize("uri", ["pkcs11:token=t;object=k;id=%02;pin123456", "pkcs11:token=t;object=k;id=%02;pin123456=1",
                                 "pkcs11:token=t;object=k;id=%02?pin123456", "pkcs11:token=t;pin123456;object=k;id=%02"])
def test_a_key_uri_attribute_is_never_echoed(tmp_path, uri):
    for option in ("--key-uri", "--audit-key-uri"):
        argv = (["hsm", "pubkey", "--key-uri", uri] if option == "--key-uri"
                else ["policy", "adopt", str(ORG_POLICY), "--state", str(tmp_path / "state"), "--audit-key-uri", uri])
        code, out, err = run_in_process(argv)
        lines = err.strip().splitlines()
        assert code == EXIT_BAD_INPUT and len(lines) == 1 and "pkcs11 URI" in lines[0], (argv, code, err)
        assert "pin123456" not in out + err


def test_issue_batch_outputs_naming_one_file_are_refused_before_anything(tmp_path):
    batch = tmp_path / "batch.zip"
    batch.write_bytes(b"PK\x05\x06" + bytes(18))
    state = tmp_path / "state"
    common = ["ca", "issue-batch", "--token", "t", "--key-label", "k", "--key-id", "01", "--pin-source", "env:SMKI_TEST_PIN",
              "--policy", str(ORG_POLICY), "--state", str(state), "--environment", "test", "--issuer-cert", str(tmp_path / "i.pem"),
              "--requester", "supplier", "--device-type", "ESME"]
    x = tmp_path / "x"
    (tmp_path / "sub").mkdir()
    for response, status in ((x, x), (x, tmp_path / "sub" / ".." / "x"), (batch, tmp_path / "s.csv"), (tmp_path / "r.zip", batch)):
        code, out, err = run_in_process([*common, "--response", str(response), "--status", str(status), str(batch)])
        lines = err.strip().splitlines()
        assert code == EXIT_BAD_INPUT and len(lines) == 1 and "same file" in lines[0], (response, status, code, err)
        assert not state.exists() and not x.exists()
