"""The SMKI served: `smki serve` (2 workers) over keep-alive mutual TLS, against the same run's ceilings and CLI.

Run: .venv/bin/python benchmarks/bench_service.py [--adhoc 30000] [--adhoc-seconds 10] [--repository-size 2000000]
     [--repository-seconds 10] [--batch 50000] [--client-processes 1] [--profile-workers DIR]
(benchmarks/run.sh runs it; SMKI_BENCH_SERVICE_REPOSITORY_SIZE=N sets the store's size, 0 leaves the repository out.)

The service is smki.testing's TestService: a lab test PKI on a throw-away SoftHSM token (the shipped policies with
the usage rules relaxed: no interval between ad hoc CSRs, batches at any hour and approved automatically), lab
TLS credentials (RSA 2048, TLS 1.2+, a client certificate per role), `smki serve --config` started as an operator
starts it. The load comes from benchmarks/loadgen.py (asyncio, one request in flight per keep-alive connection,
every answer checked), in its own process(es) on the same 2 cores as the service.

(a) Ad hoc Device CSRs at 16 connections: each device is given a first certificate untimed (an ad hoc request
    replaces: the policy's single_request_requires_existing), then each replacement CSR is sent once; an answer
    counts only when it is HTTP 200 with Status SUCCESS. Targets: >= 1,500 certificates/s, p99 < 50 ms.
    Ceilings: issue_device in one process (the actor alone, no HTTP: the service has 2 such processes), and a
    trivial aiohttp handler behind the same TLS with 2 workers (the HTTP + TLS alone).
(b) Repository search + retrieve at 64 connections, on bench_repository.py's synthetic store (cached in
    benchmarks/.cache/; 2,000,000 certificates by default: generated in about two minutes here, once), half searches
    by EUI-64 and half retrieves by serial, every answer 200. Targets: >= 5,000 requests/s, p99 < 50 ms.
(c) A 50,000-CSR batch (bench_batch.py's cached requests) through SubmitCSRBatch end to end: the POST, the polls
    (every 0.25 s) until COMPLETED, and the results, every one SUCCESS; against `smki ca issue-batch` on the same
    batch in a copy of the same state, run just before. Target: the service within 25 % of the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import loadgen  # noqa: E402

XML_HEADERS = (("Content-Type", "application/xml;charset=UTF-8"),)
ADHOC_PATH = "/1.0/AdHocDeviceCSR"
ADHOC_EUI64_BASE = 0x00DB5E0000000000  # the ad hoc devices (bench_batch.py's batch uses 00-DB-00-...)
CEILING_DEVICES = 1000  # devices for the in-process issue_device ceiling
PIN_ENV = "SMKI_BENCH_SERVICE_PIN"


def line(kind: str, text: str) -> None:
    print(f"{kind:<8} {text}", flush=True)


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


# -- requests (untimed) -----------------------------------------------------------------------------------------

def _device_csrs(arguments: tuple[range, str, int]) -> list[bytes]:
    indices, hw_type, base = arguments
    from cryptography.hazmat.primitives.asymmetric import ec

    from smki.testing import csr

    return [csr.build_csr(ec.generate_private_key(ec.SECP256R1()), b"\x30\x00",
                          [csr.key_usage("digital_signature"), csr.hardware_module_name_san(f"{base + index:016X}", hw_type)])
            for index in indices]


def device_csrs(count: int, hw_type: str, base: int, processes: int = 2) -> list[bytes]:
    """`count` device CSRs (DER, each with a fresh key) for devices base, base + 1, ..."""
    step = 2000
    chunks = [(range(start, min(start + step, count)), hw_type, base) for start in range(0, count, step)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        return [der for chunk in pool.map(_device_csrs, chunks) for der in chunk]


def write_zip(path: Path, ders: list[bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index, der in enumerate(ders):
            archive.writestr(f"device-{index:06d}.csr", base64.b64encode(der))
    return path


def give_first_certificates(pki, ders: list[bytes], work: Path) -> None:
    """Each device's first certificate, in process (issue_batch), so that an ad hoc request for it is a replacement."""
    result = pki.issuing_dca.issue_batch(write_zip(work / "first.zip", ders), response=work / "first-response.zip",
                                         status=work / "first-status.csv", requester="supplier", workers=2)
    assert result.issued == len(ders), result


# -- ceilings -------------------------------------------------------------------------------------------------------

def issue_device_ceiling(pki, ders: list[bytes]) -> float:
    """issue_device in this process (one actor, one HSM session; each certificate its own transaction): certificates/s."""
    dca = pki.issuing_dca
    began = time.perf_counter()
    for der in ders:
        dca.issue_device(der, requester="supplier")
    return len(ders) / (time.perf_counter() - began)


