"""The subscriber register (smki.register.SubscriberRegister), `smki subscribers` and `smki tls lab-credentials`.

Client certificates are made here with cryptography's builder from a CA of the test's own (not the code under
test), or by `smki tls lab-credentials` and then checked with openssl. The register runs on SQLite and on the
PostgreSQL server the tests start (tests/postgres_server.py).
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from smki.audit import verify_trail
from smki.audit.verify import rows_from_database
from smki.errors import BadInputError, ConflictError
from smki.register import (Interface, Match, RefusalReason, RequestEntry, RequestOutcome, SubscriberRefused,
                           SubscriberRegister, SubscriberStatus)
from smki.register.lab_credentials import make_lab_credentials
from smki.store import open_database
from smki.store.audit_log import entries_and_checkpoints

from conftest import PIN_ENV, openssl

pytest_plugins = ["postgres_server"]

EUI = "90-B3-D5-1F-30-01-00-00"
NOW = datetime.now(timezone.utc)


# ---- a test CA of the test's own ----------------------------------------------------------------

class TestCa:
    __test__ = False

    def __init__(self, name: str = "Test Transport CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])

    def issue(self, key=None, *, cn: str = "client", not_before: datetime | None = None, days: int = 30) -> bytes:
        """A client certificate (DER) for `key` (a new one by default)."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        start = not_before or NOW - timedelta(days=1)
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(key.public_key())
                       .serial_number(x509.random_serial_number()).not_valid_before(start)
                       .not_valid_after(start + timedelta(days=days)).sign(self.key, hashes.SHA256()))
        return certificate.public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def ca() -> TestCa:
    return TestCa()


def pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


def sha256(der: bytes) -> str:
    import hashlib

    return hashlib.sha256(der).hexdigest()


def audit_rows(database) -> list[dict]:
    connection = open_database(database)
    try:
        return entries_and_checkpoints(connection)[0]
    finally:
        connection.close()


def chain_ok(database) -> None:
    connection = open_database(database)
    try:
        report = verify_trail(*rows_from_database(connection), None)
    finally:
        connection.close()
    assert report.ok, report.problem


def refusal(register, der, interface=Interface.ADHOC_DEVICE, **kwargs) -> SubscriberRefused:
    with pytest.raises(SubscriberRefused) as caught:
        register.identify(der, interface, **kwargs)
    assert "\n" not in str(caught.value) and caught.value.exit_code == 1
    return caught.value


# ---- the register's operations, on both backends -------------------------------------------------

def test_add_suspend_resume_remove_are_audited_and_the_trail_verifies(database_target, ca, run_smki):
    der = ca.issue()
    with SubscriberRegister(database_target, actor="alice") as register:
        added = register.add("acme-supplier", EUI, ["supplier", "03"], ["adhoc-device", Interface.BATCH_DEVICE], certificate=pem(der))
        assert added.subscriber.roles[1].camel_name == "networkOperator" and added.certificates[0].fingerprint == sha256(der)
        assert register.suspend("acme-supplier").subscriber.status is SubscriberStatus.SUSPENDED
        with pytest.raises(ConflictError, match="is suspended: it cannot be made suspended"):
            register.suspend("acme-supplier")
        assert register.resume("acme-supplier").subscriber.status is SubscriberStatus.ACTIVE
        assert register.remove("acme-supplier").subscriber.status is SubscriberStatus.REMOVED
        with pytest.raises(ConflictError, match="removed"):
            register.resume("acme-supplier")
        with pytest.raises(ConflictError, match="names are never reused"):
            register.add("acme-supplier", EUI, ["supplier"], ["adhoc-device"], certificate=ca.issue())
        with pytest.raises(ConflictError, match="already registered to subscriber 'acme-supplier'"):
            register.add("acme-two", EUI, ["supplier"], ["adhoc-device"], fingerprint=sha256(der).upper())
        with pytest.raises(BadInputError, match="no subscriber named 'nobody'"):
            register.suspend("nobody")
        [listed] = register.list()
        assert listed.subscriber.status is SubscriberStatus.REMOVED and listed.created_at <= listed.changed_at

    rows = audit_rows(database_target)
    assert [(r["actor"], r["operation"], r["outcome"]) for r in rows] == [
        ("alice", "subscriber.add", "success"), ("alice", "subscriber.suspend", "success"),
        ("alice", "subscriber.suspend", "refused"), ("alice", "subscriber.resume", "success"),
        ("alice", "subscriber.remove", "success"), ("alice", "subscriber.resume", "refused"),
        ("alice", "subscriber.add", "refused"), ("alice", "subscriber.add", "refused"), ("alice", "subscriber.suspend", "refused")]
    assert json.loads(rows[0]["subject"]) == {"subscriber": "acme-supplier", "match": "fingerprint", "fingerprint": sha256(der)}
    assert json.loads(rows[0]["details"]) == {"eui64": "90B3D51F30010000", "roles": ["02", "03"],
                                              "interfaces": ["adhoc-device", "batch-device"]}
    result = run_smki("audit", "verify", "--db", str(database_target))
    assert result.returncode == 0 and "audit chain intact: 9 entries" in result.stdout, result.stderr


