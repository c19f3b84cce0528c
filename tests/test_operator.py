"""Operator conventions (issue 14, part 4): --dry-run, logging, Ctrl-C, shell completion, --json everywhere.

Every command runs as the real `smki` CLI in a subprocess, against this module's own test PKI on the
suite's SoftHSM token; what a dry run leaves is checked on the state's files and tables themselves.
"""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import csr_factory as f
from conftest import PIN_ENV, openssl, smki
from smki.testing import Hierarchy, TestPKI, authority_name
from test_batch_issuance import START, batch_args, database, device, issuing_options, statuses, write_zip
from test_ceremony import PASSPHRASES, SOURCES as CEREMONY_SOURCES, workspace


@pytest.fixture(scope="module")
def pki(tmp_path_factory, hsm_token):
    """This module's own test PKI: its tests issue, revoke and interrupt, and compare its states byte for byte."""
    with TestPKI.create(tmp_path_factory.mktemp("operator"), token=hsm_token, not_before=START) as made:
        yield made


ORG, DEV = Hierarchy.ORGANISATION, Hierarchy.DEVICE


def state_dir(pki, hierarchy: Hierarchy) -> Path:
    return pki.state(authority_name("issuing", hierarchy))


# Run in a child process: this process holds SQLite connections to the states (the TestPKI's authorities), and
# closing any other descriptor of a database file drops every POSIX lock this process holds on it; a writer in
# another process would then take the state for unused and checkpoint its log away under those connections.
_SNAPSHOT = """
import hashlib, json, shutil, sqlite3, sys, tempfile
from pathlib import Path
directory = Path(sys.argv[1])
files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(directory.iterdir())
         if path.is_file() and not path.name.endswith("-shm") and not (path.name.endswith("-wal") and path.stat().st_size == 0)}
with tempfile.TemporaryDirectory() as copy:
    for name in files:
        shutil.copyfile(directory / name, Path(copy) / name)
    connection = sqlite3.connect(Path(copy) / "smki.db")
    tables = {table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
              for table in ("certificates", "audit_entries", "revocations", "batches", "batch_entries", "crl_numbers")}
    head = connection.execute("SELECT seq, entry_hash FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
    connection.close()
print(json.dumps({"files": files, "tables": tables, "head": head}))
"""