def _trivial_worker(port: int, certificate: str, key: str, client_ca: str, ready) -> None:
    from aiohttp import web

    from smki.web.server import reuse_port_socket

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def serve() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=client_ca)
        context.load_cert_chain(certificate, key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        app = web.Application()
        app.router.add_get("/", ok)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, reuse_port_socket("127.0.0.1", port), ssl_context=context, backlog=1024).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(serve())


def trivial_ceiling(service, connections: int, seconds: float, client_processes: int) -> loadgen.LoadResult:
    """A trivial aiohttp handler in 2 worker processes behind the same TLS (client certificate required)."""
    tls = service.directory / "tls"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    workers = []
    for _ in range(2):
        ready = context.Event()
        worker = context.Process(target=_trivial_worker, args=(port, str(tls / "server.pem"), str(tls / "server.key.pem"),
                                                              str(tls / "lab-transport-ca.pem"), ready), daemon=True)
        worker.start()
        ready.wait(60)
        workers.append(worker)
    try:
        request = loadgen.http_request("GET", "/", "127.0.0.1")
        return loadgen.drive("127.0.0.1", port, client_tls(service), [request], connections=connections, seconds=seconds,
                             processes=client_processes)
    finally:
        for worker in workers:
            worker.terminate()
            worker.join()


def client_tls(service, role: str = "supplier") -> loadgen.ClientTls:
    credential = service.credential(role)
    return loadgen.ClientTls(str(service.ca_file), str(credential.certificate), str(credential.key))


def report_load(label: str, result: loadgen.LoadResult, unit: str, target_rate: float | None, target_p99: float | None,
                kind: str = "smki") -> None:
    good = result.requests - result.failures
    rate = good / result.seconds if result.seconds else 0.0
    p50, p99 = result.percentile(0.50), result.percentile(0.99)
    targets = ""
    if target_rate is not None:
        targets = (f"  (targets >= {target_rate:,.0f}/s: {verdict(rate >= target_rate)}; p99 < {target_p99:.0f} ms: "
                   f"{verdict(p99 < target_p99)})")
    failures = f"{result.failures} failed (first: {result.first_failure})" if result.failures else "every answer checked good"
    line(kind, f"{label} {rate:8,.0f} {unit}/s, p50 {p50:5.1f} ms, p99 {p99:6.1f} ms{targets}")
    line("", f"[{result.requests:,} requests in {result.seconds:.1f} s; {failures}; load {os.getloadavg()[0]:.2f}]")


# -- (a) ad hoc -----------------------------------------------------------------------------------------------------

def adhoc_success(status: int, body: bytes) -> bool:
    return status == 200 and b"<Status>SUCCESS</Status>" in body and b"<Certificate>" in body


def bench_adhoc(service, count: int, seconds: float, connections: int, client_processes: int, work: Path) -> None:
    from smki.identifiers import DeviceType
    from smki.policy import load_policy
    from smki.testing.service import adhoc_request_xml

    pki = service.pki
    hw_type = load_policy(pki.policy_file("device")).hw_type_oid(pki.environment, DeviceType.ESME)
    total = count + CEILING_DEVICES
    began = time.perf_counter()
    firsts = device_csrs(total, hw_type, ADHOC_EUI64_BASE)
    replacements = device_csrs(total, hw_type, ADHOC_EUI64_BASE)
    give_first_certificates(pki, firsts, work)
    line("", f"{total:,} devices given a first certificate, {total:,} replacement CSRs made ({time.perf_counter() - began:.0f} s, untimed)")

    in_process = issue_device_ceiling(pki, replacements[count:])
    line("ceiling", f"issue_device in one process (the actor alone, no HTTP)   {in_process:8,.0f} certificates/s; "
                    f"x2 workers = {2 * in_process:,.0f}/s")
    host, port = service.address
    requests = [loadgen.http_request("POST", ADHOC_PATH, host, adhoc_request_xml(der, f"adhoc-{index}"), XML_HEADERS)
                for index, der in enumerate(replacements[:count])]
    result = loadgen.drive(host, port, client_tls(service), requests, connections=connections, seconds=seconds,
                           processes=client_processes, check=adhoc_success, once=True)
    report_load(f"ad hoc Device CSRs, {connections} connections, served     ", result, "certificates", 1500, 50)
    good = (result.requests - result.failures) / result.seconds
    line("", f"ratio to issue_device in process x2: {good / (2 * in_process):.0%}")


# -- (b) repository -------------------------------------------------------------------------------------------------

