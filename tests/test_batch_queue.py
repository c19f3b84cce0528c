"""The Issuing DCA's batch queue: submission, the Registration Authority's decision, processing (one batch at a time,
leased, resumable), the answers, the usage rules and retention; on SQLite, and on PostgreSQL with two processes."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from conftest import openssl
from smki.errors import BadInputError, ConflictError
from smki.issuing import IssuingAuthority
from smki.issuing.queued_batches import UnknownBatch
from smki.policy import PolicyRefusal
from smki.policy.usage import Channel, Submitter, UsageRule
from smki.requests.batch import BatchRefused, StoredZipWriter
from smki.store.batch_queue import BatchStatus
from smki.testing import csr

pytest_plugins = ["postgres_server"]

SHIPPED = Path(__file__).resolve().parents[1] / "smki" / "data" / "policies"
DEVICE_YAML = (SHIPPED / "device.yaml").read_text()
SHIPPED_RULES = DEVICE_YAML[DEVICE_YAML.index("usage_rules:"):DEVICE_YAML.index("\nrevocation:")]
LAB_RULES = 'usage_rules:\n  batch_window: always\n  batch_daily_cap: 12\n'
ALICE = Submitter("alice-dsp", Channel.WEB_SERVICE)
BOB = Submitter("bob-supplier", Channel.WEB_SERVICE)


def policy_file(directory: Path, rules: str = LAB_RULES, batch_limit: int = 6) -> Path:
    text = DEVICE_YAML.replace(SHIPPED_RULES, rules).replace("batch_limit: 50000", f"batch_limit: {batch_limit}")
    path = directory / "device-policy.yaml"
    path.write_text(text)
    return path


def authority(smki_pki, directory: Path, rules: str = LAB_RULES, state: Path | str | None = None, batch_limit: int = 6,
              **options) -> IssuingAuthority:
    """An Issuing DCA with the test PKI's certificate and key, on a state of its own with its own policy adopted."""
    directory.mkdir(parents=True, exist_ok=True)
    policy = policy_file(directory, rules, batch_limit)
    made = IssuingAuthority(state or directory / "state", certificate=smki_pki.issuing_dca_certificate, key=smki_pki.key("issuing-dca"),
                            pin=smki_pki.token.pin, policy=policy, environment="test", actor="ra-operator", **options)
    made.adopt_policy(policy)
    return made


_devices = iter(range(0x00DB000000000100, 0x00DB0000FFFFFFFF))


def requests(smki_pki, count: int, *, bad_hw_type: int = 0) -> list[tuple[str, bytes]]:
    """(DeviceCSR ID, CSR DER) pairs: `count` good requests for fresh devices, then `bad_hw_type` with a hwType no type has."""
    pairs = [(f"csr-{index}", smki_pki.device_csr(f"{next(_devices):016X}", usage="KA" if index % 2 else "DS").der) for index in range(count)]
    for index in range(bad_hw_type):
        key = ec.generate_private_key(ec.SECP256R1())
        pairs.append((f"odd-{index}", csr.build_csr(key, b"\x30\x00", [csr.key_usage("digital_signature"),
                                                                       csr.hardware_module_name_san(f"{next(_devices):016X}", "1.2.3.4")])))
    return pairs


def audit_operations(state: Path) -> list[tuple[str, str]]:
    connection = sqlite3.connect(state / "smki.db")
    try:
        return [tuple(row) for row in connection.execute("SELECT operation, outcome FROM audit_entries ORDER BY seq")]
    finally:
        connection.close()


def verify_with_openssl(smki_pki, tmp_path: Path, der: bytes) -> None:
    """The certificate (DER) verifies with openssl against the test PKI's Root DCA and Issuing DCA."""
    chain, leaf = tmp_path / "chain.pem", tmp_path / "leaf.pem"
    chain.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in (smki_pki.root_dca_certificate, smki_pki.issuing_dca_certificate)))
    converted = openssl("x509", "-inform", "DER", "-outform", "PEM", input=der)
    assert converted.returncode == 0
    leaf.write_bytes(converted.stdout)
    checked = openssl("verify", "-CAfile", str(chain), str(leaf))
    assert checked.returncode == 0, checked.stderr


