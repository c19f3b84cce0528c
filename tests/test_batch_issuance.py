"""`smki ca issue-batch`: per-request outcomes, the cap, duplicates, batch refusals, crash and resume."""

import base64
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import csr_factory as f
from conftest import openssl, smki
from smki.testing import Hierarchy, TestPKI, authority_name

PIN = ["--pin-source", "env:SMKI_TEST_PIN"]


START = datetime(2026, 1, 1, tzinfo=timezone.utc)  # the CA certificates' start: every batch's --not-before (2026-02-01) falls inside


@pytest.fixture(scope="module")
def dca(tmp_path_factory, hsm_token):
    """This module's own test PKI (smki.testing): the batches fill its Issuing DCA's state, and the tests count
    and cap what is in that state, so it is shared with no other module. The CLI reads the PIN from $SMKI_TEST_PIN."""
    with TestPKI.create(tmp_path_factory.mktemp("dca"), token=hsm_token, not_before=START) as pki:
        yield pki


def issuing_options(pki, hierarchy: Hierarchy = Hierarchy.DEVICE) -> list[str]:
    """What names an Issuing Authority of `pki` to an `smki ca` signing command: key, PIN, state, certificate, policy
    (the issuing commands add --environment; `ca crl` takes none)."""
    authority = authority_name("issuing", hierarchy)
    return ["--key-uri", pki.key(authority).uri, *PIN, "--state", str(pki.state(authority)),
            "--issuer-cert", str(pki.certificate_file(authority)), "--policy", str(pki.policy_file(hierarchy))]


def database(pki, hierarchy: Hierarchy = Hierarchy.DEVICE) -> Path:
    """The Issuing Authority's state database, which the batch writes."""
    return pki.state(authority_name("issuing", hierarchy)) / "smki.db"


def batch_args(dca, batch, out_dir: Path, *extra, requester="supplier"):
    return ["ca", "issue-batch", *issuing_options(dca), "--environment", "test", "--requester", requester, "--device-type", "ESME", "--not-before", "2026-02-01",
            "--response", str(out_dir / "response.zip"), "--status", str(out_dir / "status.csv"), "--workers", "2", *extra, str(batch)]


def write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def statuses(out_dir: Path) -> dict[str, dict]:
    with open(out_dir / "status.csv", newline="") as stream:
        return {row["file"]: row for row in csv.DictReader(stream)}


def response_certificates(out_dir: Path) -> dict[str, x509.Certificate]:
    with zipfile.ZipFile(out_dir / "response.zip") as archive:
        return {name: x509.load_pem_x509_certificate(archive.read(name)) for name in archive.namelist()}


def device(eui64: str, usage="key_agreement", key=None) -> bytes:
    return f.device_csr(key or ec.generate_private_key(ec.SECP256R1()), usage=usage, eui64=eui64)


def _bad_requests() -> dict[str, tuple[bytes, str, str]]:
    """file -> (request, expected status, expected code)"""
    p256 = lambda: ec.generate_private_key(ec.SECP256R1())  # noqa: E731
    san, ka = f.hardware_module_name_san("00DB0000000000B0"), f.key_usage("key_agreement")
    compressed = p256()
    return {
        "bad-signature.csr": (f.build_csr(p256(), b"\x30\x00", [ka, san], corrupt_signature=True), "error", "CR:0003"),
        "compressed-point.csr": (f.build_csr(compressed, b"\x30\x00", [ka, san], public_key_info=f.spki(compressed, PublicFormat.CompressedPoint)), "error", "CR:0004"),
        "rsa-key.csr": (f.build_csr(rsa.generate_private_key(65537, 2048), b"\x30\x00", [ka, san], algorithm="1.2.840.113549.1.1.11"), "error", "CR:0002"),
        "wrong-curve.csr": (f.build_csr(ec.generate_private_key(ec.SECP384R1()), b"\x30\x00", [ka, san]), "error", "CR:0004"),
        "extra-subject.csr": (f.build_csr(p256(), f.org_subject(), [ka, san]), "error", "CR:0005"),
        "no-san.csr": (f.build_csr(p256(), b"\x30\x00", [ka]), "error", "CR:0007"),
        "two-usages.csr": (f.build_csr(p256(), b"\x30\x00", [f.key_usage("key_agreement", "digital_signature"), san]), "error", "CR:0006"),
        "short-eui64.csr": (f.build_csr(p256(), b"\x30\x00", [ka, f.hardware_module_name_san("00DB00000000")]), "error", "CR:0008"),
        "not-base64.csr": (b"this is not a request", "error", "FM:0001"),
        "other-hwtype.csr": (f.build_csr(p256(), b"\x30\x00", [ka, f.hardware_module_name_san("00DB0000000000B1", hw_type="1.2.3.4")]), "ineligible", "IN:0001"),
    }


