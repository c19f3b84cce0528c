"""Hostile batches: malformed requests and ZIPs answer one request or refuse in one line, killed runs
leave no temporaries behind their rerun, and no child process smki starts inherits a secret."""

import functools
import json
import os
import pickle
import random
import secrets
import shutil
import signal
import sqlite3
import stat
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
from asn1crypto import core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings, strategies as st

import csr_factory as f
from conftest import PIN_ENV, SO_PIN_ENV, smki
from smki.testing import Hierarchy
from test_batch_issuance import batch_args, database, dca, issuing_options, statuses, write_zip  # noqa: F401 - dca: the fixture (one PKI per module)

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 50_000
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _counts(dca) -> tuple[int, int]:
    with sqlite3.connect(database(dca)) as connection:
        return tuple(connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("certificates", "batch_entries"))


def one_line_refusal(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert fragment in result.stderr, result.stderr


# -- malformed requests (item 3) ---------------------------------------------------------------------

def _p256():
    return ec.generate_private_key(ec.SECP256R1())


def duplicated_key_usage() -> bytes:
    return f.build_csr(_p256(), b"\x30\x00", [f.key_usage("key_agreement"), f.key_usage("key_agreement"), f.hardware_module_name_san("00DB0000000001D1")])


def duplicated_san() -> bytes:
    san = f.hardware_module_name_san("00DB0000000001D2")
    return f.build_csr(_p256(), b"\x30\x00", [f.key_usage("key_agreement"), san, san])


def duplicated_org_key_usage() -> bytes:
    return f.build_csr(_p256(), f.org_subject(), [f.key_usage("digital_signature"), f.key_usage("digital_signature")])


def _info(key, subject: bytes, extensions: list[tuple[str, bool, bytes]]) -> bytes:
    extension_list = b"".join(f.tlv(0x30, core.ObjectIdentifier(oid).dump() + (b"\x01\x01\xff" if critical else b"") + core.OctetString(value).dump())
                              for oid, critical, value in extensions)
    attribute = f.tlv(0x30, core.ObjectIdentifier("1.2.840.113549.1.9.14").dump() + f.tlv(0x31, f.tlv(0x30, extension_list)))
    return f.tlv(0x30, core.Integer(0).dump() + subject + f.spki(key) + f.tlv(0xA0, attribute))


def _signed(key, info: bytes) -> bytes:
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    return f.tlv(0x30, info + f.tlv(0x30, core.ObjectIdentifier("1.2.840.10045.4.3.2").dump()) + f.tlv(0x03, b"\x00" + signature))


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    # The same draws whatever the length (signatures vary in length): hypothesis replays draws, not lengths.
    data, position = bytearray(data), int(rng.random() * len(data))
    operation = rng.randrange(4)
    if not data:
        data.append(rng.randrange(256))
    elif operation == 0:
        data[position] ^= 1 << rng.randrange(8)
    elif operation == 1:
        data[position] = rng.randrange(256)
    elif operation == 2:
        del data[position:position + rng.randint(1, 8)]
    else:
        data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data)


def _mutate_extensions(extensions: list, rng: random.Random) -> list:
    extensions = list(extensions)
    operation = rng.randrange(5)
    index = rng.randrange(len(extensions)) if extensions else 0
    if operation == 0 and extensions:  # the reported fault: an extension requested twice
        extensions.insert(index, extensions[index])
    elif operation == 1 and extensions:
        del extensions[index]
    elif operation == 2 and extensions:
        oid, critical, value = extensions[index]
        extensions[index] = (oid, critical, _mutate_bytes(value, rng))
    elif operation == 3 and extensions:
        oid, critical, value = extensions[index]
        extensions[index] = (rng.choice(["2.5.29.15", "2.5.29.17", "2.5.29.19", "2.5.29.37", "1.2.3.4"]), not critical, value)
    else:
        extensions.append(rng.choice([f.key_usage("digital_signature", "key_agreement"), f.hardware_module_name_san("00DB00000000"),
                                      ("2.5.29.17", False, b"\x30\x03\x82\x01a"), ("2.5.29.15", True, b"\x03\x02\x07")]))
    return extensions


