"""Batch device issuance end to end, against the ceiling measured in the same run.

Run: .venv/bin/python benchmarks/bench_batch.py [--count 50000] [--workers 2] [--rounds 3] [--verify-one-in N]

This machine's speed drifts by a fifth from minute to minute, so each round measures its own
ceiling just before its batch, and the median of the rounds is the figure to quote.

Untimed: a throw-away SoftHSM token, a Root DCA and Issuing DCA (and the organisation pair)
made with the smki CLI, and N device CSRs (cached in benchmarks/.cache/). Timed: `smki ca
issue-batch` as an operator runs it (a new process: start-up, intake, issuance, recording,
response ZIP). Ceiling: with the same number of spawned workers, the raw rate of CSR
signature verification (cryptography: parse + proof of possession) and of SoftHSM CKM_ECDSA
signing; a certificate needs one of each, so the ceiling is 1 / (1/verify + 1/sign). Every
HSM signature is also verified before release (the default), so the ceiling of what smki does
adds the raw rate of verifying those signatures: 1 / (1/verify + 1/sign + 1/verify-signature).
Also: peak memory of the whole process tree, and one Organisation Certificate from the CLI.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from hsm_store import throwaway_token  # noqa: E402

CACHE = HERE / ".cache"
HW_TYPE = "1.2.826.0.1.8641679.1.2.2.1"


def smki(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "smki.cli.main", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"smki {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result


# -- request generation (untimed) -------------------------------------------------------------
def _device_csr(index: int) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding

    from smki.identifiers import EUI64
    from smki.profiles.extensions import hardware_module_name

    key = ec.generate_private_key(ec.SECP256R1())
    usage = index % 2 == 0
    builder = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
               .add_extension(x509.KeyUsage(usage, False, False, False, not usage, False, False, False, False), critical=True)
               .add_extension(x509.SubjectAlternativeName([hardware_module_name(HW_TYPE, EUI64(bytes.fromhex(f"00DB{index:012X}")))]), critical=True))
    return builder.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM)


def _generate(indices: range) -> list[bytes]:
    return [_device_csr(i) for i in indices]


def device_batch(count: int, workers: int) -> Path:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"device-csrs-{count}.zip"
    if path.exists():
        return path
    step = 2000
    with multiprocessing.get_context("spawn").Pool(workers) as pool, zipfile.ZipFile(path.with_suffix(".tmp"), "w", zipfile.ZIP_DEFLATED) as archive:
        for start, csrs in zip(range(0, count, step), pool.imap(_generate, [range(s, min(s + step, count)) for s in range(0, count, step)])):
            for offset, csr in enumerate(csrs):
                archive.writestr(f"device-{start + offset:06d}.csr", csr)
    path.with_suffix(".tmp").rename(path)
    return path


# -- the ceiling (same workers, raw operations) -----------------------------------------------
_ceiling_worker: dict = {}


def _start_ceiling_worker(label: str, pin: str) -> None:
    from smki.hsm.config import default_module_path
    from smki.hsm.keys import find_key_pair
    from smki.hsm.session import open_session

    session = open_session(default_module_path(), label, pin)
    _ceiling_worker["key"] = find_key_pair(session, "bench-issuing-d", b"\xd2")[1]


def _verify(ders: list[bytes]) -> int:
    from cryptography import x509
    return sum(x509.load_der_x509_csr(der).is_signature_valid for der in ders)


def _sign(digests: list[bytes]) -> int:
    return len(_signatures(digests))  # the count only: the timed rate carries no signatures back over the pipe


def _signatures(digests: list[bytes]) -> list[bytes]:
    from pkcs11 import Mechanism
    return [_ceiling_worker["key"].sign(digest, mechanism=Mechanism.ECDSA) for digest in digests]


def _verify_signatures(pairs: list[tuple[bytes, bytes, bytes]]) -> int:
    """(point, digest, raw r||s) each: what the batch does to every HSM signature before release."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    prehashed = ec.ECDSA(utils.Prehashed(hashes.SHA256()))
    public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pairs[0][0])
    for _, digest, raw in pairs:
        public_key.verify(utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")), digest, prehashed)
    return len(pairs)


def ceiling(batch: Path, label: str, pin: str, workers: int, count: int, point: bytes) -> tuple[float, float, float]:
    import base64
    with zipfile.ZipFile(batch) as archive:
        names = archive.namelist()[:count]
        ders = [base64.b64decode(b"".join(archive.read(n).splitlines()[1:-1])) for n in names]
    digests = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(len(ders))]
    chunks = lambda items: [items[i:i + 250] for i in range(0, len(items), 250)]  # noqa: E731
    with multiprocessing.get_context("spawn").Pool(workers, _start_ceiling_worker, (label, pin)) as pool:
        pool.map(_sign, chunks(digests[: workers * 250]))  # warm-up: spawn, log in
        start = time.perf_counter()
        assert sum(pool.map(_verify, chunks(ders))) == len(ders)
        verify_rate = len(ders) / (time.perf_counter() - start)
        start = time.perf_counter()
        assert sum(pool.map(_sign, chunks(digests))) == len(digests)
        sign_rate = len(digests) / (time.perf_counter() - start)
        signatures = [signature for signed in pool.map(_signatures, chunks(digests)) for signature in signed]  # untimed
        start = time.perf_counter()
        assert sum(pool.map(_verify_signatures, chunks([(point, d, s) for d, s in zip(digests, signatures)]))) == len(digests)
        signature_verify_rate = len(digests) / (time.perf_counter() - start)
    return verify_rate, sign_rate, signature_verify_rate