def test_malformed_values_are_refused_where_they_enter(tmp_path, ca):
    register = SubscriberRegister(tmp_path / "r.db")
    for kwargs, message in [
            (dict(name="bad name", eui64=EUI, roles=["supplier"], interfaces=["portal"]), "subscriber name"),
            (dict(name="a", eui64="123", roles=["supplier"], interfaces=["portal"]), "malformed EUI-64"),
            (dict(name="a", eui64=EUI, roles=[], interfaces=["portal"]), "at least one RemotePartyRole"),
            (dict(name="a", eui64=EUI, roles=["chef"], interfaces=["portal"]), "unknown RemotePartyRole"),
            (dict(name="a", eui64=EUI, roles=["supplier"], interfaces=["teleport"]), "unknown interface"),
            (dict(name="a", eui64=EUI, roles=["supplier"], interfaces=["portal"], fingerprint="ab" * 31), "64 hex digits"),
            (dict(name="a", eui64=EUI, roles=["supplier"], interfaces=["portal"]), "one of them"),
            (dict(name="a", eui64=EUI, roles=["supplier"], interfaces=["portal"], fingerprint="ab" * 32, match="issuer-and-key"),
             "needs the certificate itself"),
            (dict(name="a", eui64=EUI, roles=["supplier"], interfaces=["portal"], certificate=b"junk"), "client certificate: neither DER nor PEM"),
    ]:
        with pytest.raises(BadInputError, match=message):
            register.add(**kwargs)
    assert register.list() == []
    assert {r["outcome"] for r in audit_rows(tmp_path / "r.db")} == {"refused"}


# ---- identify --------------------------------------------------------------------------------------

def test_identify_refuses_each_reason(database_target, ca):
    active, suspended, removed, unknown = ca.issue(), ca.issue(), ca.issue(), ca.issue()
    register = SubscriberRegister(database_target)
    register.add("acme", EUI, ["supplier"], ["adhoc-device", "organisation"], certificate=active)
    register.add("paused", EUI, ["supplier"], ["adhoc-device"], certificate=suspended)
    register.add("gone", EUI, ["supplier"], ["adhoc-device"], certificate=removed)
    register.suspend("paused")
    register.remove("gone")

    found = register.identify(active, "adhoc-device")
    assert found.name == "acme" and found.status is SubscriberStatus.ACTIVE
    assert register.identify(active, Interface.ORGANISATION) == found
    cases = [
        (refusal(register, unknown), RefusalReason.UNKNOWN, f"client certificate SHA-256 {sha256(unknown)}: not registered"),
        (refusal(register, suspended), RefusalReason.SUSPENDED, "'paused' is suspended"),
        (refusal(register, removed), RefusalReason.REMOVED, "'gone' was removed"),
        (refusal(register, active, Interface.BATCH_DEVICE), RefusalReason.INTERFACE, "not granted the batch-device interface"),
        (refusal(register, active, now=NOW + timedelta(days=40)), RefusalReason.EXPIRED, "expired on"),
        (refusal(register, active, now=NOW - timedelta(days=2)), RefusalReason.NOT_YET_VALID, "not valid before"),
        (refusal(register, b"\x30\x03\x02\x01\x01"), RefusalReason.UNREADABLE, "not a DER X.509 certificate"),
    ]
    for caught, reason, message in cases:
        assert caught.reason is reason and message in str(caught)
    expired = ca.issue(not_before=NOW - timedelta(days=60), days=30)
    register.add("late", EUI, ["supplier"], ["adhoc-device"], certificate=expired)
    assert refusal(register, expired).reason is RefusalReason.EXPIRED  # registered, but past its validity now
    with pytest.raises(BadInputError, match="unknown interface"):
        register.identify(active, "teleport")