# ---- the life cycle ---------------------------------------------------------------------------------------------

def test_a_batch_goes_pending_approved_completed_with_certificates_openssl_verifies(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)
    pairs = requests(smki_pki, 3, bad_hw_type=1)
    queued = dca.submit_batch(pairs, client_id="alice-batch-1", subscriber=ALICE, requester="supplier")
    assert queued.status is BatchStatus.PENDING and queued.number >= 1 and queued.entry_count == 4
    assert dca.process_batches(once=True) == 0  # nothing is processed before the Registration Authority decides
    assert dca.batch_result(queued.number, ALICE).batch.status is BatchStatus.PENDING
    assert dca.approve_batch(queued.number).status is BatchStatus.PARSING
    with pytest.raises(ConflictError, match="not PENDING"):
        dca.approve_batch(queued.number)
    assert dca.process_batches(once=True, workers=1) == 1
    answer = dca.batch_result(queued.number, ALICE)
    assert answer.batch.status is BatchStatus.COMPLETED
    by_id = {a.csr_id: a for a in answer.answers}
    assert sorted(by_id) == sorted(csr_id for csr_id, _ in pairs)
    for csr_id, _ in pairs[:3]:
        assert by_id[csr_id].status == "success" and by_id[csr_id].outcome is None
        verify_with_openssl(smki_pki, tmp_path, by_id[csr_id].certificate_der)
    assert by_id["odd-0"].status == "ineligible" and by_id["odd-0"].code.startswith("IN:") and by_id["odd-0"].certificate_der is None
    # The portal's files: a .crt per issued certificate, a status record per request.
    batch, response_zip, status_file = dca.batch_files(queued.number, ALICE)
    assert sorted(zipfile.ZipFile(io.BytesIO(response_zip)).namelist()) == sorted(f"{i}.crt" for i, _ in pairs[:3])
    rows = list(csv.DictReader(io.StringIO(status_file.decode())))
    assert sorted((row["file"], row["status"]) for row in rows) == sorted([(f"{i}.csr", "success") for i, _ in pairs[:3]] + [("odd-0.csr", "ineligible")])
    operations = [op for op, outcome in audit_operations(tmp_path / "state") if op.startswith("batch.") and outcome == "success"]
    assert operations[:6] == ["batch.submit", "batch.approve", "batch.parse", "batch.process", "batch.start", "batch.finish"]
    assert operations[-1] == "batch.complete"
    assert dca.process_batches(once=True) == 0  # processed once


def test_a_zip_upload_in_the_portal_format_is_queued_as_it_is(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path, LAB_RULES + "  auto_approved_requesters: [alice-dsp]\n")
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        for csr_id, der in requests(smki_pki, 2):
            archive.writestr(f"meter {csr_id}.csr", base64.b64encode(der).decode() + "\r\n")
    queued = dca.submit_batch(stream.getvalue(), client_id="zip-1", subscriber=ALICE, requester="supplier")
    assert queued.status is BatchStatus.PARSING and queued.decided_by == "policy"  # auto-approved: no RA step
    dca.process_batches(once=True, workers=1)
    answer = dca.batch_result(queued.number, ALICE)
    assert sorted(a.csr_id for a in answer.answers) == ["meter csr-0", "meter csr-1"]
    assert {a.status for a in answer.answers} == {"success"}
    with pytest.raises(BatchRefused, match="not a ZIP"):
        dca.submit_batch(b"PK not really", client_id="zip-2", subscriber=BOB, requester="supplier")


def test_a_rejected_batch_goes_no_further(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)
    queued = dca.submit_batch(requests(smki_pki, 1), client_id="r", subscriber=ALICE, requester="supplier")
    with pytest.raises(BadInputError):
        dca.reject_batch(queued.number, "")
    rejected = dca.reject_batch(queued.number, "not expected from this party today")
    assert rejected.status is BatchStatus.REJECTED and rejected.reason == "not expected from this party today"
    with pytest.raises(ConflictError):
        dca.approve_batch(queued.number)
    assert dca.process_batches(once=True) == 0
    assert dca.batch_result(queued.number, ALICE).answers is None
    with pytest.raises(BadInputError, match="no queued batch 999"):
        dca.approve_batch(999)
    assert ("batch.reject", "success") in audit_operations(tmp_path / "state")