def issuing_ca_point(certificate: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    public_key = x509.load_pem_x509_certificate(certificate.read_bytes()).public_key()
    return public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


# -- measuring a command ----------------------------------------------------------------------
def _tree_rss_kib(pid: int) -> int:
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            with open(f"/proc/{current}/task/{current}/children") as children:
                pending.extend(int(child) for child in children.read().split())
        except (OSError, StopIteration):
            continue
    return total


def run_measured(args: list[str], profile: str | None = None) -> tuple[float, int, str]:
    """(wall seconds, peak RSS of the process tree in KiB, stdout); `profile`: a cProfile output file for the main process."""
    start = time.perf_counter()
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    process = subprocess.Popen([sys.executable, *profiler, "-m", "smki.cli.main", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_kib(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    seconds = time.perf_counter() - start
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"smki {' '.join(args[:2])} failed: {stderr.strip()}")
    return seconds, peak[0], stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=50000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--verify-one-in", type=int, default=1, help="as issue-batch: 1 verifies every HSM signature")
    parser.add_argument("--rounds", type=int, default=3, help="Batches timed, each after its own ceiling measurement; the median is reported.")
    parser.add_argument("--profile", help="Write a cProfile of the issue-batch main process to this file.")
    options = parser.parse_args()
    label, pin = throwaway_token("bench-batch")
    os.environ["SMKI_BENCH_PIN"] = pin
    work = Path(tempfile.mkdtemp(prefix="smki-bench-batch-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    state = ["--state", str(work / "state")]
    keys = {}
    for name, key_id in (("bench-root-d", "d1"), ("bench-issuing-d", "d2"), ("bench-root-o", "01"), ("bench-issuing-o", "02")):
        keys[name] = ["--token", label, "--key-label", name, "--key-id", key_id, "--pin-source", "env:SMKI_BENCH_PIN"]
        smki("hsm", "keygen", *keys[name], *state)
    for kind, root, issuing in (("device", "bench-root-d", "bench-issuing-d"), ("organisation", "bench-root-o", "bench-issuing-o")):
        smki("policy", "adopt", f"builtin:{kind}", *state)
        policy = ["--policy", f"builtin:{kind}", "--environment", "test"]
        smki("cert", "root", *keys[root], *state, *policy, "--not-before", "2026-01-01", "--out", str(work / f"{root}.pem"))
        smki("hsm", "pubkey", *keys[issuing][:6], "--out", str(work / f"{issuing}.pub"))
        smki("cert", "issuing-ca", *keys[root], *state, *policy, "--not-before", "2026-01-01", "--issuer-cert", str(work / f"{root}.pem"),
             "--public-key", str(work / f"{issuing}.pub"), "--out", str(work / f"{issuing}.pem"))
    print(f"machine: {os.cpu_count()} cores; {options.workers} workers; batch of {options.count:,} device CSRs")
    started = time.perf_counter()
    batch = device_batch(options.count, options.workers)
    print(f"         requests ready in {time.perf_counter() - started:.1f} s (untimed; cached in {batch.relative_to(ROOT)})")

    issuing_point = issuing_ca_point(work / "bench-issuing-d.pem")
    pristine = work / "state-pristine"  # each round issues into a copy: the same batch, never a resume
    shutil.copytree(work / "state", pristine)
    rounds = []
    for round_number in range(1, options.rounds + 1):
        verify_rate, sign_rate, signature_verify_rate = ceiling(batch, label, pin, options.workers, min(options.count, 20000), issuing_point)
        ceiling_rate = 1 / (1 / verify_rate + 1 / sign_rate)
        verified_ceiling_rate = 1 / (1 / verify_rate + 1 / sign_rate + 1 / signature_verify_rate)
        print(f"round {round_number} of {options.rounds}")
        print(f"ceiling  CSR verification, {options.workers} workers            {verify_rate:10,.0f}/s")
        print(f"ceiling  SoftHSM raw CKM_ECDSA sign, {options.workers} workers   {sign_rate:10,.0f}/s")
        print(f"ceiling  HSM signature verification, {options.workers} workers  {signature_verify_rate:10,.0f}/s")
        print(f"ceiling  one verify + one sign each                {ceiling_rate:10,.0f}/s")
        print(f"ceiling  ... and the signature verified (smki's default) {verified_ceiling_rate:6,.0f}/s")
        out = work / f"round-{round_number}"
        shutil.copytree(pristine, out / "state")
        seconds, peak_kib, stdout = run_measured([
            "ca", "issue-batch", *keys["bench-issuing-d"], "--state", str(out / "state"), "--policy", "builtin:device",
            "--environment", "test", "--issuer-cert", str(work / "bench-issuing-d.pem"), "--requester", "supplier", "--device-type", "ESME",
            "--response", str(out / "response.zip"), "--status", str(out / "status.csv"), "--workers", str(options.workers),
            "--verify-one-in", str(options.verify_one_in), "--json", str(batch)], options.profile)
        result = json.loads(stdout)
        assert result["issued"] == options.count, result
        rate = options.count / seconds
        rounds.append((rate, rate / ceiling_rate, rate / verified_ceiling_rate))
        print(f"smki     issue-batch end to end (wall, incl. start-up) {seconds:6.2f} s = {rate:8,.0f} certificates/s")
        print(f"         ratio to the ceiling                       {rate / ceiling_rate:6.0%}")
        if options.verify_one_in == 1:
            print(f"         ratio to the ceiling with signature verification {rate / verified_ceiling_rate:4.0%}")
        print(f"         issuance phase alone (as the command reports) {result['seconds']:6.2f} s")
        print(f"         peak RSS, whole process tree               {peak_kib / 1024:6.0f} MiB  (target < 1024 MiB: {'met' if peak_kib < 1024 * 1024 else 'MISSED'})")
        shutil.rmtree(out)
    rate, ratio, verified_ratio = (statistics.median(values) for values in zip(*rounds))
    print(f"median of {len(rounds)} rounds: {rate:,.0f} certificates/s (target >= 5,000/s: {'met' if rate >= 5000 else 'MISSED'}); "
          f"{ratio:.0%} of the ceiling (aim >= 70%)" + (f"; {verified_ratio:.0%} of the ceiling with signature verification" if options.verify_one_in == 1 else ""))

    sys.path.insert(0, str(ROOT / "tests"))
    from csr_factory import organisation_csr
    # As installed: a wheel install compiles smki's .pyc files, so the command does not compile its own
    # source on every run (which it would here under PYTHONDONTWRITEBYTECODE, as in CI's shells).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "smki")], check=True)
    floor = statistics.median(_start_up_floor() for _ in range(5))
    walls = []
    for attempt in range(5):
        (work / f"org-{attempt}.csr").write_bytes(organisation_csr(eui64=f"90B3D51F3001{attempt:04X}"))
        wall, _, _ = run_measured(["ca", "issue-org", *keys["bench-issuing-o"], *state, "--policy", "builtin:organisation",
                                   "--environment", "test", "--issuer-cert", str(work / "bench-issuing-o.pem"), "--requester", "supplier",
                                   "--out", str(work / f"org-{attempt}.pem"), str(work / f"org-{attempt}.csr")])
        walls.append(wall)
    median = statistics.median(walls)
    print(f"floor    Python start-up + the libraries one certificate needs   {floor:5.2f} s")
    print(f"smki     one Organisation Certificate, CLI wall (median of 5) {median:5.2f} s  (target <= 0.3 s: {'met' if median <= 0.3 else 'MISSED'}; "
          f"{median - floor:4.2f} s above the floor)")


def _start_up_floor() -> float:
    """Wall time of a Python that only imports what issuing one certificate cannot do without: the ceiling for `ca issue-org`."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import click, sqlite3, yaml, jsonschema, pkcs11, asn1crypto.x509, cryptography.x509"], check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