def mutated_request(rng: random.Random) -> bytes:
    """A valid device or organisation request, mutated: its extension requests and then its signed
    bytes (so that the parsers get past the signature), then maybe the whole DER."""
    key, device = _p256(), rng.random() < 0.5
    subject = b"\x30\x00" if device else f.org_subject()
    extensions = [f.key_usage(rng.choice(["key_agreement", "digital_signature"]))] + ([f.hardware_module_name_san()] if device else [])
    for _ in range(rng.randint(0, 3)):
        extensions = _mutate_extensions(extensions, rng)
    info = _info(key, subject, extensions)
    for _ in range(rng.choice([0, 0, 1, 2])):
        info = _mutate_bytes(info, rng)
    der = _signed(key, info)
    for _ in range(rng.choice([0, 0, 0, 1])):
        der = _mutate_bytes(der, rng)
    return der


@pytest.mark.parametrize("make", [duplicated_key_usage, duplicated_san, duplicated_org_key_usage])
def test_a_duplicated_extension_request_is_the_requests_own_refusal(make):
    from smki.requests import RequestRejected, parse_device_request, parse_organisation_request
    der = make()
    for parse in (parse_device_request, parse_organisation_request):
        with pytest.raises(RequestRejected) as refused:
            parse(der, "dup.csr")
        assert refused.value.outcome.code == "FM:0002" and "Duplicate" in str(refused.value) and "\n" not in str(refused.value)


@FUZZ
@given(st.randoms(use_true_random=False))
def test_mutated_requests_give_a_request_or_a_one_line_refusal(rng):
    from smki.requests import RequestRejected, parse_device_request, parse_organisation_request
    from smki.requests.canonical import canonical_fields
    der = mutated_request(rng)
    canonical_fields(der)  # the fast path answers fields or None, whatever the bytes
    for parse in (parse_device_request, parse_organisation_request):
        try:
            parse(der, "fuzz.csr")
        except RequestRejected as refused:
            assert "\n" not in str(refused) and len(str(refused)) < 400


def test_a_worker_answers_every_mutated_request_in_plain_data(tmp_path):
    from smki.issuing.batch_workers import check_requests, in_plain_data, task_result
    from smki.requests.batch import open_batch
    rng = random.Random(20261202)
    entries = {f"m{i:03d}.csr": mutated_request(rng) for i in range(300)}
    entries.update({"dup-ku.csr": duplicated_key_usage(), "dup-san.csr": duplicated_san()})
    batch = open_batch(write_zip(tmp_path / "m.zip", entries), LIMIT)
    answer = pickle.loads(pickle.dumps(in_plain_data(check_requests, batch.source, batch.batch_id, list(batch.names))))
    parsed = task_result(answer)
    assert [item[0] for item in parsed] == list(batch.names)
    by_name = {item[0]: item for item in parsed}
    assert by_name["dup-ku.csr"][1:3] == (None, "NOT_PKCS10") and by_name["dup-san.csr"][1:3] == (None, "NOT_PKCS10")


def test_a_task_that_fails_answers_plain_data_not_an_exception(tmp_path):
    from smki.issuing.batch_workers import check_requests, in_plain_data, task_result
    from smki.errors import BadInputError, SmkiError
    batch = write_zip(tmp_path / "b.zip", {"a.csr": duplicated_key_usage()})

    def unpicklable():
        from cryptography.x509 import DuplicateExtension, ObjectIdentifier
        raise DuplicateExtension("two of them", ObjectIdentifier("2.5.29.15"))

    answer = pickle.loads(pickle.dumps(in_plain_data(unpicklable)))
    assert answer == ((1, "a batch worker failed: DuplicateExtension: two of them"), None)
    with pytest.raises(SmkiError, match="DuplicateExtension: two of them"):
        task_result(answer)
    changed = pickle.loads(pickle.dumps(in_plain_data(check_requests, batch, "0" * 64, ["a.csr"])))
    with pytest.raises(BadInputError, match="changed after the batch was checked"):
        task_result(changed)