def test_a_batch_whose_stored_upload_changed_is_tampered(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)
    queued = dca.submit_batch(requests(smki_pki, 2), client_id="t", subscriber=ALICE, requester="supplier")
    dca.approve_batch(queued.number)
    database = sqlite3.connect(tmp_path / "state" / "smki.db")
    upload = database.execute("SELECT upload FROM batch_queue WHERE batch_number = ?", (queued.number,)).fetchone()[0]
    changed = upload[:-30] + bytes([upload[-30] ^ 1]) + upload[-29:]
    database.execute("UPDATE batch_queue SET upload = ? WHERE batch_number = ?", (changed, queued.number))
    database.commit()
    database.close()
    dca.process_batches(once=True, workers=1)
    answer = dca.batch_result(queued.number, ALICE)
    assert answer.batch.status is BatchStatus.TAMPERED and answer.answers is None
    assert "SHA-256" in answer.batch.reason
    assert dca.process_batches(once=True) == 0
    assert dca.list(certificate_type="device") == []  # nothing issued from it


def _shut_window() -> str:
    """A one-minute window two hours from now (London time): shut for the whole test."""
    opens = datetime.now(ZoneInfo("Europe/London")) + timedelta(hours=2)
    closes = opens + timedelta(minutes=1)
    return f'usage_rules:\n  batch_window: {{start: "{opens:%H:%M}", end: "{closes:%H:%M}"}}\n'


def test_outside_the_window_a_batch_is_parsed_then_paused(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path, _shut_window())
    queued = dca.submit_batch(requests(smki_pki, 2), client_id="p", subscriber=ALICE, requester="supplier")
    dca.approve_batch(queued.number)
    assert dca.process_batches(once=True, workers=1) == 1
    paused = dca.batch_result(queued.number, ALICE).batch
    assert paused.status is BatchStatus.PAUSED and paused.batch_id is not None
    assert dca.process_batches(once=True) == 0  # a paused batch waits for the window: not claimed again and again
    assert dca.list(certificate_type="device") == []


# ---- usage rules and limits -----------------------------------------------------------------------------------

def test_one_batch_at_a_time_and_the_daily_cap_are_workflow_errors(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)
    first = dca.submit_batch(requests(smki_pki, 5), client_id="a", subscriber=ALICE, requester="supplier")
    with pytest.raises(PolicyRefusal) as refused:
        dca.submit_batch(requests(smki_pki, 1), client_id="b", subscriber=ALICE, requester="supplier")
    assert UsageRule.of(refused.value) is UsageRule.BATCHES_AT_A_TIME and UsageRule.of(refused.value).code.startswith("WF:")
    dca.submit_batch(requests(smki_pki, 1), client_id="b", subscriber=BOB, requester="supplier")  # another subscriber's own count
    dca.approve_batch(first.number)
    dca.process_batches(once=True, workers=1)
    dca.submit_batch(requests(smki_pki, 5), client_id="c", subscriber=ALICE, requester="supplier")  # 10 of the 12 a day
    dca.reject_batch(dca.batches(subscriber="alice-dsp", status="PENDING")[0].number, "enough")
    with pytest.raises(PolicyRefusal) as refused:
        dca.submit_batch(requests(smki_pki, 3), client_id="d", subscriber=ALICE, requester="supplier")
    assert UsageRule.of(refused.value) is UsageRule.BATCH_DAILY_CAP
    assert ("batch.submit", "refused") in audit_operations(tmp_path / "state")


def test_more_than_the_batch_limit_is_the_policys_batch_limit_refusal(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)  # batch_limit 6
    with pytest.raises(PolicyRefusal) as refused:
        dca.submit_batch(requests(smki_pki, 7), client_id="big", subscriber=ALICE, requester="supplier")
    assert refused.value.rule == "4.2 batch_limit"
    assert dca.batches() == []