def test_fingerprint_matches_one_certificate_and_issuer_and_key_matches_its_renewals(database_target, ca):
    other_ca = TestCa("Another Transport CA")
    pinned_key, renewed_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    register = SubscriberRegister(database_target)
    register.add("pinned", EUI, ["supplier"], ["portal"], certificate=ca.issue(pinned_key))
    first = ca.issue(renewed_key)
    added = register.add("renewable", EUI, ["supplier"], ["portal"], certificate=first, match=Match.ISSUER_AND_KEY)
    assert added.certificates[0].match is Match.ISSUER_AND_KEY and added.certificates[0].issuer == "CN=Test Transport CA"

    pinned_renewal = ca.issue(pinned_key)
    assert refusal(register, pinned_renewal, Interface.PORTAL).reason is RefusalReason.UNKNOWN  # same key, new certificate
    assert len(register.add_certificate("pinned", certificate=pinned_renewal).certificates) == 2  # registered by hand
    assert register.identify(pinned_renewal, Interface.PORTAL).name == "pinned"
    with pytest.raises(ConflictError, match="already registered to subscriber 'pinned'"):
        register.add_certificate("renewable", certificate=pinned_renewal)
    register.remove_certificate("pinned", sha256(pinned_renewal).upper())  # e.g. its key was compromised
    assert refusal(register, pinned_renewal, Interface.PORTAL).reason is RefusalReason.UNKNOWN
    with pytest.raises(BadInputError, match="has no client certificate with fingerprint"):
        register.remove_certificate("pinned", sha256(pinned_renewal))
    register.remove_certificate("renewable", sha256(first))  # an issuer-and-key entry, by the certificate it was made from
    assert refusal(register, renewal := ca.issue(renewed_key), Interface.PORTAL).reason is RefusalReason.UNKNOWN
    register.add_certificate("renewable", certificate=renewal, match="issuer-and-key")
    renewal = ca.issue(renewed_key, cn="renewed")
    assert sha256(renewal) != sha256(first)
    assert register.identify(renewal, Interface.PORTAL).name == "renewable"
    assert refusal(register, other_ca.issue(renewed_key), Interface.PORTAL).reason is RefusalReason.UNKNOWN  # another issuer
    with pytest.raises(ConflictError, match="already registered"):  # the same issuer and key, again
        register.add("again", EUI, ["supplier"], ["portal"], certificate=renewal, match="issuer-and-key")

    fingerprint_only = ca.issue()
    register.add("by-fingerprint", EUI, ["other"], ["portal"], fingerprint=":".join(re.findall("..", sha256(fingerprint_only).upper())))
    assert register.identify(fingerprint_only, Interface.PORTAL).name == "by-fingerprint"
    register.remove("by-fingerprint")
    with pytest.raises(ConflictError, match="removed: it takes no new certificate"):
        register.add_certificate("by-fingerprint", certificate=ca.issue())
    with pytest.raises(BadInputError, match="no subscriber named"):
        register.add_certificate("nobody", fingerprint="ab" * 32)
    assert [r["operation"] for r in audit_rows(database_target) if r["outcome"] == "success"].count("subscriber.certificate.add") == 2