def test_a_batch_of_mutated_requests_answers_each_one(dca, tmp_path):
    rng = random.Random(1202)
    good = {f"good-{i:02d}.csr": f.device_csr(eui64=f"00DB0000000002{i:02X}") for i in range(10)}
    mutated = {f"mutated-{i:03d}.csr": mutated_request(rng) for i in range(150)}
    entries = {**good, **mutated, "dup-ku.csr": duplicated_key_usage(), "dup-san.csr": duplicated_san()}
    result = smki(*batch_args(dca, write_zip(tmp_path / "m.zip", entries), tmp_path, "--json", "--chunk-size", "20"), check=False)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    rows = statuses(tmp_path)
    assert set(rows) == set(entries)
    assert all(rows[name]["status"] == "success" for name in good)
    assert (rows["dup-ku.csr"]["code"], rows["dup-san.csr"]["code"]) == ("FM:0002", "FM:0002")
    assert all(row["code"] != "CA:0001" for row in rows.values()), [row for row in rows.values() if row["code"] == "CA:0001"]


@pytest.mark.parametrize("command", ["issue-org", "issue-device"])
def test_single_request_commands_refuse_a_duplicated_extension_in_one_line(dca, tmp_path, command):
    hierarchy = Hierarchy.ORGANISATION if command == "issue-org" else Hierarchy.DEVICE
    (tmp_path / "dup.csr").write_bytes(duplicated_org_key_usage() if command == "issue-org" else duplicated_key_usage())
    extra = ["--device-type", "ESME"] if command == "issue-device" else []
    result = smki("ca", command, *issuing_options(dca, hierarchy), "--environment", "test", "--requester", "supplier", *extra, "--not-before", "2026-02-01",
                  "--out", str(tmp_path / "out.pem"), str(tmp_path / "dup.csr"), check=False)
    one_line_refusal(result, 3, "FM:0002")
    assert not (tmp_path / "out.pem").exists()


def test_lint_reports_a_duplicated_extension_in_one_line(tmp_path):
    (tmp_path / "dup.csr").write_bytes(duplicated_san())
    result = smki("lint", str(tmp_path / "dup.csr"), check=False)
    assert result.returncode == 3 and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.stdout.strip().splitlines() == [f"{tmp_path / 'dup.csr'}: cannot lint: requested extensions are malformed (Duplicate 2.5.29.17 extension found)"]


# -- lying ZIPs (item 9) ------------------------------------------------------------------------------

def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def member(name: str, data: bytes, **overrides) -> dict:
    """One ZIP member, deflated, with its directory fields as given (by default, the true ones)."""
    payload = _deflate(data)
    return {"name": name, "payload": payload, "method": zipfile.ZIP_DEFLATED, "flags": 0, "crc": zlib.crc32(data),
            "compress_size": len(payload), "file_size": len(data), **overrides}


def raw_zip(members: list[dict]) -> bytes:
    """A ZIP written field by field, exactly as the members say (zipfile would refuse to write a lie)."""
    body, directory = b"", b""
    for m in members:
        name = m["name"].encode()
        offset = m.get("offset", len(body))
        body += struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, m["flags"], m["method"], 0, 0x21, m["crc"], m["compress_size"],
                            m["file_size"], len(name), 0) + name + m["payload"]
        directory += struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, m["flags"], m["method"], 0, 0x21, m["crc"],
                                 m["compress_size"], m["file_size"], len(name), 0, 0, 0, 0, 0, offset) + name
    return body + directory + struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(members), len(members), len(directory), len(body), 0)