def snapshot_of(directory: Path) -> dict:
    """What a dry run must leave as it was: the database and its write-ahead log byte for byte, and the tables'
    contents read independently (from a copy). Not the -shm file (SQLite's shared-memory index, which any reader
    updates), nor an empty log (which a read-only open may create, as `ca show` does): neither holds state."""
    result = subprocess.run([sys.executable, "-c", _SNAPSHOT, str(directory)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def snapshot(pki, hierarchy: Hierarchy) -> dict:
    return snapshot_of(state_dir(pki, hierarchy))


def public_key_file(directory: Path, name: str = "subject.pub") -> Path:
    path = directory / name
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return path


def ca_issue_org(pki, csr: Path, out: Path, *extra: str, requester: str = "supplier") -> list[str]:
    return ["ca", "issue-org", *issuing_options(pki, ORG), "--environment", "test", "--requester", requester,
            "--not-before", "2026-02-01", "--out", str(out), *extra, str(csr)]


def cert_organisation(pki, public_key: Path, out: Path, *extra: str, requester: str = "supplier") -> list[str]:
    return ["cert", "organisation", *issuing_options(pki, ORG), "--environment", "test", "--public-key", str(public_key),
            "--requester", requester, "--role", "supplier", "--entity-id", "90-B3-D5-1F-30-01-00-00", "--usage", "DS",
            "--common-name", "SUPPLIER", "--not-before", "2026-02-01", "--out", str(out), *extra]


def cert_device(pki, public_key: Path, out: Path, device_id: str, *extra: str) -> list[str]:
    return ["cert", "device", *issuing_options(pki, DEV), "--environment", "test", "--public-key", str(public_key),
            "--requester", "supplier", "--device-id", device_id, "--device-type", "ESME", "--usage", "KA",
            "--not-before", "2026-02-01", "--out", str(out), *extra]


def issued_serial(result: subprocess.CompletedProcess) -> str:
    return json.loads(result.stdout)["serial"]


# -- --dry-run ---------------------------------------------------------------------------------------

def _same_certificate_but_signature(dry: dict, real_file: Path) -> None:
    """The dry run reported the certificate the real run then issued: same subject, issuer, validity, policy."""
    issued = x509.load_pem_x509_certificate(real_file.read_bytes())
    assert dry["subject"] == issued.subject.rfc4514_string() and dry["issuer"] == issued.issuer.rfc4514_string()
    assert dry["not_after"] == issued.not_valid_after_utc.isoformat()


@pytest.mark.parametrize("kind", ["ca issue-org", "cert organisation", "cert device"])
def test_a_dry_run_signs_records_and_writes_nothing_and_reports_what_the_real_run_issues(pki, tmp_path, kind):
    out = tmp_path / "out.pem"
    if kind == "ca issue-org":
        (tmp_path / "req.csr").write_bytes(f.organisation_csr(usage="key_agreement", eui64="90B3D51F30010000", role="02"))
        args, hierarchy = ca_issue_org(pki, tmp_path / "req.csr", out, "--json"), ORG
    elif kind == "cert organisation":
        args, hierarchy = cert_organisation(pki, public_key_file(tmp_path), out, "--json"), ORG
    else:
        args, hierarchy = cert_device(pki, public_key_file(tmp_path), out, "00DB0000000D0001", "--json"), DEV
    before = snapshot(pki, hierarchy)
    dry = json.loads(smki(*args, "--dry-run").stdout)
    assert snapshot(pki, hierarchy) == before, "a dry run changes no state: no record, no audit entry, no checkpoint"
    assert not out.exists() and list(tmp_path.glob(".out.pem*")) == []
    assert dry["dry_run"] is True and dry["serial"] is None and dry["file"] == str(out)
    assert dry["policy"]["version"] and dry["issuer"]
    smki(*args)  # the same command line, for real
    _same_certificate_but_signature(dry, out)
    assert snapshot(pki, hierarchy)["tables"]["certificates"] == before["tables"]["certificates"] + 1


def _root_snapshot(pki) -> dict:
    return snapshot_of(pki.state(authority_name("root", ORG)))


@pytest.mark.parametrize("command", ["root", "issuing-ca"])
def test_root_certificates_have_a_dry_run_too(pki, tmp_path, command):
    root = authority_name("root", ORG)
    args = ["cert", command, "--key-uri", pki.key(root).uri, "--pin-source", f"env:{PIN_ENV}", "--state", str(pki.state(root)),
            "--policy", str(pki.policy_file(ORG)), "--environment", "test", "--not-before", "2026-02-01", "--out", str(tmp_path / "c.pem"),
            "--json", "--dry-run"]
    if command == "issuing-ca":
        args += ["--issuer-cert", str(pki.certificate_file(root)), "--public-key", str(public_key_file(tmp_path))]
    before = _root_snapshot(pki)
    dry = json.loads(smki(*args).stdout)
    assert _root_snapshot(pki) == before and not (tmp_path / "c.pem").exists()
    root_certificate = pki.root_oca_certificate
    expected_subject = root_certificate.subject.rfc4514_string() if command == "root" else pki.issuing_oca_certificate.subject.rfc4514_string()
    assert dry["dry_run"] is True and dry["issuer"] == root_certificate.subject.rfc4514_string() and dry["subject"] == expected_subject


def test_the_python_api_takes_dry_run_too(pki):
    oca = pki.issuing_oca
    before = snapshot(pki, ORG)
    request = pki.organisation_csr("90-B3-D5-1F-30-03-00-00", role="supplier", usage="KA")
    dry = oca.issue_organisation(request.der, requester="supplier", dry_run=True)
    revocation = oca.revoke(pki.issue_organisation(request).serial_hex, "keyCompromise", dry_run=True)
    assert dry.dry_run and dry.summary()["serial"] is None and revocation.dry_run and revocation.summary()["dry_run"] is True
    after = snapshot(pki, ORG)
    assert after["tables"]["certificates"] == before["tables"]["certificates"] + 1  # the one real issuance only
    assert after["tables"]["revocations"] == before["tables"]["revocations"]


def test_a_dry_run_takes_its_settings_from_a_configuration_file(pki, tmp_path):
    authority = authority_name("issuing", ORG)
    config = tmp_path / "issuing-oca.yaml"
    config.write_text(f"""kind: issuing-oca
authority: issuing-oca
hsm:
  key_uri: "{pki.key(authority).uri}"
  pin_source: env:{PIN_ENV}
state: {pki.state(authority)}
policy: {pki.policy_file(ORG)}
environment: test
issuer_certificate: {pki.certificate_file(authority)}
""")
    (tmp_path / "req.csr").write_bytes(f.organisation_csr(eui64="90B3D51F30040000", role="02"))
    before = snapshot(pki, ORG)
    dry = json.loads(smki("ca", "issue-org", "--config", str(config), "--requester", "supplier", "--not-before", "2026-02-01",
                          "--out", str(tmp_path / "o.pem"), "--dry-run", "--json", str(tmp_path / "req.csr")).stdout)
    assert dry["dry_run"] is True and snapshot(pki, ORG) == before and not (tmp_path / "o.pem").exists()


def test_a_dry_run_says_so_in_its_text_output(pki, tmp_path):
    result = smki(*cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o.pem"), "--dry-run")
    assert result.stdout.startswith("dry run: would write") and "nothing signed, recorded or written" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("kind, code, fragment", [
    ("ineligible requester", 1, "4.1 eligibility"),
    ("single device request without an earlier certificate", 1, "single_request_requires_existing"),
    ("existing output", 5, "exists"),
    ("wrong PIN", 4, "PIN incorrect"),
])
def test_a_dry_run_refuses_as_the_real_run_does_and_records_nothing(pki, tmp_path, kind, code, fragment):
    env = None
    if kind == "ineligible requester":
        (tmp_path / "req.csr").write_bytes(f.organisation_csr(eui64="90B3D51F30020000", role="02"))
        args, hierarchy = ca_issue_org(pki, tmp_path / "req.csr", tmp_path / "o.pem", requester="networkOperator"), ORG
    elif kind == "single device request without an earlier certificate":
        (tmp_path / "d.csr").write_bytes(f.device_csr(eui64="00DB0000000D0F01"))
        args = ["ca", "issue-device", *issuing_options(pki, DEV), "--environment", "test", "--requester", "supplier",
                "--device-type", "ESME", "--not-before", "2026-02-01", "--out", str(tmp_path / "d.pem"), str(tmp_path / "d.csr")]
        hierarchy = DEV
    elif kind == "existing output":
        (tmp_path / "o.pem").write_text("already here\n")
        args, hierarchy = cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o.pem"), ORG
    else:
        args, hierarchy = cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o.pem"), ORG
        env = {PIN_ENV: "not-the-pin"}
    before = snapshot(pki, hierarchy)
    dry = smki(*args, "--dry-run", check=False, env=env)
    assert snapshot(pki, hierarchy) == before, "a refused dry run records nothing either"
    real = smki(*args, check=False, env=env)
    assert (dry.returncode, real.returncode) == (code, code)
    assert dry.stderr == real.stderr and dry.stderr.startswith("smki: error: ") and fragment in dry.stderr
    assert len(dry.stderr.strip().splitlines()) == 1 and "Traceback" not in dry.stderr


def test_dry_run_revocation_and_rejection_record_nothing_and_refuse_as_a_real_run(pki, tmp_path):
    serial = issued_serial(smki(*cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o.pem", "--json")))
    revoke = ["ca", "revoke", "--state", str(state_dir(pki, ORG)), "--policy", str(pki.policy_file(ORG)), serial,
              "--reason", "keyCompromise"]
    reject = ["ca", "reject", "--state", str(state_dir(pki, ORG)), "--policy", str(pki.policy_file(ORG)), serial]
    before = snapshot(pki, ORG)
    dry = json.loads(smki(*revoke, "--dry-run", "--json").stdout)
    assert dry["dry_run"] is True and dry["serial"] == serial and dry["method"] == "crl"
    assert smki(*reject, "--dry-run").stdout.startswith(f"dry run: would revoke {serial} (unspecified)")
    assert snapshot(pki, ORG) == before
    shown = json.loads(smki("ca", "show", "--state", str(state_dir(pki, ORG)), serial, "--json").stdout)[0]
    assert shown["status"] != "R"
    smki(*revoke)
    again_dry, again_real = smki(*revoke, "--dry-run", check=False), smki(*revoke, check=False)
    assert again_dry.returncode == again_real.returncode == 5 and "already revoked" in again_dry.stderr
    # The device policy revokes no rejected certificate: refused alike.
    device_serial = issued_serial(smki(*cert_device(pki, public_key_file(tmp_path, "d.pub"), tmp_path / "d.pem", "00DB0000000D0002", "--json")))
    device_reject = ["ca", "reject", "--state", str(state_dir(pki, DEV)), "--policy", str(pki.policy_file(DEV)), device_serial]
    before = snapshot(pki, DEV)
    dry, real = smki(*device_reject, "--dry-run", check=False), None
    assert snapshot(pki, DEV) == before
    real = smki(*device_reject, check=False)
    assert dry.returncode == real.returncode == 1 and dry.stderr == real.stderr and "revoke_on_rejection" in dry.stderr


def test_a_batch_dry_run_answers_each_request_as_the_real_run_then_does(pki, tmp_path):
    shared_key = ec.generate_private_key(ec.SECP256R1())
    entries = {f"ok-{i}.csr": device(f"00DB0000000B00{i:02X}") for i in range(6)}
    entries["twin-a.csr"] = device("00DB0000000B0100", key=shared_key)
    entries["twin-b.csr"] = device("00DB0000000B0101", key=shared_key)  # the same key: a duplicate within the batch
    entries["garbage.csr"] = b"no request here"
    batch = write_zip(tmp_path / "b.zip", entries)
    out = tmp_path / "out"
    out.mkdir()
    before = snapshot(pki, DEV)
    dry = json.loads(smki(*batch_args(pki, batch, out, "--json", "--dry-run")).stdout)
    assert snapshot(pki, DEV) == before and list(out.iterdir()) == []
    assert dry["dry_run"] is True and dry["entries"] == 9 and dry["answered_before"] == 0
    real = json.loads(smki(*batch_args(pki, batch, out, "--json")).stdout)
    assert dry["statuses"] == real["statuses"] == {"error": 2, "success": 7}
    answers = statuses(out)
    assert {answers[name]["status"] for name in ("twin-b.csr", "garbage.csr")} == {"error"}
    # Run again as a dry run: every request was answered before, nothing is left to check.
    again = json.loads(smki(*batch_args(pki, batch, tmp_path / "again", "--json", "--dry-run")).stdout)
    assert again["answered_before"] == 9 and again["statuses"] == {} and again["totals"] == real["totals"]


def test_a_batch_dry_run_refuses_an_ineligible_requester_as_the_real_run(pki, tmp_path):
    batch = write_zip(tmp_path / "b.zip", {"a.csr": device("00DB0000000B0200")})
    before = snapshot(pki, DEV)
    dry = smki(*batch_args(pki, batch, tmp_path, "--dry-run", requester="wanProvider"), check=False)
    assert snapshot(pki, DEV) == before
    real = smki(*batch_args(pki, batch, tmp_path, requester="wanProvider"), check=False)
    assert dry.returncode == real.returncode != 0 and dry.stderr == real.stderr


def test_dry_run_help_says_no_state_changes(pki):
    for command in (["ca", "issue-org"], ["ca", "issue-batch"], ["ca", "revoke"], ["cert", "device"]):
        text = " ".join(smki(*command, "--help").stdout.split())
        assert "--dry-run" in text and "the state is unchanged" in text


# -- logging -------------------------------------------------------------------------------------------

def test_verbose_logs_what_a_batch_does_on_stderr_and_json_stays_clean(pki, tmp_path):
    batch = write_zip(tmp_path / "v.zip", {f"v{i}.csr": device(f"00DB0000000C00{i:02X}") for i in range(3)})
    result = smki("-v", *batch_args(pki, batch, tmp_path, "--json"))
    assert json.loads(result.stdout)["issued"] == 3  # stdout is JSON and nothing else
    lines = result.stderr.splitlines()
    assert all(line.startswith("smki: info: ") for line in lines), lines
    text = "\n".join(lines)
    for fragment in ("3 request(s) from", "template lints clean", "worker process(es)", "3 request(s) answered", "wrote"):
        assert fragment in text, (fragment, text)
    quiet = smki("-q", *batch_args(pki, write_zip(tmp_path / "q.zip", {"q.csr": device("00DB0000000C0100")}), tmp_path / "q", "--json"))
    assert quiet.stderr == ""


def test_debug_shows_more_and_the_environment_variable_sets_the_level(pki, tmp_path):
    args = cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o.pem", "--dry-run")
    debug = smki("-vv", *args)
    assert "loaded PKCS#11 module" in debug.stderr and "[smki.hsm.session]" in debug.stderr
    by_env = smki(*args, env={"SMKI_LOG_LEVEL": "info"})
    assert "smki: info: dry run" in by_env.stderr and "loaded PKCS#11 module" not in by_env.stderr
    assert smki(*args, env={"SMKI_LOG_LEVEL": "error"}).stderr == ""
    assert "loaded PKCS#11 module" in smki("-vv", *args, env={"SMKI_LOG_LEVEL": "error"}).stderr  # a flag wins


@pytest.mark.parametrize("args, env, code, fragment", [
    (["policy", "check", "x.yaml"], {"SMKI_LOG_LEVEL": "loud"}, 3, "SMKI_LOG_LEVEL: give one of debug, info, warning, error"),
    (["-q", "-v", "policy", "check", "x.yaml"], {}, 2, "not both"),
])
def test_a_bad_log_level_is_one_line(args, env, code, fragment):
    result = smki(*args, check=False, env=env)
    assert result.returncode == code and fragment in result.stderr and "Traceback" not in result.stderr
    assert "loud" not in result.stderr


def _secrets_nowhere(result: subprocess.CompletedProcess, secrets: list[str]) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr, "a secret reached the output"


def test_no_secret_is_logged_at_debug(pki, tmp_path, hsm_token):
    """Commands at DEBUG with known secrets from environment variables and descriptors, successes and refusals:
    no PIN, passphrase or API key anywhere in what they print."""
    pin = os.environ[PIN_ENV]
    audit_pin, api_key, wrong_pin = "audit-" + pin, "api-key-" + pin[::-1], "wrong-" + pin
    secrets = [pin, audit_pin, api_key, wrong_pin]
    runs = []
    # Issuance with the PIN from the environment, and from a descriptor.
    runs.append(smki("-vv", *cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o1.pem")))
    read_end, write_end = os.pipe()
    os.write(write_end, pin.encode() + b"\n")
    os.close(write_end)
    fd_args = [arg if arg != f"env:{PIN_ENV}" else f"fd:{read_end}" for arg in cert_organisation(pki, public_key_file(tmp_path, "k2.pub"),
                                                                                                  tmp_path / "o2.pem")]
    by_fd = subprocess.run([sys.executable, "-m", "smki.cli.main", "-vv", *fd_args], capture_output=True, text=True,
                           pass_fds=(read_end,), timeout=300)
    os.close(read_end)
    assert by_fd.returncode == 0, by_fd.stderr
    runs.append(by_fd)
    # A batch (workers get the PIN through a pipe), a CRL, a refused wrong PIN, an audit key's PIN, keygen.
    runs.append(smki("-vv", *batch_args(pki, write_zip(tmp_path / "s.zip", {"s.csr": device("00DB0000000E0001")}), tmp_path)))
    runs.append(smki("-vv", "ca", "crl", *issuing_options(pki, ORG), "--out", str(tmp_path / "crl.pem")))
    runs.append(smki("-vv", *cert_organisation(pki, public_key_file(tmp_path, "k3.pub"), tmp_path / "o3.pem"), check=False,
                     env={PIN_ENV: wrong_pin}))
    assert runs[-1].returncode == 4
    runs.append(smki("-vv", "hsm", "keygen", "--key-uri", f"pkcs11:token={hsm_token.label};object=op-audit;id=%7a",
                     "--pin-source", f"env:{PIN_ENV}", "--state", str(tmp_path / "keygen-state"), "--json",
                     "--audit-key-uri", f"pkcs11:token={hsm_token.label};object=op-audit;id=%7a", "--audit-pin-source", "env:AUDIT_PIN",
                     check=False, env={"AUDIT_PIN": audit_pin}))
    runs.append(smki("-vv", "hsm", "list", "--token", hsm_token.label, "--pin-source", f"env:{PIN_ENV}", "--json"))
    # The repository service's API key.
    server = subprocess.Popen([sys.executable, "-m", "smki.cli.main", "-vv", "librarian", "serve", "--db", str(tmp_path / "lib.db"),
                              "--port", "0", "--api-key-source", "env:API_KEY", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "API_KEY": api_key})
    try:
        server.stdout.readline()
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=30)
    runs.append(subprocess.CompletedProcess(server.args, server.returncode, out, err))
    # A root-key ceremony: the custodians' passphrases from the environment.
    work = workspace(tmp_path, "OPS")
    runs.append(smki("-vv", "ceremony", "run", str(work / "ceremonies" / "root-dca.yaml"), *CEREMONY_SOURCES, "--operator", "op",
                     env=PASSPHRASES))
    assert "ceremony root-dca" in runs[-1].stderr or "ceremony " in runs[-1].stderr
    secrets += list(PASSPHRASES.values())
    assert any("loaded PKCS#11 module" in run.stderr for run in runs), "the runs logged at DEBUG"
    for run in runs:
        _secrets_nowhere(run, secrets)


# -- Ctrl-C ------------------------------------------------------------------------------------------

def _descendants(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue
            frontier += list(children - found)
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ctrl_c_stops_a_batch_with_exit_130_one_line_its_workers_and_a_consistent_state(pki, tmp_path):
    entries = {f"int-{i:05d}.csr": device(f"00DB0002{i:08X}") for i in range(3000)}
    batch = write_zip(tmp_path / "big.zip", entries)
    first = tmp_path / "first"
    first.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", *batch_args(pki, batch, first, "--chunk-size", "25")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, answered, children = time.monotonic() + 120, 0, set()
    while time.monotonic() < deadline and process.poll() is None:
        children |= _descendants(process.pid)
        with sqlite3.connect(database(pki)) as connection:
            answered = connection.execute("SELECT COUNT(*) FROM batch_entries WHERE name LIKE 'int-%'").fetchone()[0]
        if answered >= 200:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = process.communicate(timeout=60)  # the parent does not hang
    assert 0 < answered < 3000, "the interrupt must land mid-batch"
    assert process.returncode == 130 and stderr.strip() == "smki: interrupted" and stdout == ""
    assert len(children) >= 2, "the workers were seen"
    time.sleep(0.5)
    assert [pid for pid in children if _alive(pid)] == [], "no worker outlives the interrupted batch"
    assert list(first.iterdir()) == [], "no response, no status file, no temporary left behind"
    with sqlite3.connect(database(pki)) as connection:
        (batch_id,) = connection.execute("SELECT batch_id FROM batches WHERE source = ?", (str(batch),)).fetchone()
        unrecorded = connection.execute(
            "SELECT COUNT(*) FROM batch_entries e LEFT JOIN certificates c ON c.serial_hex = e.serial_hex "
            "WHERE e.batch_id = ? AND e.status = 'success' AND c.serial_hex IS NULL", (batch_id,)).fetchone()[0]
        outcome = connection.execute("SELECT outcome, details FROM audit_entries WHERE operation = 'certificate.issue.device.batch' "
                                     "ORDER BY seq DESC LIMIT 1").fetchone()
    assert unrecorded == 0, "every answer recorded has its certificate: no partial transaction"
    assert outcome[0] == "failed" and "KeyboardInterrupt" in outcome[1]
    smki("audit", "verify", "--db", str(database(pki)))
    smki("ca", "reconcile", "--state", str(state_dir(pki, DEV)))
    # The next run finishes the batch, as after any crash.
    result = json.loads(smki(*batch_args(pki, batch, tmp_path / "second", "--json", "--chunk-size", "250")).stdout)
    assert result["answered_before"] + result["issued"] == 3000 and result["totals"] == {"success": 3000}


def test_ctrl_c_at_a_pin_prompt_exits_130(pki, tmp_path):
    """A command waiting at the PIN prompt (on a pseudo-terminal) and interrupted there: exit 130, one line, nothing written."""
    import pty

    args = [arg if arg != f"env:{PIN_ENV}" else "prompt" for arg in cert_organisation(pki, public_key_file(tmp_path), tmp_path / "o.pem")]
    before = snapshot(pki, ORG)
    pid, terminal = pty.fork()
    if pid == 0:  # the child: smki on the pseudo-terminal
        os.execv(sys.executable, [sys.executable, "-m", "smki.cli.main", *args])
    output = b""
    deadline = time.monotonic() + 60
    while b"PIN" not in output and time.monotonic() < deadline:
        try:
            output += os.read(terminal, 1024)
        except OSError:
            break
    assert b"PIN" in output, output
    os.kill(pid, signal.SIGINT)
    while True:
        try:
            chunk = os.read(terminal, 1024)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    assert output.decode().splitlines()[-1].strip() == "smki: interrupted" and b"Traceback" not in output
    assert not (tmp_path / "o.pem").exists()
    after = snapshot(pki, ORG)
    assert after["tables"]["certificates"] == before["tables"]["certificates"]


# -- shell completion ---------------------------------------------------------------------------------

def _complete(words: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "smki.cli.main"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "_SMKI_COMPLETE": "bash_complete", "COMP_WORDS": words,
                                 "COMP_CWORD": str(len(words.split(" ")) - 1)})
    assert result.returncode == 0, result.stderr
    return [line.split(",", 1)[1] for line in result.stdout.splitlines()]


def test_shell_completion_sees_the_lazy_groups_and_their_commands():
    assert {"ca", "cert", "hsm", "librarian", "audit", "lint", "verify"} <= set(_complete("smki "))
    assert {"issue-org", "issue-batch", "revoke", "crl"} <= set(_complete("smki ca "))
    assert "--dry-run" in _complete("smki ca issue-org --dr")
    script = subprocess.run([sys.executable, "-m", "smki.cli.main"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "_SMKI_COMPLETE": "bash_source"})
    assert "_SMKI_COMPLETE=bash_complete" in script.stdout and "complete " in script.stdout


# -- --json everywhere --------------------------------------------------------------------------------

# Commands without --json, each for its reason. Every other command must have it.
WITHOUT_JSON = {
    "config template",  # its output is the data: a commented configuration file to edit
}


def _commands(command: click.Command, path: tuple[str, ...], context: click.Context):
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            yield from _commands(command.get_command(context, name), (*path, name), context)
    else:
        yield " ".join(path), command


def test_every_command_has_json_but_the_listed_exceptions():
    from smki.cli.main import cli

    lacking = {name for name, command in _commands(cli, (), click.Context(cli))
               if not any("--json" in parameter.opts for parameter in command.params)}
    assert lacking <= WITHOUT_JSON, sorted(lacking - WITHOUT_JSON)


def test_audit_export_json(pki, tmp_path):
    db = database(pki)
    smki("hsm", "pubkey", "--key-uri", pki.key(authority_name("issuing", DEV)).uri, "--out", str(tmp_path / "key.pem"))
    result = json.loads(smki("audit", "export", "--db", str(db), "--out", str(tmp_path / "trail.json"), "--public-key",
                             str(tmp_path / "key.pem"), "--json").stdout)
    exported = (tmp_path / "trail.json").read_bytes()
    assert result["sha256"] == hashlib.sha256(exported).hexdigest() and result["file"] == str(tmp_path / "trail.json")
    document = json.loads(exported)
    assert result["entries"] == len(document["entries"]) and result["checkpoints"] == len(document["checkpoints"])
    verified = json.loads(smki("audit", "verify", "--db", str(db), "--json").stdout)
    assert result["head"] == verified["head"]


def test_hsm_pubkey_and_softhsm_conf_json(pki, tmp_path):
    key = pki.key(authority_name("issuing", ORG))
    result = json.loads(smki("hsm", "pubkey", "--key-uri", key.uri, "--out", str(tmp_path / "k.pem"), "--json").stdout)
    assert result["file"] == str(tmp_path / "k.pem") and result["pem"] == (tmp_path / "k.pem").read_text()
    # The SKI, computed by openssl: method 2 is the last 60 bits of the SHA-1 of the key, behind 0100.
    der = openssl("pkey", "-pubin", "-in", str(tmp_path / "k.pem"), "-outform", "DER").stdout
    point = der[-65:]
    digest = bytearray(hashlib.sha1(point).digest()[-8:])
    digest[0] = 0x40 | (digest[0] & 0x0F)
    assert result["subject_key_identifier"] == bytes(digest).hex().upper()
    assert pki.issuing_oca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex().upper() \
        == result["subject_key_identifier"]
    to_stdout = json.loads(smki("hsm", "pubkey", "--key-uri", key.uri, "--json").stdout)
    assert to_stdout["file"] is None and to_stdout["pem"] == result["pem"]
    conf = json.loads(smki("hsm", "softhsm-conf", str(tmp_path / "store"), "--json").stdout)
    assert Path(conf["conf"]).is_file() and Path(conf["tokens"]).is_dir() and str(tmp_path / "store") in conf["conf"]