def test_mixed_batch_answers_each_request(dca, tmp_path):
    good = {f"good-{i:02d}.csr": device(f"00DB0000000000{i:02X}", usage=("key_agreement", "digital_signature")[i % 2]) for i in range(12)}
    bad = _bad_requests()
    twin = good["good-03.csr"]  # the same request again, under another name
    entries = {**good, **{name: data for name, (data, _, _) in bad.items()}, "twin-of-03.csr": twin}
    # Mixed encodings, as the interface allows: DER, bare Base64 wrapped at 76 columns, armoured PEM with CRLF.
    encodings = (lambda der: der, base64.encodebytes,
                 lambda der: b"-----BEGIN CERTIFICATE REQUEST-----\r\n" + base64.encodebytes(der).replace(b"\n", b"\r\n") + b"-----END CERTIFICATE REQUEST-----\r\n")
    entries = {name: (encodings[i % 3](data) if data[:1] == b"\x30" else data) for i, (name, data) in enumerate(entries.items())}
    result = json.loads(smki(*batch_args(dca, write_zip(tmp_path / "batch.zip", entries), tmp_path, "--json", "--chunk-size", "5")).stdout)
    rows = statuses(tmp_path)
    assert set(rows) == set(entries)
    for name, (_, status, code) in bad.items():
        assert (rows[name]["status"], rows[name]["code"]) == (status, code), rows[name]
        assert rows[name]["serial"] == ""
    # Either copy may be answered first (chunks run in parallel); exactly one is issued.
    twins = sorted((rows["good-03.csr"]["status"], rows["twin-of-03.csr"]["status"]))
    assert twins == ["error", "success"]
    duplicate = rows["good-03.csr"] if rows["good-03.csr"]["status"] == "error" else rows["twin-of-03.csr"]
    assert duplicate["code"] == "CR:9999" and "duplicate" in duplicate["detail"]
    issued = response_certificates(tmp_path)
    expected = {name[:-4] + ".crt" for name, row in rows.items() if row["status"] == "success"}
    assert set(issued) == expected and len(expected) == 12
    assert result["issued"] == 12 and result["totals"] == {"error": 10, "ineligible": 1, "success": 12}
    # Independent checks: each certificate chains with openssl and lints clean; its record names it.
    chain_dir = tmp_path / "certs"
    chain_dir.mkdir()
    for name, certificate in issued.items():
        row = rows[name[:-4] + ".csr"]
        assert f"{certificate.serial_number:032X}" == row["serial"]
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert row["identifier"].lower() in san.get_values_for_type(x509.OtherName)[0].value.hex()
        (chain_dir / name).write_bytes(certificate.public_bytes(Encoding.PEM))
    verified = openssl("verify", "-partial_chain", "-CAfile", str(dca.certificate_file("root-dca")), "-untrusted", str(dca.certificate_file("issuing-dca")),
                       *sorted(str(p) for p in chain_dir.iterdir()))
    assert verified.stdout.count(b": OK") == 12
    lint = smki("lint", str(chain_dir), "--environment", "test", "--json")
    assert all(not item["findings"] for item in json.loads(lint.stdout)), lint.stdout
    records = json.loads(smki("ca", "list", "--state", str(dca.state("issuing-dca")), "--type", "device", "--json", "--limit", "100000").stdout)
    by_serial = {record["serial_hex"]: record for record in records}
    for row in rows.values():
        if row["status"] == "success":
            assert by_serial[row["serial"]]["policy_version"] == "1.0" and by_serial[row["serial"]]["request_sha256"]