def _padded_deflate(data: bytes, size: int) -> bytes:
    """Valid deflate of `data` over `size` bytes: empty stored blocks first (5 bytes each)."""
    return b"\x00\x00\x00\xff\xff" * (size // 5) + _deflate(data)


def reported_lying_zip() -> bytes:
    """The reported case: a bad CRC on an entry whose directory states a size over 64 KiB."""
    data = f.device_csr(eui64="00DB0000000003A0")
    payload = _padded_deflate(data, 70_000)
    return raw_zip([member("lying.csr", data, payload=payload, compress_size=len(payload), crc=zlib.crc32(data) ^ 1)])


@functools.lru_cache(maxsize=None)
def _csr(i: int) -> bytes:
    return f.device_csr(eui64=f"00DB00000000039{i:X}")


# (name, member) whose own bytes are wrong: that request alone is answered FM:0001.
ENTRY_FAULTS = [
    ("bad-crc", lambda data: member("x.csr", data, crc=zlib.crc32(data) ^ 1), "CRC mismatch"),
    ("cut-short", lambda data: member("x.csr", data, payload=_deflate(data)[:-20], compress_size=len(_deflate(data)) - 20), "does not end"),
    ("smaller-than-declared", lambda data: member("x.csr", data, file_size=len(data) + 50), "not the"),
    ("larger-than-declared", lambda data: member("x.csr", b"A" * 2_000_000, file_size=9000, crc=0), "16385+ bytes"),
    ("not-deflate", lambda data: member("x.csr", data, payload=b"\xff" * 64, compress_size=64), "not valid deflate data"),
    ("no-local-header", lambda data: member("x.csr", data, offset=7), "no local header"),
]
# Faults the central directory shows: the whole batch is refused before anything is read or issued.
DIRECTORY_FAULTS = [
    ("encrypted", lambda data: member("x.csr", data, flags=0x1), "is encrypted"),
    ("bzip2", lambda data: member("x.csr", data, method=zipfile.ZIP_BZIP2), "compression method 12"),
    ("unknown-method", lambda data: member("x.csr", data, method=99), "compression method 99"),
    ("declared-bomb", lambda data: member("x.csr", data, file_size=16_000, compress_size=100), "a zip bomb"),
    ("past-the-end", lambda data: member("x.csr", data, compress_size=len(_deflate(data)) + 4000), "lies outside the file"),
    ("declared-nothing", lambda data: member("x.csr", data, compress_size=0), "a zip bomb"),
    ("over-64-KiB", lambda data: member("x.csr", data, payload=_padded_deflate(data, 70_000), compress_size=len(_padded_deflate(data, 70_000))),
     "compressed bytes"),
]


def _last_member_zip(make) -> bytes:
    """Two good entries, then the faulty one last (so `past-the-end` runs off the file's data)."""
    good = [member(f"good-{i}.csr", _csr(i)) for i in range(2)]
    return raw_zip(good + [make(_csr(9))])


@pytest.mark.parametrize("name, make, fragment", ENTRY_FAULTS, ids=[case[0] for case in ENTRY_FAULTS])
def test_an_entrys_own_bad_bytes_answer_that_request_alone(tmp_path, name, make, fragment):
    from smki.requests import RequestRejected
    from smki.requests.batch import open_batch
    path = tmp_path / "b.zip"
    path.write_bytes(_last_member_zip(make))
    entries = list(open_batch(path, LIMIT).entries())
    assert [entry.fault for entry in entries[:2]] == [None, None] and entries[:2][0].data == _csr(0)
    assert fragment in entries[2].fault
    with pytest.raises(RequestRejected) as refused:
        entries[2].request_data()
    assert refused.value.outcome.code == "FM:0001" and "\n" not in str(refused.value)


@pytest.mark.parametrize("name, make, fragment", DIRECTORY_FAULTS, ids=[case[0] for case in DIRECTORY_FAULTS])
def test_a_directory_fault_refuses_the_batch_at_intake(tmp_path, name, make, fragment):
    from smki.requests.batch import BatchRefused, open_batch
    path = tmp_path / "b.zip"
    path.write_bytes(_last_member_zip(make))
    with pytest.raises(BatchRefused, match=fragment):
        open_batch(path, LIMIT)


@settings(max_examples=150, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.randoms(use_true_random=False))
def test_a_mutated_zip_is_refused_in_one_line_or_read_entry_by_entry(tmp_path, rng):
    from smki.requests.batch import BatchRefused, open_batch
    data = raw_zip([member(f"{i}.csr", _csr(i)) for i in range(3)])
    for _ in range(rng.randint(1, 4)):
        data = _mutate_bytes(data, rng)
    path = tmp_path / f"{secrets.token_hex(8)}.zip"
    path.write_bytes(data)
    try:
        batch = open_batch(path, LIMIT)
    except BatchRefused as refused:
        assert "\n" not in str(refused)
        return
    entries = list(batch.entries())
    assert [entry.name for entry in entries] == list(batch.names)
    for entry in entries:  # each one readable, or answered by its one-line fault
        assert entry.fault is None or (entry.data == b"" and "\n" not in entry.fault)


def test_a_corrupt_entry_in_a_batch_is_answered_and_the_rest_issued(dca, tmp_path):
    good = [member(f"good-{i}.csr", f.device_csr(eui64=f"00DB00000000040{i}")) for i in range(3)]
    faulty = ENTRY_FAULTS[0][1](f.device_csr(eui64="00DB000000000410"))
    faulty["name"] = "bad-crc.csr"
    not_deflate = ENTRY_FAULTS[5][1](f.device_csr(eui64="00DB000000000411"))
    not_deflate["name"] = "not-deflate.csr"
    (tmp_path / "b.zip").write_bytes(raw_zip([good[0], faulty, good[1], not_deflate, good[2]]))
    result = smki(*batch_args(dca, tmp_path / "b.zip", tmp_path, "--json"), check=False)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    rows = statuses(tmp_path)
    assert {name: (row["status"], row["code"]) for name, row in rows.items()} == {
        "good-0.csr": ("success", "SUCCESS"), "good-1.csr": ("success", "SUCCESS"), "good-2.csr": ("success", "SUCCESS"),
        "bad-crc.csr": ("error", "FM:0001"), "not-deflate.csr": ("error", "FM:0001")}
    assert "CRC mismatch" in rows["bad-crc.csr"]["detail"]


def test_the_reported_lying_zip_is_refused_in_one_line(dca, tmp_path):
    (tmp_path / "lying.zip").write_bytes(reported_lying_zip())
    before = _counts(dca)
    result = smki(*batch_args(dca, tmp_path / "lying.zip", tmp_path), check=False)
    one_line_refusal(result, 3, "lying.csr declares")
    assert _counts(dca) == before and not (tmp_path / "response.zip").exists() and not (tmp_path / "status.csv").exists()


# -- temporaries of killed runs (item 15) -------------------------------------------------------------

WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from smki.files import new_file
with new_file(Path(sys.argv[1])) as stream:
    stream.write(b"partial")
    stream.flush()
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    print("writing", flush=True)
    sys.stdin.read()
"""


def _temporaries(directory: Path, output: str) -> set[str]:
    return {name for name in os.listdir(directory) if name.startswith(f".{output}.")}


def test_the_next_writer_removes_a_dead_writers_temporary_but_not_a_live_ones(tmp_path):
    from smki.files import new_file
    out = tmp_path / "response.zip"
    code = WRITER.format(root=str(ROOT))
    dead = subprocess.run([sys.executable, "-c", code, str(out), "die"], capture_output=True, timeout=60)
    assert dead.returncode == -signal.SIGKILL
    left_by_dead = _temporaries(tmp_path, out.name)
    assert len(left_by_dead) == 1, "the killed writer leaves its temporary"
    live = subprocess.Popen([sys.executable, "-c", code, str(out), "live"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert live.stdout.readline() == b"writing\n"
        live_temporary = _temporaries(tmp_path, out.name) - left_by_dead
        with new_file(out) as stream:
            stream.write(b"whole")
        assert _temporaries(tmp_path, out.name) == live_temporary, "the dead writer's is gone, the live writer's kept"
        assert out.read_bytes() == b"whole"
    finally:
        live.communicate(b"", timeout=60)
    assert _temporaries(tmp_path, out.name) == set()


def test_a_batch_killed_mid_run_leaves_no_temporary_behind_its_rerun(dca, tmp_path):
    entries = {f"k-{i:04d}.csr": f.device_csr(eui64=f"00DB0002{i:08X}") for i in range(1500)}
    batch = write_zip(tmp_path / "k.zip", entries)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", *batch_args(dca, batch, out, "--chunk-size", "25")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not _temporaries(out, "response.zip"):
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert _temporaries(out, "response.zip") and not (out / "response.zip").exists(), "the kill must land while the response is written"
    result = json.loads(smki(*batch_args(dca, batch, out, "--json", "--chunk-size", "25")).stdout)
    assert result["answered_before"] + sum(result["statuses"].values()) == 1500
    assert sorted(os.listdir(out)) == ["response.zip", "status.csv"]


# -- child processes' environment (item 18) ----------------------------------------------------------

def _canaries() -> dict[str, str]:
    return {"SMKI_SO_PIN": f"so-{secrets.token_hex(8)}", "CUSTODIAN_PASSPHRASE": f"pass-{secrets.token_hex(8)}",
            "SMKI_API_KEY": f"api-{secrets.token_hex(8)}"}


def _secrets_in(environ: bytes, canaries: dict[str, str]) -> list[str]:
    values = [*canaries.values(), os.environ[PIN_ENV], os.environ[SO_PIN_ENV]]
    return [value for value in values if value.encode() in environ]


def _children_of(parent: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            if int(stat_line[stat_line.rindex(b")") + 2:].split()[1]) == parent:
                children.append(int(entry))
    return children


def _exec_environ(pid: int) -> tuple[bytes, bytes] | None:
    """(command line, environment) of a child that has exec'd a multiprocessing program, else None.
    The command line is read first: before exec a forked child still shows its parent's memory."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing" not in command:
            return None
        return command, Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None


def test_batch_workers_and_the_resource_tracker_inherit_no_secret(dca, tmp_path):
    canaries = _canaries()
    entries = {f"e-{i:03d}.csr": f.device_csr(eui64=f"00DB0003{i:08X}") for i in range(300)}
    batch = write_zip(tmp_path / "e.zip", entries)
    process = subprocess.Popen([sys.executable, "-m", "smki.cli.main", *batch_args(dca, batch, tmp_path, "--json", "--chunk-size", "10")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **canaries})
    seen: dict[int, tuple[bytes, bytes]] = {}
    while process.poll() is None:
        for pid in _children_of(process.pid):
            if pid not in seen and (found := _exec_environ(pid)) is not None:
                seen[pid] = found
        time.sleep(0.005)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["issued"] == 300, "the workers signed: the PIN reached them through the initialiser"
    workers = [environ for command, environ in seen.values() if b"spawn_main" in command]
    trackers = [environ for command, environ in seen.values() if b"resource_tracker" in command]
    assert len(workers) >= 2 and len(trackers) == 1, [command for command, _ in seen.values()]
    for environ in workers + trackers:
        assert b"SOFTHSM2_CONF=" in environ  # what a worker needs is there: the environment was read
        assert _secrets_in(environ, canaries) == []


def test_signing_pool_workers_inherit_no_secret(new_hsm_key, hsm_token, monkeypatch):
    import hashlib
    import multiprocessing
    from smki.hsm.pool import SigningPool
    canaries = _canaries()
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    key, _ = new_hsm_key()
    with SigningPool(key, hsm_token.pin, workers=2) as pool:
        assert len(list(pool.sign_digests([hashlib.sha256(b"x").digest()]))) == 1
        environs = [Path(f"/proc/{child.pid}/environ").read_bytes() for child in multiprocessing.active_children()]
    assert len(environs) >= 2 and all(b"SOFTHSM2_CONF=" in environ for environ in environs)
    assert [_secrets_in(environ, canaries) for environ in environs] == [[]] * len(environs)
    assert os.environ["SMKI_API_KEY"] == canaries["SMKI_API_KEY"], "this process's own environment is restored"


def test_softhsm2_util_inherits_no_secret(tmp_path, monkeypatch):
    from smki.hsm.softhsm import init_token
    real = shutil.which("softhsm2-util")
    dump = tmp_path / "environments"
    wrapper = tmp_path / "bin" / "softhsm2-util"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\n{shutil.which("env")} >> "{dump}"\necho ---- >> "{dump}"\nexec "{real}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    canaries = _canaries()
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    init_token(f"hard-{secrets.token_hex(4)}", os.environ[SO_PIN_ENV], os.environ[PIN_ENV])
    text = dump.read_bytes()
    assert text.count(b"----\n") >= 2 and b"SOFTHSM2_CONF=" in text  # the label check and the creation, each with the store
    assert _secrets_in(text, canaries) == []


def test_the_child_environment_is_an_allow_list():
    from smki.hsm.child_env import child_environment
    parent = {"PATH": "/bin", "LC_ALL": "C", "SOFTHSM2_CONF": "/x/softhsm2.conf", "SMKI_PKCS11_MODULE": "/x/p11.so",
              "SMKI_API_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s", "VENDOR_HSM_CONF": "/etc/vendor", "SMKI_CHILD_ENV": "VENDOR_HSM_CONF"}
    assert child_environment(parent) == {"PATH": "/bin", "LC_ALL": "C", "SOFTHSM2_CONF": "/x/softhsm2.conf", "SMKI_PKCS11_MODULE": "/x/p11.so",
                                         "VENDOR_HSM_CONF": "/etc/vendor", "SMKI_CHILD_ENV": "VENDOR_HSM_CONF"}