def test_a_real_50001_entry_zip_is_counted_and_refused(tmp_path):
    from smki.issuing.queued_batches import count_entries
    from smki.policy import load_policy

    stream = io.BytesIO()
    writer = StoredZipWriter(stream)
    for index in range(50_001):
        writer.add(f"{index}.csr", b"x")
    writer.close()
    with pytest.raises(PolicyRefusal, match="50001 requests, more than the batch limit of 50000"):
        count_entries(stream.getvalue(), load_policy("builtin:device"))


def test_an_ineligible_requester_is_refused_at_submission(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)
    with pytest.raises(PolicyRefusal, match="4.1 eligibility"):
        dca.submit_batch(requests(smki_pki, 1), client_id="x", subscriber=ALICE, requester="recovery")


# ---- answers: only to their subscriber, for the retention period ---------------------------------------------

def test_another_subscribers_batch_id_is_unknown_and_audited(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path)
    queued = dca.submit_batch(requests(smki_pki, 1), client_id="mine", subscriber=ALICE, requester="supplier")
    for number in (queued.number, 424242, "abc", -1, "1" * 40):
        with pytest.raises(UnknownBatch):
            dca.batch_result(number, BOB)
        with pytest.raises(UnknownBatch):
            dca.batch_files(number, BOB)
    refusals = [entry for entry in audit_operations(tmp_path / "state") if entry == ("batch.result", "refused")]
    assert len(refusals) == 10


def test_a_batch_id_of_non_ascii_digits_is_unknown_not_a_fault(smki_pki, tmp_path):
    """str.isdigit() takes "²" (int() refuses it: ValueError, a 500 on the portal) and Arabic-Indic digits (int() reads them)."""
    dca = authority(smki_pki, tmp_path)
    queued = dca.submit_batch(requests(smki_pki, 1), client_id="mine", subscriber=ALICE, requester="supplier")
    arabic = "".join(chr(0x0660 + int(digit)) for digit in str(queued.number))
    for number in ("\u00b2", "1\u00b9", arabic):
        with pytest.raises(UnknownBatch):
            dca.batch_result(number, ALICE)
        with pytest.raises(UnknownBatch):
            dca.batch_files(number, ALICE)
    with pytest.raises(BadInputError):
        dca.approve_batch("\u00b2")


def test_a_refused_upload_is_named_as_such_not_by_the_services_temporary_file(smki_pki, tmp_path):
    """A ZIP's batch-level refusal goes back to its submitter (ErrorText, the portal's page): it named the temporary
    file the upload was checked in (/tmp/smki-queued-batch-.../batch.zip)."""
    dca = authority(smki_pki, tmp_path)
    for entries in ([("../evil.csr", b"AAAA")], [("x.txt", b"AAAA")], [("x.csr", b"A" * 20000)]):
        stream = io.BytesIO()
        with zipfile.ZipFile(stream, "w") as archive:
            for name, data in entries:
                archive.writestr(name, data)
        for upload in (stream.getvalue(), b"PK\x03\x04 not a zip at all"):
            with pytest.raises(BatchRefused) as refused:
                dca.submit_batch(upload, client_id="mine", subscriber=ALICE, requester="supplier")
            assert str(refused.value).startswith("the uploaded batch: ") and "smki-queued-batch" not in str(refused.value), refused.value
            assert "/tmp" not in str(refused.value)


def test_results_are_purged_after_the_retention_period(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path, LAB_RULES + "  result_retention_days: 30\n  auto_approved_requesters: ['*']\n")
    queued = dca.submit_batch(requests(smki_pki, 1), client_id="old", subscriber=ALICE, requester="supplier")
    dca.process_batches(once=True, workers=1)
    finished = datetime.fromisoformat(dca.batch_result(queued.number, ALICE).batch.finished_at.replace("Z", "+00:00"))
    assert dca.purge_batches(finished + timedelta(days=30) - timedelta(seconds=1)) == []
    assert dca.purge_batches(finished + timedelta(days=30, seconds=1)) == [queued.number]
    with pytest.raises(UnknownBatch):
        dca.batch_result(queued.number, ALICE)
    assert dca.batches() == []
    assert len(dca.list(certificate_type="device")) == 1  # the certificate stays issued and recorded
    following = dca.submit_batch(requests(smki_pki, 1), client_id="new", subscriber=ALICE, requester="supplier")
    assert following.number == queued.number + 1  # numbers are never reused