def bench_repository(service, store: Path, seconds: float, connections: int, client_processes: int) -> None:
    from bench_repository import retrieve_body, sample_keys, search_body

    from bench_repository import page_cache_residency

    line("", page_cache_residency(store) + "; the store read once now (untimed) so that the run measures the service, "
             "not the disk")
    with open(store, "rb") as whole:
        while whole.read(64 << 20):
            pass
    connection = sqlite3.connect(store)
    keys = sample_keys(connection, 5000, seed=17)
    connection.close()
    in_process = repository_ceiling(store, keys[:2000])
    line("ceiling", f"repository search + retrieve in one process (the answers alone, no HTTP) {in_process:8,.0f} requests/s; "
                    f"x2 workers = {2 * in_process:,.0f}/s")
    host, port = service.address
    headers = (*XML_HEADERS, ("X-API-Key", service.api_key))
    # Connection n sends requests n, n + connections, n + 2 * connections, ...: blocks of `connections` searches,
    # each followed by the block of their retrieves, make every connection send a search, then that pair's retrieve.
    keys = keys[: len(keys) // connections * connections]
    requests = []
    for start in range(0, len(keys), connections):
        block = keys[start:start + connections]
        requests += [loadgen.http_request("POST", "/services/certificatesearch", host, search_body(entity, kind), headers)
                     for entity, kind, _ in block]
        requests += [loadgen.http_request("POST", "/services/retrievecertificate", host, retrieve_body(serial), headers)
                     for _, _, serial in block]
    warm = loadgen.drive(host, port, client_tls(service), requests[:2 * connections], connections=connections, seconds=2, processes=1)
    assert warm.failures == 0, warm.first_failure
    result = loadgen.drive(host, port, client_tls(service), requests, connections=connections, seconds=seconds,
                           processes=client_processes)
    report_load(f"repository search+retrieve, {connections:2d} connections       ", result, "requests",
                5000 if connections == 64 else None, 50 if connections == 64 else None)


def repository_ceiling(store: Path, keys: list[tuple[str, str, str]]) -> float:
    """The Librarian's RepositoryService answering search and retrieve in this process (what a worker's actor thread does)."""
    from bench_repository import retrieve_body, search_body

    from smki.librarian.repository_service import RepositoryService, to_xml_bytes
    from smki.store import open_database

    service = RepositoryService(lambda: open_database(store), {"ceiling-key"})
    began = time.perf_counter()
    for entity, kind, serial in keys:
        to_xml_bytes(service.search(search_body(entity, kind), "ceiling"))
        to_xml_bytes(service.retrieve(retrieve_body(serial), "ceiling"))
    return 2 * len(keys) / (time.perf_counter() - began)


# -- (c) the 50,000-CSR batch -----------------------------------------------------------------------------------------

def batch_xml(batch_zip: Path, client_id: str) -> tuple[bytes, int]:
    """The SubmitCSRBatch of bench_batch.py's ZIP of PEM requests (IDs: the file names without .csr)."""
    parts = [f'<?xml version="1.0" encoding="UTF-8"?><SubmitCSRBatch ID="{client_id}"><Version>1.0</Version>'.encode()]
    count = 0
    with zipfile.ZipFile(batch_zip) as archive:
        for name in archive.namelist():
            pem = archive.read(name)
            body = b"".join(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
            parts.append(b'<DeviceCSR ID="' + name.removesuffix(".csr").encode() + b'">' + body + b"</DeviceCSR>")
            count += 1
    parts.append(b"</SubmitCSRBatch>")
    return b"".join(parts), count


def copy_state(source: Path, target: Path) -> Path:
    """A consistent copy of an authority's state (its SQLite database through the backup API)."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.db", "*.db-wal", "*.db-shm"))
    for database in source.glob("*.db"):
        with sqlite3.connect(database) as live, sqlite3.connect(target / database.name) as copy:
            live.backup(copy)
    return target


def bench_batch(service, count: int, work: Path) -> None:
    from bench_batch import device_batch

    from smki.testing.service import ServiceClient

    pki = service.pki
    began = time.perf_counter()
    batch = device_batch(count, 2)
    body, entries = batch_xml(batch, "bench-batch-1")
    line("", f"{entries:,} requests ready ({time.perf_counter() - began:.0f} s, untimed; {len(body) / 1e6:.1f} MB of SubmitCSRBatch)")

    state = copy_state(pki.state("issuing-dca"), work / "cli-state")
    command = [sys.executable, "-m", "smki.cli.main", "ca", "issue-batch", "--key-uri", pki.key("issuing-dca").uri,
               "--pin-source", f"env:{PIN_ENV}", "--state", str(state), "--policy", str(pki.policy_file("device")),
               "--environment", "test", "--issuer-cert", str(pki.certificate_file("issuing-dca")), "--requester", "supplier",
               "--device-type", "ESME", "--response", str(work / "cli-response.zip"), "--status", str(work / "cli-status.csv"), "--workers", "2", "--json", str(batch)]
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, PIN_ENV: pki.token.pin})
    cli_seconds = time.perf_counter() - began
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["issued"] == entries, done.stdout
    line("cli", f"smki ca issue-batch, {entries:,} CSRs, 2 workers (wall, incl. start-up) {cli_seconds:6.2f} s = "
                f"{entries / cli_seconds:7,.0f} certificates/s")

    with ServiceClient(service.url, ca_file=service.ca_file, certificate=service.credential("supplier").certificate,
                       key=service.credential("supplier").key, timeout=600) as client:
        began = time.perf_counter()
        submitted = client.submit_batch_xml(body)
        accepted = time.perf_counter() - began
        assert submitted.ok, submitted
        while True:  # wait_for_batch's loop, timed: the last poll is the one that fetches the 50,000 results
            last_poll = time.perf_counter()
            result = client.batch_result(submitted.batch_id)
            if result.finished or last_poll - began > 1800:
                break
            time.sleep(0.25)
        service_seconds = time.perf_counter() - began
        fetched = time.perf_counter() - last_poll
    assert result.status == "COMPLETED", result.status
    succeeded = sum(entry.ok for entry in result.results)
    assert succeeded == entries, f"{succeeded} of {entries} SUCCESS"
    ratio = service_seconds / cli_seconds
    line("smki", f"SubmitCSRBatch -> COMPLETED -> results, {entries:,} CSRs  {service_seconds:6.2f} s = "
                 f"{entries / service_seconds:7,.0f} certificates/s")
    line("", f"[submission answered in {accepted:.2f} s; processed by the service's batch processor until the last poll "
             f"{last_poll - began - accepted:.2f} s; the last poll, the {entries:,} results fetched and parsed, {fetched:.2f} s]")
    line("", f"ratio to the CLI in the same run: {ratio:.2f}x the CLI's time (target within 25 %, <= 1.25x: {verdict(ratio <= 1.25)})")


# -- the run ----------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adhoc", type=int, default=20000, help="ad hoc replacement CSRs made (each sent at most once)")
    parser.add_argument("--adhoc-seconds", type=float, default=10)
    parser.add_argument("--repository-size", type=int, default=int(os.environ.get("SMKI_BENCH_SERVICE_REPOSITORY_SIZE", "2000000")))
    parser.add_argument("--repository-seconds", type=float, default=10)
    parser.add_argument("--repository-connections", default="64", help="comma-separated connection counts (the target is at 64)")
    parser.add_argument("--batch", type=int, default=50000)
    parser.add_argument("--client-processes", type=int, default=1, help="load generator processes (the cores are shared)")
    parser.add_argument("--workers", type=int, default=2, help="smki serve's worker processes")
    parser.add_argument("--skip", default="", help="comma-separated: adhoc, repository, batch, ceiling")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from smki.testing import SoftHsmStore, TestService

    work = Path(tempfile.mkdtemp(prefix="smki-bench-service-"))
    try:
        store = SoftHsmStore.create(work / "hsm")
        store.activate()
        token = store.new_token("bench-service")
        line("machine", f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at start")
        repository = None
        if "repository" not in skip and args.repository_size > 0:
            from bench_repository import build_store

            began = time.perf_counter()
            repository = build_store(args.repository_size)
            line("store", f"{args.repository_size:,} certificates ready ({time.perf_counter() - began:.0f} s)")
        service = TestService.start(directory=work / "service", token=token, workers=args.workers, repository=repository)
        try:
            line("service", f"smki serve, {args.workers} worker(s), {service.url}, TLS 1.2+ with lab RSA 2048 credentials, client certificates required")
            if "ceiling" not in skip:
                for connections in (16, 64):
                    report_load(f"trivial aiohttp handler, same TLS, {connections} connections, 2 workers",
                                trivial_ceiling(service, connections, 5, args.client_processes), "requests", None, None, "ceiling")
            if "adhoc" not in skip:
                bench_adhoc(service, args.adhoc, args.adhoc_seconds, 16, args.client_processes, work)
            if repository is not None:
                for connections in map(int, args.repository_connections.split(",")):
                    bench_repository(service, repository, args.repository_seconds, connections, args.client_processes)
            if "batch" not in skip:
                bench_batch(service, args.batch, work)
        finally:
            status = service.stop()
            line("service", f"stopped (exit {status}); load average {os.getloadavg()[0]:.2f} at end")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