def test_duplicates_against_the_store_and_rerun_of_a_finished_batch(dca, tmp_path):
    first = {"a.csr": device("00DB00000000C001"), "b.csr": device("00DB00000000C002")}
    smki(*batch_args(dca, write_zip(tmp_path / "one.zip", first), tmp_path / "one"))
    # A new batch holding an already certified request: refused as a duplicate, the new one issued.
    second = {"a-again.csr": first["a.csr"], "c.csr": device("00DB00000000C003")}
    smki(*batch_args(dca, write_zip(tmp_path / "two.zip", second), tmp_path / "two"))
    rows = statuses(tmp_path / "two")
    assert (rows["a-again.csr"]["status"], rows["a-again.csr"]["code"]) == ("error", "CR:9999")
    assert rows["c.csr"]["status"] == "success"
    # Running a finished batch again issues nothing and writes the same answers.
    again = json.loads(smki(*batch_args(dca, tmp_path / "one.zip", tmp_path / "one-again", "--json")).stdout)
    assert again["issued"] == 0 and again["answered_before"] == 2
    assert statuses(tmp_path / "one-again") == statuses(tmp_path / "one")


def test_the_per_device_cap(dca, tmp_path):
    entries = {f"r{i:03d}.csr": device("00DB00000000CA00") for i in range(101)}
    result = json.loads(smki(*batch_args(dca, write_zip(tmp_path / "cap.zip", entries), tmp_path, "--json", "--chunk-size", "40")).stdout)
    rows = statuses(tmp_path)
    refused = [row for row in rows.values() if row["status"] != "success"]
    assert result["issued"] == 100 and len(refused) == 1
    assert refused[0]["code"] == "IN:0001" and "cap 100" in refused[0]["detail"]


@pytest.mark.parametrize("make, code, fragment", [
    (lambda p: p.write_bytes(b"not a zip at all"), 3, "not a ZIP file"),
    (lambda p: write_zip(p, {}), 3, "the batch is empty"),
    (lambda p: write_zip(p, {"dir/a.csr": device("00DB00000000D001")}), 3, "has a path"),
    (lambda p: write_zip(p, {"../a.csr": device("00DB00000000D001")}), 3, "has a path"),
    (lambda p: write_zip(p, {"a.txt": device("00DB00000000D001")}), 3, "is not a .csr file"),
    (lambda p: write_zip(p, {"bomb.csr": b"0" * 10_000_000}), 3, "over 16384"),
])
def test_batch_level_faults_refuse_everything(dca, tmp_path, make, code, fragment):
    batch = tmp_path / "batch.zip"
    make(batch)
    before = _counts(dca)
    result = smki(*batch_args(dca, batch, tmp_path), check=False)
    assert result.returncode == code and fragment in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert _counts(dca) == before
    assert not (tmp_path / "response.zip").exists() and not (tmp_path / "status.csv").exists()


def test_an_ineligible_requester_refuses_the_batch(dca, tmp_path):
    before = _counts(dca)
    batch = write_zip(tmp_path / "batch.zip", {"a.csr": device("00DB00000000E001")})
    result = smki(*batch_args(dca, batch, tmp_path, requester="wanProvider"), check=False)
    assert result.returncode == 1 and "4.1 eligibility" in result.stderr
    assert _counts(dca) == before and not (tmp_path / "status.csv").exists()


def test_existing_outputs_are_never_overwritten(dca, tmp_path):
    (tmp_path / "status.csv").write_text("keep me")
    batch = write_zip(tmp_path / "batch.zip", {"a.csr": device("00DB00000000F001")})
    result = smki(*batch_args(dca, batch, tmp_path), check=False)
    assert result.returncode == 5 and "already exists" in result.stderr
    assert (tmp_path / "status.csv").read_text() == "keep me" and not (tmp_path / "response.zip").exists()


def _counts(dca) -> tuple[int, int, int]:
    with sqlite3.connect(database(dca)) as connection:
        return tuple(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("certificates", "batches", "batch_entries"))