# ---- the CLI ---------------------------------------------------------------------------------------------------

def test_the_cli_lists_shows_approves_rejects_and_processes(smki_pki, tmp_path, run_smki):
    dca = authority(smki_pki, tmp_path)
    first = dca.submit_batch(requests(smki_pki, 2), client_id="cli-1", subscriber=ALICE, requester="supplier")
    second = dca.submit_batch(requests(smki_pki, 1), client_id="cli-2", subscriber=BOB, requester="supplier")
    dca.close()
    state = ["--state", str(tmp_path / "state"), "--actor", "ra-cli"]
    listed = run_smki("ca", "batches", "list", *state, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(b["batch"], b["status"]) for b in json.loads(listed.stdout)] == [(second.number, "PENDING"), (first.number, "PENDING")]
    assert "cli-2" in run_smki("ca", "batches", "show", *state, str(second.number)).stdout
    assert run_smki("ca", "batches", "approve", *state, str(first.number)).returncode == 0
    again = run_smki("ca", "batches", "approve", *state, str(first.number))
    assert again.returncode == 5 and again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    missing = run_smki("ca", "batches", "reject", *state, "77", "--reason", "no")
    assert missing.returncode == 3 and "no queued batch 77" in missing.stderr
    assert run_smki("ca", "batches", "reject", *state, str(second.number), "--reason", "unexpected").returncode == 0
    key = smki_pki.key("issuing-dca")
    cert = tmp_path / "issuing-dca.pem"
    cert.write_bytes(smki_pki.issuing_dca_certificate.public_bytes(Encoding.PEM))
    processed = run_smki("ca", "batches", "process", *state, "--once", "--workers", "1", "--key-uri", key.uri, "--pin-source", "env:DCA_PIN",
                         "--policy", str(tmp_path / "device-policy.yaml"), "--environment", "test", "--issuer-cert", str(cert), "--json",
                         env={"DCA_PIN": smki_pki.token.pin})
    assert processed.returncode == 0, processed.stderr
    assert json.loads(processed.stdout) == {"batches_moved": 1}
    shown = json.loads(run_smki("ca", "batches", "show", *state, str(first.number), "--json").stdout)
    assert shown["status"] == "COMPLETED" and shown["decided_by"] == "ra-cli"
    assert smki_pki.token.pin not in processed.stdout + processed.stderr


# ---- several processes on one PostgreSQL store -----------------------------------------------------------------

@pytest.fixture
def postgres_dca(smki_pki, tmp_path, request):
    """An Issuing DCA whose state is a fresh PostgreSQL schema, and the command line its processors run with."""
    server = request.getfixturevalue("postgres_server")
    url = server.url(schema=server.new_schema())
    rules = LAB_RULES.replace("batch_daily_cap: 12", "batch_daily_cap: 50000") + "  batches_at_a_time: 10\n  auto_approved_requesters: ['*']\n"
    dca = authority(smki_pki, tmp_path, rules, state=url, batch_limit=1000)
    cert = tmp_path / "issuing-dca.pem"
    cert.write_bytes(smki_pki.issuing_dca_certificate.public_bytes(Encoding.PEM))
    command = [sys.executable, "-m", "smki.cli.main", "ca", "batches", "process", "--state", url, "--actor", "processor",
               "--key-uri", smki_pki.key("issuing-dca").uri, "--pin-source", "env:DCA_PIN", "--policy", str(tmp_path / "device-policy.yaml"),
               "--environment", "test", "--issuer-cert", str(cert), "--workers", "1"]
    yield dca, command, {**os.environ, "DCA_PIN": smki_pki.token.pin}
    dca.close()


def _store_facts(dca: IssuingAuthority) -> dict:
    connection = dca._readable()
    serials = [row[0] for row in connection.execute("SELECT serial_hex FROM certificates WHERE certificate_type = 'device'")]
    operations = [row[0] for row in connection.execute("SELECT operation FROM audit_entries WHERE outcome = 'success' ORDER BY seq")]
    return {"serials": serials, "operations": operations}