def test_a_change_made_elsewhere_takes_effect_within_5_seconds_and_ones_own_at_once(tmp_path, ca):
    database, der = tmp_path / "service.db", ca.issue()
    operator = SubscriberRegister(database, actor="operator")
    operator.add("acme", EUI, ["supplier"], ["adhoc-device"], certificate=der)
    worker = SubscriberRegister(database)  # another worker process's register, in effect
    assert worker.identify(der, "adhoc-device").name == "acme"
    operator.suspend("acme")
    assert worker.identify(der, "adhoc-device").name == "acme"  # served from the worker's cache for now
    started = time.monotonic()
    while True:
        try:
            worker.identify(der, "adhoc-device")
        except SubscriberRefused as refused:
            assert refused.reason is RefusalReason.SUSPENDED
            break
        assert time.monotonic() - started < 5, "a suspension made elsewhere was not seen within 5 s"
        time.sleep(0.1)
    worker.resume("acme")  # the worker's own change: at once
    assert worker.identify(der, "adhoc-device").name == "acme"
    operator.close()
    worker.close()


# ---- the request audit trail -------------------------------------------------------------------------

def test_audit_requests_appends_many_entries_in_one_transaction(database_target, ca):
    der = ca.issue()
    register = SubscriberRegister(database_target)
    entries = [RequestEntry(Interface.ADHOC_DEVICE, "submit", "SUCCESS", RequestOutcome.SUCCESS, subscriber="acme",
                            fingerprint=sha256(der), client_id=f"req-{n}", address="127.0.0.1") for n in range(300)]
    entries.append(RequestEntry("batch-device", "result", "FORMAT_ERROR", "refused", subscriber="acme", fingerprint=sha256(der),
                                client_id="x" * 1000, code="FM:AA3"))
    entries.append(RequestEntry("adhoc-device", "submit", "403", "refused", fingerprint=sha256(der)))
    assert register.audit_requests(entries) == 302
    assert register.audit_requests([]) == 0
    with pytest.raises(BadInputError, match="takes request entries, not dict"):
        register.audit_requests([entries[0], {"interface": "portal"}])

    @dataclass(frozen=True)
    class WebRecord:  # the shape of smki.web's own request audit records
        at: str
        interface: str
        operation: str
        subscriber: str | None
        fingerprint: str | None
        address: str
        outcome: str
        status: str
        code: str | None = None
        client_id: str | None = None

    assert register.audit_requests([WebRecord("2026-12-02T15:00:00.000+00:00", "adhoc-device", "/1.0/AdHocDeviceCSR", "acme",
                                              sha256(der), "::1", "answered", "CSR_ERROR", "CR:CC1", "r-9")]) == 1
    rows = audit_rows(database_target)
    assert len(rows) == 303 and {r["operation"] for r in rows} == {"service.request"}
    assert (rows[302]["time"], rows[302]["outcome"], json.loads(rows[302]["details"])) == (
        "2026-12-02T15:00:00.000+00:00", "success", {"status": "CSR_ERROR", "code": "CR:CC1", "address": "::1"})
    assert json.loads(rows[0]["subject"]) == {"interface": "adhoc-device", "operation": "submit", "subscriber": "acme",
                                              "fingerprint": sha256(der), "client_id": "req-0"}
    assert json.loads(rows[0]["details"]) == {"status": "SUCCESS", "code": None, "address": "127.0.0.1"}
    assert json.loads(rows[300]["subject"])["client_id"] == "x" * 256 and rows[300]["outcome"] == "refused"
    assert rows[301]["actor"] == "unidentified caller"
    chain_ok(database_target)