def test_a_killed_batch_resumes_with_no_duplicate_and_nothing_lost(dca, tmp_path):
    entries = {f"dev-{i:05d}.csr": device(f"00DB0001{i:08X}") for i in range(3000)}
    batch = write_zip(tmp_path / "big.zip", entries)
    (tmp_path / "first").mkdir()
    process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", *batch_args(dca, batch, tmp_path / "first", "--chunk-size", "25")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    database_file = database(dca)
    deadline = time.monotonic() + 120
    answered = 0
    while time.monotonic() < deadline and process.poll() is None:
        with sqlite3.connect(database_file) as connection:
            answered = connection.execute("SELECT COUNT(*) FROM batch_entries WHERE name LIKE 'dev-%'").fetchone()[0]
        if answered >= 200:
            break
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert 0 < answered < 3000, "the kill must land mid-batch"
    assert not (tmp_path / "first" / "status.csv").exists()
    result = json.loads(smki(*batch_args(dca, batch, tmp_path / "second", "--json", "--chunk-size", "25")).stdout)
    assert result["answered_before"] >= answered and result["answered_before"] + sum(result["statuses"].values()) == 3000
    rows = statuses(tmp_path / "second")
    assert len(rows) == 3000 and {row["status"] for row in rows.values()} == {"success"}
    issued = response_certificates(tmp_path / "second")
    assert len(issued) == 3000
    with sqlite3.connect(database_file) as connection:
        (batch_id,) = connection.execute("SELECT batch_id FROM batches WHERE source = ?", (str(batch),)).fetchone()
        serials = [row[0] for row in connection.execute("SELECT serial_hex FROM batch_entries WHERE batch_id = ?", (batch_id,))]
        stored = {row[0]: row[1] for row in connection.execute(
            f"SELECT serial_hex, subject_key_id FROM certificates WHERE serial_hex IN ({','.join('?' * len(serials))})", serials)}
        per_device = connection.execute("SELECT MAX(n) FROM (SELECT COUNT(*) n FROM certificates WHERE entity_id LIKE '00DB0001%' GROUP BY entity_id)").fetchone()[0]
    assert len(set(serials)) == 3000 and len(stored) == 3000, "every answered request has exactly one recorded certificate"
    assert len(set(stored.values())) == 3000 and per_device == 1, "no key and no device certified twice"
    assert {f"{c.serial_number:032X}" for c in issued.values()} == set(serials), "every released certificate is recorded"
    # The audit trail still verifies after the kill.
    smki("audit", "verify", "--db", str(database_file))


def test_batch_speaks_to_the_audit_trail(dca, tmp_path):
    smki(*batch_args(dca, write_zip(tmp_path / "a.zip", {"x.csr": device("00DB00000000AA01")}), tmp_path))
    with sqlite3.connect(database(dca)) as connection:
        operations = [row[0] for row in connection.execute("SELECT operation FROM audit_entries ORDER BY seq")]
    tail = operations[operations.index("batch.start", len(operations) - 5):]
    assert tail == ["batch.start", "certificate.issue.device.batch", "batch.finish"]
    smki("audit", "verify", "--db", str(database(dca)))


def test_a_transaction_records_five_worker_tasks(dca, tmp_path):
    entries = {f"t{i:02d}.csr": device(f"00DB00000000EE{i:02X}") for i in range(12)}
    result = json.loads(smki(*batch_args(dca, write_zip(tmp_path / "t.zip", entries), tmp_path, "--json", "--chunk-size", "1")).stdout)
    assert result["issued"] == 12
    with sqlite3.connect(database(dca)) as connection:
        subjects = [json.loads(row[0]) for row in connection.execute(
            "SELECT subject FROM audit_entries WHERE operation = 'certificate.issue.device.batch' ORDER BY seq")]
    ours = [subject for subject in subjects if subject.get("batch_id") == result["batch_id"]]
    assert [(subject["transaction"], subject["issued"]) for subject in ours] == [(0, 5), (1, 5), (2, 2)]


def test_a_directory_batch_with_sampled_verification(dca, tmp_path):
    batch = tmp_path / "requests"
    batch.mkdir()
    for i in range(5):
        (batch / f"meter-{i}.csr").write_bytes(base64.encodebytes(device(f"00DB00000000DD{i:02X}")))
    result = json.loads(smki(*batch_args(dca, batch, tmp_path / "out", "--json", "--verify-one-in", "3", "--workers", "1")).stdout)
    assert result["issued"] == 5 and set(response_certificates(tmp_path / "out")) == {f"meter-{i}.crt" for i in range(5)}


def test_a_worker_that_cannot_start_stops_the_batch_instead_of_respawning(hsm_token):
    # multiprocessing restarts a worker whose initializer raises, forever; ours keeps the error for its first task.
    from smki.issuing import batch_workers
    from smki.errors import HsmError
    from smki.hsm.config import KeyRef
    batch_workers.start_worker(KeyRef("no-such-token", "k", b"\x01", hsm_token.module), hsm_token.pin, None, 1)
    try:
        with pytest.raises(HsmError, match="could not start: .*no-such-token"):
            batch_workers.check_requests(Path("unused.zip"), "0" * 64, ["a.csr"])
        with pytest.raises(HsmError, match="could not start"):
            batch_workers.sign_certificates([])
    finally:
        batch_workers._worker.clear()