def test_two_processes_on_one_postgresql_process_each_batch_exactly_once(smki_pki, postgres_dca):
    dca, command, env = postgres_dca
    batches = [dca.submit_batch(requests(smki_pki, 25), client_id=f"pg-{n}", subscriber=ALICE, requester="supplier") for n in range(4)]
    processes = [subprocess.Popen([*command, "--once", "--json", "--chunk-size", "10"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err for _, err in outputs]
    for queued in batches:
        answer = dca.batch_result(queued.number, ALICE)
        assert answer.batch.status is BatchStatus.COMPLETED
        assert len(answer.answers) == 25 and {a.status for a in answer.answers} == {"success"}
    facts = _store_facts(dca)
    assert len(facts["serials"]) == 100 == len(set(facts["serials"]))  # no duplicate serial
    assert facts["operations"].count("batch.complete") == 4 and facts["operations"].count("batch.start") == 4
    assert "batch.resume" not in facts["operations"]  # each processed once, by one process
    moved = [json.loads(out)["batches_moved"] for out, _ in outputs]
    assert sum(moved) >= 4


def test_a_batch_whose_processor_is_killed_completes_on_the_other(smki_pki, postgres_dca):
    dca, command, env = postgres_dca
    queued = dca.submit_batch(requests(smki_pki, 300), client_id="big", subscriber=ALICE, requester="supplier")
    slow = [*command, "--chunk-size", "10", "--lease-seconds", "3", "--poll-seconds", "0.5"]
    first = subprocess.Popen(slow, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        answered = _wait_for(lambda: _answered(dca, queued.number) >= 50, timeout=120)
        assert answered, "the first processor answered nothing"
        second = subprocess.Popen(slow, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        os.killpg(first.pid, signal.SIGKILL)  # the processor and its signing workers, mid-batch
        first.wait(timeout=30)
        done_before = _answered(dca, queued.number)
        assert done_before < 300, "the batch finished before the kill: make it larger"
        try:
            assert _wait_for(lambda: dca.batch_result(queued.number, ALICE).batch.status is BatchStatus.COMPLETED, timeout=240)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0, second.stderr.read().decode()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    answer = dca.batch_result(queued.number, ALICE)
    assert len(answer.answers) == 300 and {a.status for a in answer.answers} == {"success"}
    facts = _store_facts(dca)
    assert len(facts["serials"]) == 300 == len(set(facts["serials"]))
    assert facts["operations"].count("batch.resume") == 1 and facts["operations"].count("batch.complete") == 1


def _answered(dca: IssuingAuthority, number: int) -> int:
    connection = dca._readable()
    row = connection.execute("SELECT COUNT(*) FROM batch_entries e JOIN batch_queue q ON q.batch_id = e.batch_id WHERE q.batch_number = ?",
                             (number,)).fetchone()
    return row[0]


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False



def test_a_processor_whose_lease_was_taken_stops_and_the_run_is_resumed(smki_pki, tmp_path, monkeypatch, caplog):
    """A processor finds at its next renewal that another holds the batch (its lease ran out while it was slow):
    it stops at once and records nothing more; whoever holds the batch next resumes the run and answers the rest."""
    from smki.issuing.batch_processor import BatchProcessor

    rules = 'usage_rules:\n  batch_window: always\n  auto_approved_requesters: ["*"]\n'
    dca = authority(smki_pki, tmp_path, rules, batch_limit=1000)
    queued = dca.submit_batch(requests(smki_pki, 100), client_id="taken", subscriber=ALICE, requester="supplier")
    original, stolen = BatchProcessor._renewer, []

    def renewer_whose_lease_is_taken(self, number):
        renew = original(self, number)

        def progress(answered: int, total: int) -> None:
            if not stolen and _answered(dca, number) >= 20:  # another processor claims it, as if this one's lease had run out
                self.connection.execute("UPDATE batch_queue SET lease_owner = 'thief' WHERE batch_number = ?", (number,))
                stolen.append(number)
            renew(answered, total)
        return progress

    monkeypatch.setattr(BatchProcessor, "_renewer", renewer_whose_lease_is_taken)
    with caplog.at_level("INFO", logger="smki.issuing.batch_processor"):
        dca.process_batches(worker="slow", once=True, lease_seconds=0.01, workers=1, chunk_size=10)
    assert stolen and "another processor holds it" in caplog.text
    # The new holder's lease (the thief's: the slow one's last, 10 ms) runs out in turn: whoever claims the batch next
    # (the slow one's own loop, if the lease ran out before it looked again; else this taker) resumes the run.
    time.sleep(0.05)
    dca.process_batches(worker="taker", once=True, workers=1)
    answer = dca.batch_result(queued.number, ALICE)
    assert answer.batch.status is BatchStatus.COMPLETED and len(answer.answers) == 100
    assert {a.status for a in answer.answers} == {"success"}
    serials = [record.serial_hex for record in dca.list(certificate_type="device")]
    assert len(serials) == 100 == len(set(serials))
    operations = audit_operations(tmp_path / "state")
    assert ("batch.resume", "success") in operations and ("certificate.issue.device.batch", "refused") in operations


# ---- pausing and resuming the processing -----------------------------------------------------------------------

AUTO_RULES = 'usage_rules:\n  batch_window: always\n  auto_approved_requesters: ["*"]\n'


def test_while_processing_is_paused_nothing_is_claimed_and_polls_answer_paused(smki_pki, tmp_path):
    dca = authority(smki_pki, tmp_path, AUTO_RULES)
    queued = dca.submit_batch(requests(smki_pki, 2), client_id="held", subscriber=ALICE, requester="supplier")
    assert dca.processing_state().paused is False
    paused = dca.pause_processing("HSM maintenance")
    assert (paused.paused, paused.by, paused.reason) == (True, "ra-operator", "HSM maintenance") and paused.since
    with pytest.raises(ConflictError, match="paused already"):
        dca.pause_processing("again")
    with pytest.raises(BadInputError, match="reason"):
        dca.pause_processing("two\nlines")
    # Another authority object on the same state (another processor) sees the pause and claims nothing.
    other = IssuingAuthority(tmp_path / "state", certificate=smki_pki.issuing_dca_certificate, key=smki_pki.key("issuing-dca"),
                             pin=smki_pki.token.pin, policy=tmp_path / "device-policy.yaml", environment="test", actor="processor")
    assert other.process_batches(once=True, workers=1) == 0
    assert dca.batch_result(queued.number, ALICE).batch.status is BatchStatus.PAUSED
    shown = dca.show_batch(queued.number)
    assert shown.status is BatchStatus.PAUSED and shown.as_dict()["processing"]["reason"] == "HSM maintenance"
    assert [b.status for b in dca.batches()] == [BatchStatus.PAUSED]
    assert dca.list(certificate_type="device") == []
    resumed = dca.resume_processing()
    assert (resumed.paused, resumed.by, resumed.reason) == (False, "ra-operator", None)
    with pytest.raises(ConflictError, match="running already"):
        dca.resume_processing()
    assert other.process_batches(once=True, workers=1) == 1
    assert dca.batch_result(queued.number, ALICE).batch.status is BatchStatus.COMPLETED
    operations = audit_operations(tmp_path / "state")
    assert ("batch.processing.pause", "success") in operations and ("batch.processing.resume", "success") in operations
    assert ("batch.processing.pause", "refused") in operations and ("batch.processing.resume", "refused") in operations
    other.close()


def test_a_running_batch_pauses_at_a_chunk_boundary_and_completes_after_resume_with_every_answer_once(smki_pki, tmp_path, monkeypatch):
    """The operator pauses (from another authority object, as from another host) while a batch is processed: the run
    records what it has in flight, stops at a chunk boundary, and the batch waits PAUSED; resumed, it answers the rest."""
    from smki.issuing.batch_processor import BatchProcessor

    dca = authority(smki_pki, tmp_path, AUTO_RULES, batch_limit=1000)
    queued = dca.submit_batch(requests(smki_pki, 60), client_id="paused", subscriber=ALICE, requester="supplier")
    operator = IssuingAuthority(tmp_path / "state", actor="ra-operator")
    original, paused_at = BatchProcessor._renewer, []

    def renewer_paused_midway(self, number):
        renew = original(self, number)

        def progress(answered: int, total: int) -> None:
            if not paused_at and _answered(dca, number) >= 10:  # a chunk recorded: the operator pauses now
                paused_at.append(_answered(dca, number))
                operator.pause_processing("pause test")
            renew(answered, total)
        return progress

    monkeypatch.setattr(BatchProcessor, "_renewer", renewer_paused_midway)
    monkeypatch.setattr(BatchProcessor, "pause_check_seconds", 0)
    assert dca.process_batches(worker="first", once=True, workers=1, chunk_size=5) == 1
    stopped = _answered(dca, queued.number)
    assert paused_at and 10 <= stopped < 60 and stopped % 5 == 0  # a chunk boundary, not the end
    assert stopped > paused_at[0]  # the chunks signed or in flight when it paused were recorded, not dropped
    stored = dca._readable().execute("SELECT status, lease_owner FROM batch_queue WHERE batch_number = ?", (queued.number,)).fetchone()
    assert tuple(stored) == ("PAUSED", None)
    assert dca.batch_result(queued.number, ALICE).batch.status is BatchStatus.PAUSED
    assert dca.process_batches(worker="second", once=True, workers=1) == 0  # paused: not claimed
    assert len(dca.list(certificate_type="device")) == stopped  # nothing signed was left unrecorded
    operator.resume_processing()
    assert dca.process_batches(worker="second", once=True, workers=1, chunk_size=5) == 1
    answer = dca.batch_result(queued.number, ALICE)
    assert answer.batch.status is BatchStatus.COMPLETED and len(answer.answers) == 60
    assert sorted(a.csr_id for a in answer.answers) == sorted(f"csr-{i}" for i in range(60))
    assert {a.status for a in answer.answers} == {"success"}
    serials = [record.serial_hex for record in dca.list(certificate_type="device")]
    assert len(serials) == 60 == len(set(serials))
    operations = [op for op, outcome in audit_operations(tmp_path / "state") if outcome == "success"]
    pause = operations.index("batch.processing.pause")
    assert operations.index("batch.pause", pause) < operations.index("batch.processing.resume") < operations.index("batch.resume")
    assert operations[-1] == "batch.complete"
    operator.close()


def test_the_cli_pauses_and_resumes_the_processing(smki_pki, tmp_path, run_smki):
    dca = authority(smki_pki, tmp_path, AUTO_RULES)
    queued = dca.submit_batch(requests(smki_pki, 1), client_id="cli-pause", subscriber=ALICE, requester="supplier")
    dca.close()
    state = ["--state", str(tmp_path / "state"), "--actor", "ra-cli"]
    assert run_smki("ca", "batches", "pause", *state).returncode == 2  # --reason is required
    bad = run_smki("ca", "batches", "pause", *state, "--reason", "x" * 201)
    assert bad.returncode == 3 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    paused = run_smki("ca", "batches", "pause", *state, "--reason", "key ceremony", "--json")
    assert paused.returncode == 0, paused.stderr
    state_json = json.loads(paused.stdout)
    assert (state_json["paused"], state_json["by"], state_json["reason"]) == (True, "ra-cli", "key ceremony") and state_json["since"]
    again = run_smki("ca", "batches", "pause", *state, "--reason", "again")
    assert again.returncode == 5 and "paused already" in again.stderr and again.stderr.count("\n") == 1
    listed = run_smki("ca", "batches", "list", *state)
    assert listed.returncode == 0 and listed.stdout.splitlines()[0].startswith("batch processing PAUSED since")
    assert "by ra-cli: key ceremony" in listed.stdout.splitlines()[0] and "PAUSED" in listed.stdout.splitlines()[1]
    rows = json.loads(run_smki("ca", "batches", "list", *state, "--json").stdout)
    assert rows[0]["batch"] == queued.number and rows[0]["status"] == "PAUSED" and rows[0]["processing"]["paused"] is True
    resumed = run_smki("ca", "batches", "resume", *state, "--json")
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["paused"] is False
    assert run_smki("ca", "batches", "resume", *state).returncode == 5
    text = run_smki("ca", "batches", "list", *state).stdout
    assert "PAUSED" not in text and ("QUEUED" in text or "PARSING" in text)
    operations = audit_operations(tmp_path / "state")
    assert operations.count(("batch.processing.pause", "success")) == 1 and operations.count(("batch.processing.resume", "success")) == 1