def test_request_entries_check_their_values():
    for kwargs, message in [(dict(interface="teleport"), "unknown interface"), (dict(status="two words"), "status"),
                            (dict(operation=""), "operation"), (dict(code="FM:AA1\nforged"), "code"),
                            (dict(fingerprint="zz"), "64 hex digits"), (dict(subscriber="two words"), "subscriber name")]:
        with pytest.raises(BadInputError, match=message):
            RequestEntry(**{**dict(interface="portal", operation="submit", status="SUCCESS", outcome="success"), **kwargs})
    with pytest.raises(ValueError):
        RequestEntry("portal", "submit", "SUCCESS", "maybe")


def test_an_audit_key_signs_the_register_s_checkpoints(tmp_path, ca, new_hsm_key, run_smki):
    key, signer = new_hsm_key("register-audit")
    register = SubscriberRegister(tmp_path / "r.db", audit_key=key, audit_pin=os.environ[PIN_ENV], actor="alice")
    register.add("acme", EUI, ["supplier"], ["portal"], certificate=ca.issue())
    register.close()
    from cryptography.hazmat.primitives.serialization import PublicFormat

    (tmp_path / "audit.pub").write_bytes(signer.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    result = run_smki("audit", "verify", "--db", str(tmp_path / "r.db"), "--public-key", str(tmp_path / "audit.pub"))
    assert result.returncode == 0 and "1 entries" in result.stdout and "checkpoint" in result.stdout, result.stdout + result.stderr


# ---- the CLI -----------------------------------------------------------------------------------------

def test_subscribers_cli_exit_codes_and_json(tmp_path, ca, run_smki):
    der = ca.issue()
    (tmp_path / "client.pem").write_bytes(pem(der))
    (tmp_path / "service.yaml").write_text(yaml.safe_dump({"kind": "service", "database": "state/service.db"}))
    config = ("--config", str(tmp_path / "service.yaml"))
    added = run_smki("subscribers", "add", *config, "--name", "acme", "--eui64", EUI, "--role", "supplier", "--role", "03",
                     "--interface", "all", "--certificate", str(tmp_path / "client.pem"), "--actor", "alice", "--json")
    assert added.returncode == 0, added.stderr
    summary = json.loads(added.stdout)
    assert summary["name"] == "acme" and summary["roles"] == ["supplier", "networkOperator"] and summary["status"] == "active"
    assert summary["interfaces"] == sorted(i.value for i in Interface) and summary["certificates"][0]["fingerprint"] == sha256(der)
    assert (tmp_path / "state" / "service.db").is_file()  # relative to the configuration file
    database = ("--database", str(tmp_path / "state" / "service.db"))

    def code(*args: str) -> tuple[int, str]:
        result = run_smki("subscribers", *args)
        assert "Traceback" not in result.stderr
        if result.returncode not in (0, 2):
            assert result.stderr.startswith("smki: error: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result.returncode, result.stderr

    assert code("add", *database, "--name", "acme", "--eui64", EUI, "--role", "supplier", "--interface", "portal",
                "--fingerprint", "ab" * 32)[0] == 5
    assert code("add", *database, "--name", "two", "--eui64", EUI, "--role", "supplier", "--interface", "portal",
                "--certificate", str(tmp_path / "client.pem"))[0] == 5
    assert code("add", *database, "--name", "two", "--eui64", "XYZ", "--role", "supplier", "--interface", "portal",
                "--fingerprint", "ab" * 32)[0] == 3
    assert code("add", *database, "--name", "two", "--eui64", EUI, "--role", "supplier", "--interface", "portal",
                "--fingerprint", "ab" * 32, "--match", "issuer-and-key")[0] == 3
    assert code("add", *database, "--name", "two", "--eui64", EUI, "--role", "supplier", "--interface", "nowhere",
                "--fingerprint", "ab" * 32)[0] == 2
    assert code("list")[0] == 2  # no register named
    assert code("list", "--database", str(tmp_path / "missing.db"))[0] == 3
    assert not (tmp_path / "missing.db").exists()
    assert code("suspend", *database, "nobody")[0] == 3
    renewal = ca.issue()
    assert code("add-certificate", *database, "acme", "--fingerprint", sha256(renewal), "--json")[0] == 0
    assert code("add-certificate", *database, "acme", "--fingerprint", sha256(renewal))[0] == 5
    assert code("remove-certificate", *database, "acme", "--fingerprint", sha256(renewal), "--json")[0] == 0
    assert code("remove-certificate", *database, "acme", "--fingerprint", sha256(renewal))[0] == 3
    assert code("suspend", *config, "acme", "--json")[0] == 0
    assert code("suspend", *database, "acme")[0] == 5
    assert code("resume", *database, "acme")[0] == 0
    assert code("remove", *database, "acme")[0] == 0
    listed = run_smki("subscribers", "list", *database, "--json")
    assert listed.returncode == 0 and [row["status"] for row in json.loads(listed.stdout)] == ["removed"]
    assert "acme" in run_smki("subscribers", "list", *database).stdout
    help_text = run_smki("subscribers", "add", "--help").stdout
    assert "--match" in help_text and "issuer-and-key" in help_text and "--interface" in help_text
    rows = audit_rows(tmp_path / "state" / "service.db")
    assert [r["operation"] for r in rows if r["outcome"] == "success"] == [
        "subscriber.add", "subscriber.certificate.add", "subscriber.certificate.remove", "subscriber.suspend",
        "subscriber.resume", "subscriber.remove"]
    assert {r["actor"] for r in rows[:1]} == {"alice"}


# ---- lab credentials -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lab") / "credentials"
    result = subprocess.run([sys.executable, "-m", "smki.cli.main", "tls", "lab-credentials", str(directory), "--host",
                             "smki.lab.example", "--host", "192.0.2.7", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return directory, json.loads(result.stdout)


def text_of(path: Path) -> str:
    result = openssl("x509", "-in", str(path), "-noout", "-text", "-nameopt", "RFC2253")
    assert result.returncode == 0, result.stderr
    return result.stdout.decode()


def test_lab_credentials_are_rsa_2048_sha256_with_the_iki_subjects(lab):
    directory, summary = lab
    ca = directory / "lab-transport-ca.pem"
    clients = {client["role"]: client for client in summary["clients"]}
    assert set(clients) == {"supplier", "networkOperator", "other", "issuingAuthority"}
    for path in [directory / "server.pem", *(directory / c["certificate"] for c in summary["clients"])]:
        verified = openssl("verify", "-CAfile", str(ca), str(path))
        assert verified.returncode == 0 and b": OK" in verified.stdout, verified.stderr
        text = text_of(path)
        assert "Public-Key: (2048 bit)" in text and "Signature Algorithm: sha256WithRSAEncryption" in text
        assert "Issuer: CN=SMKI LAB ONLY Transport CA (not IKI),O=SMKI Lab" in text
    ca_text = text_of(ca)
    assert "CA:TRUE, pathlen:0" in ca_text and "Public-Key: (2048 bit)" in ca_text

    for role, ou in [("supplier", "02"), ("networkOperator", "03"), ("other", "7F"), ("issuingAuthority", "07")]:
        client = clients[role]
        text = text_of(directory / client["certificate"])
        assert f"Subject: CN={client['name']},OU={ou},O=SMKI Lab {role}" in text
        assert "TLS Web Client Authentication" in text
        fingerprint = openssl("x509", "-in", str(directory / client["certificate"]), "-noout", "-fingerprint", "-sha256")
        assert fingerprint.stdout.decode().strip().split("=")[1].replace(":", "").lower() == client["fingerprint"]
        assert stat.S_IMODE((directory / client["key"]).stat().st_mode) == 0o600
        assert openssl("pkey", "-in", str(directory / client["key"]), "-noout").returncode == 0
    assert clients["supplier"]["name"] == "lab-supplier" and clients["issuingAuthority"]["name"] == "lab-operator"
    assert clients["issuingAuthority"]["interfaces"] == ["operator", "portal"]
    assert "operator" not in clients["supplier"]["interfaces"]

    server = text_of(directory / "server.pem")
    assert "TLS Web Server Authentication" in server
    assert re.search(r"DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, DNS:smki\.lab\.example, "
                     r"IP Address:192\.0\.2\.7", server), server
    assert stat.S_IMODE((directory / "server.key.pem").stat().st_mode) == 0o600
    assert json.loads((directory / "credentials.json").read_text())["clients"] == summary["clients"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["credentials.json", "lab-transport-ca.pem", "server.pem", "server.key.pem",
         *(c[k] for c in summary["clients"] for k in ("certificate", "key"))])  # no CA key kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _handshake(directory: Path, client: str, ca: Path) -> subprocess.CompletedProcess:
    port = _free_port()
    server = subprocess.Popen(["openssl", "s_server", "-accept", str(port), "-cert", str(directory / "server.pem"),
                               "-key", str(directory / "server.key.pem"), "-CAfile", str(directory / "lab-transport-ca.pem"),
                               "-Verify", "1", "-verify_return_error", "-tls1_2", "-quiet"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
                               "-cert", str(client), "-key", str(client).replace(".pem", ".key.pem"), "-CAfile", str(ca),
                               "-verify_return_error", "-verify_hostname", "localhost", "-tls1_2"],
                              input=b"", capture_output=True, timeout=30)
    finally:
        server.kill()
        server.wait()


def test_lab_credentials_make_a_mutual_tls_handshake(lab, tmp_path):
    directory, _ = lab
    ok = _handshake(directory, directory / "client-supplier.pem", directory / "lab-transport-ca.pem")
    assert ok.returncode == 0 and b"Verify return code: 0 (ok)" in ok.stdout, ok.stdout[-600:] + ok.stderr[-600:]
    other = make_lab_credentials(tmp_path / "other", roles=["supplier"], operator=False)  # another lab's CA
    refused = _handshake(directory, other.clients[0].certificate, directory / "lab-transport-ca.pem")
    assert refused.returncode != 0 and b"alert" in refused.stderr, refused.stdout[-600:] + refused.stderr[-600:]


def test_lab_credentials_never_overwrite_and_can_register_their_clients(tmp_path, run_smki):
    directory = tmp_path / "lab"
    directory.mkdir()
    (directory / "client-other.key.pem").write_text("mine")
    refused = run_smki("tls", "lab-credentials", str(directory))
    assert refused.returncode == 5 and "client-other.key.pem already exists" in refused.stderr
    assert [p.name for p in directory.iterdir()] == ["client-other.key.pem"]  # nothing written
    assert (directory / "client-other.key.pem").read_text() == "mine"

    made = run_smki("tls", "lab-credentials", str(tmp_path / "registered"), "--role", "supplier", "--no-operator",
                    "--register", "--database", str(tmp_path / "service.db"), "--actor", "alice", "--json")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["registered"] is True and [c["name"] for c in summary["clients"]] == ["lab-supplier"]
    der = x509.load_pem_x509_certificate((tmp_path / "registered" / "client-supplier.pem").read_bytes()).public_bytes(Encoding.DER)
    subscriber = SubscriberRegister(tmp_path / "service.db").identify(der, Interface.ADHOC_DEVICE)
    assert subscriber.name == "lab-supplier" and subscriber.eui64.hyphenated == summary["clients"][0]["eui64"]

    again = run_smki("tls", "lab-credentials", str(tmp_path / "again"), "--role", "supplier", "--no-operator",
                     "--register", "--database", str(tmp_path / "service.db"))
    assert again.returncode == 5 and "already holds lab-supplier" in again.stderr
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())
    assert run_smki("tls", "lab-credentials", str(tmp_path / "x"), "--database", str(tmp_path / "service.db")).returncode == 2
    assert run_smki("tls", "lab-credentials", str(tmp_path / "y"), "--host", "bad host!").returncode == 3
