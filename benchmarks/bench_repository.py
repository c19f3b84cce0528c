"""The SMKI Repository at scale: lookups in a 10,000,000-certificate store and the web service's request rate.

Run: .venv/bin/python benchmarks/bench_repository.py [--size 10000000] [--lookups 20000] [--seconds 10]
     [--connections 4,16,64] [--skip-service]
(benchmarks/run.sh: SMKI_BENCH_REPOSITORY_SIZE=N sets the size, 0 skips this benchmark.)

The store is synthetic, generated untimed through smki's own open_database (so the real schema,
migrations and indexes) and cached in benchmarks/.cache/ keyed by size, schema version and
generator version; reruns reuse it. Every row carries a real DCC test-PKI certificate's DER as a
template (the same bytes for every device row, and for every organisation row), so the row sizes
are real but the DER does not match the row's serial.
(a) search by EUI-64 (search_certificates, the service's query, and list_certificates) and by
    serial (find_certificate): p50/p99/max over random keys, 10 % of them absent. Target p99 < 2 ms.
(b) the web service (smki.web's serve_repository, one process) on loopback over the same store, driven by wrk (keep-alive
    connections, a Lua script posting search-and-retrieve pairs) or, without wrk, by processes
    using http.client. Target >= 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from smki.store import SCHEMA_VERSION, find_certificate, list_certificates, open_database, search_certificates

GENERATOR_VERSION = 1  # bump when the synthetic mix changes, so cached stores are rebuilt
CACHE = Path(__file__).resolve().parent / ".cache"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dcc-test-pki"
if not FIXTURES.is_dir():
    FIXTURES = Path("/work/shared/fixtures/dcc-test-pki")
API_KEY = "bench-api-key-0123456789"
ORGANISATION_SHARE = 0.005        # 0.5 % of rows: organisation certificates, about 5 per organisation EUI-64
DEVICE_OUIS = ("00DB12", "0015BC", "70B3D5", "001EC0", "D8A98B", "00124B")
ORGANISATION_ROLES = ("01", "02", "02", "02", "03", "03", "04", "05", "06", "08")
POLICY_SHA256 = "5E" * 32


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def template_der(name: str) -> bytes:
    return x509.load_pem_x509_certificate((FIXTURES / name).read_bytes()).public_bytes(Encoding.DER)


# ---------------------------------------------------------------------------------------------------------------
# The synthetic store (untimed)


def _rows(size: int, seed: int):
    """Yield batches of row tuples in issue order: devices get a DS and a KA certificate (5 % a re-issued KA
    as well); organisations (EUI-64 90-B3-D5-1F-3x-xx-xx-xx) get DS and KA certificates per role."""
    rng = random.Random(seed)
    device_der = template_der("device-ds-00DB1234567890A0.pem")
    organisation_der = template_der("org-supplier-ds-90B3D51F30010000.pem")
    dca = ("47D40AF3412904A0", "8C1E5A0D33B76F12")   # two Issuing DCA keys (a rollover)
    oca = "4F5688D7EC933BE2"
    start = datetime(2016, 4, 6, tzinfo=timezone.utc)
    step = timedelta(days=3650) / size
    organisation_count = max(1, int(size * ORGANISATION_SHARE / 5))
    organisations = [f"90B3D51F3{i:07X}" for i in rng.sample(range(1 << 28), organisation_count)]
    serial_fix = bytes(((b & 0x3F) | 0x40) for b in range(256))  # 16 octets, positive, no leading zero octet
    produced, batch_size = 0, 100_000
    device_number = 0
    while produced < size:
        n = min(batch_size, size - produced)
        raw = bytearray(os.urandom(16 * n))
        raw[0::16] = bytes(raw[0::16]).translate(serial_fix)
        serials = raw.hex().upper()
        keys = os.urandom(8 * n).hex().upper()
        requests = os.urandom(32 * n).hex().upper()
        batch = []
        i = 0
        while i < n:
            issued = start + step * (produced + i)
            issued_at = issued.isoformat(timespec="seconds")
            not_before = issued.replace(microsecond=0).isoformat()
            if rng.random() < ORGANISATION_SHARE:
                entity = rng.choice(organisations)
                role = rng.choice(ORGANISATION_ROLES)
                status = "R" if rng.random() < 0.03 else "I"
                not_after = (issued.replace(microsecond=0) + timedelta(days=3652, seconds=-1)).isoformat()  # 10 years less 1 s
                entries = [("organisation", oca, entity, role, rng.choice(("DS", "KA")), status, not_after,
                            "organisation", organisation_der)]
            else:
                device_number += 1
                entity = f"{rng.choice(DEVICE_OUIS)}{rng.getrandbits(40):010X}"
                status = rng.choices(("I", "N", "R", "P"), (0.90, 0.05, 0.02, 0.03))[0]
                issuer = dca[device_number % 2]
                entries = [("device", issuer, entity, None, usage, status, "9999-12-31T23:59:59+00:00", "device", device_der)
                           for usage in ("DS", "KA", "KA")[: 3 if rng.random() < 0.05 else 2]]
            for certificate_type, issuer, entity, role, usage, status, not_after, policy, der in entries[: n - i]:
                batch.append((serials[32 * i: 32 * i + 32], issuer, certificate_type, keys[16 * i: 16 * i + 16], entity,
                              role, usage, status, not_before, not_after, policy, "1.0", POLICY_SHA256,
                              requests[64 * i: 64 * i + 64], issued_at, der))
                i += 1
        produced += n
        yield batch


def build_store(size: int) -> Path:
    """The cached store of `size` certificates, generating it (minutes) when absent."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"repository-{size}-schema{SCHEMA_VERSION}-gen{GENERATOR_VERSION}.db"
    if path.exists():
        print(f"store    reusing {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
        return path
    for stale in CACHE.glob(f"repository-{size}-schema*-gen*.db*"):  # an older schema's or generator's store: ~11 GB each
        print(f"store    removing stale {stale.name}")
        stale.unlink()
    partial = path.with_suffix(".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    free = shutil.disk_usage(CACHE).free
    if free < size * 1100 + (2 << 30):
        sys.exit(f"store    needs about {size * 1100 / 1e9:.1f} GB in {CACHE}; only {free / 1e9:.1f} GB free")
    print(f"store    generating {size:,} certificates into {path.name} (untimed, once) ...", flush=True)
    began = time.perf_counter()
    connection = open_database(partial, create=True)  # the real schema: every migration, every index
    indexes = connection.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'certificates' "
                                 "AND sql IS NOT NULL").fetchall()
    # Generation only: no journal, no syncs, a large cache; secondary indexes are rebuilt by sorting afterwards.
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("PRAGMA cache_size = -1500000")
    for name, _ in indexes:
        connection.execute(f"DROP INDEX {name}")
    columns = ("serial_hex, issuer_key_id, certificate_type, subject_key_id, entity_id, role, key_usage, status, "
               "not_before, not_after, policy_name, policy_version, policy_sha256, request_sha256, issued_at, der")
    insert = f"INSERT INTO certificates ({columns}) VALUES ({', '.join('?' * 16)})"
    done = 0
    for batch in _rows(size, seed=size):
        connection.execute("BEGIN")
        connection.executemany(insert, batch)
        connection.execute("COMMIT")
        done += len(batch)
        if done % 1_000_000 == 0:
            print(f"         {done:,} rows, {time.perf_counter() - began:,.0f} s", flush=True)
    for name, sql in indexes:
        connection.execute(sql)
        print(f"         index {name} rebuilt, {time.perf_counter() - began:,.0f} s", flush=True)
    connection.execute("PRAGMA journal_mode = WAL")  # as open_database leaves it
    connection.close()
    os.replace(partial, path)
    print(f"store    generated in {time.perf_counter() - began:,.0f} s: {path.stat().st_size / 1e9:.2f} GB", flush=True)
    return path


# ---------------------------------------------------------------------------------------------------------------
# (a) lookups


def sample_keys(connection: sqlite3.Connection, count: int, seed: int) -> list[tuple[str, str, str]]:
    """(entity_id, certificate_type, serial_hex) of `count` random existing rows."""
    rng = random.Random(seed)
    top = connection.execute("SELECT MAX(rowid) FROM certificates").fetchone()[0]
    keys = []
    while len(keys) < count:
        row = connection.execute("SELECT entity_id, certificate_type, serial_hex FROM certificates WHERE rowid = ?",
                                 (rng.randint(1, top),)).fetchone()
        if row is not None:
            keys.append(tuple(row))
    return keys


def page_cache_residency(path: Path) -> str:
    """How much of the store the OS page cache holds (fincore, util-linux), as lookups touch random table pages."""
    try:
        output = subprocess.run(["fincore", "-b", "-n", "-o", "RES", str(path)], check=True, capture_output=True, text=True).stdout
        return f"page cache held {int(output.split()[0]) / 1e9:.1f} of {path.stat().st_size / 1e9:.1f} GB before the lookups"
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return "page cache residency unknown (no fincore)"


def timed(calls: list, function) -> tuple[list[float], list[int]]:
    latencies, found = [], []
    for args in calls:
        began = time.perf_counter_ns()
        result = function(*args)
        latencies.append((time.perf_counter_ns() - began) / 1e6)
        found.append(len(result))
    return latencies, found


def report(label: str, latencies: list[float], found: list[int], hit_count: int) -> float:
    ordered = sorted(latencies)
    hits = sum(1 for f in found[:hit_count] if f)
    p99 = percentile(ordered, 0.99)
    print(f"smki     {label:<37} p50 {percentile(ordered, 0.50):6.3f} ms  p99 {p99:6.3f} ms  max {ordered[-1]:6.2f} ms"
          f"  ({len(latencies):,} lookups, {hits:,} of {hit_count:,} present keys found, "
          f"{sum(1 for f in found[hit_count:] if f)} of {len(found) - hit_count:,} absent)  target p99 < 2 ms")
    return p99


def bench_lookups(path: Path, lookups: int) -> None:
    connection = open_database(path)
    size = connection.execute("SELECT MAX(rowid) FROM certificates").fetchone()[0]
    plan = {
        "search": connection.execute("EXPLAIN QUERY PLAN SELECT * FROM certificates WHERE entity_id = ? AND certificate_type = ? "
                                     "ORDER BY issued_at, serial_hex", ("", "")).fetchall(),
        "serial": connection.execute("EXPLAIN QUERY PLAN SELECT * FROM certificates WHERE serial_hex = ?", ("",)).fetchall(),
    }
    print("         query plans: " + "; ".join(f"{k}: {' / '.join(r[3] for r in v)}" for k, v in plan.items()))
    present = lookups - lookups // 10
    drawn = sample_keys(connection, 3 * present + 2000, seed=7)  # fresh keys for each pass and the warm-up
    warm, passes = drawn[:2000], [drawn[2000 + i * present: 2000 + (i + 1) * present] for i in range(3)]
    rng = random.Random(11)
    absent_entities = [(f"{rng.getrandbits(64):016X}", rng.choice(("device", "organisation"))) for _ in range(lookups - present)]
    absent_serials = [f"{(rng.getrandbits(126) | (1 << 126)):032X}" for _ in range(lookups - present)]
    resident = page_cache_residency(path)
    # A short warm-up (connection, statement cache, index roots); each timed pass then uses keys of its own.
    for e, t, s in warm:
        search_certificates(connection, entity_id=e, certificate_type=t)
        find_certificate(connection, s)

    results: list[float] = []

    def search(entity: str, kind: str):
        return search_certificates(connection, entity_id=entity, certificate_type=kind)

    def listing(entity: str, _kind: str):
        return list_certificates(connection, entity_id=entity)

    def serial(serial_hex: str):
        return find_certificate(connection, serial_hex)

    for label, calls, function in (("search_certificates by EUI-64+type:", [(e, t) for e, t, _ in passes[0]] + absent_entities, search),
                                   ("list_certificates(entity_id=...):", [(e, t) for e, t, _ in passes[1]] + absent_entities, listing),
                                   ("find_certificate by serial:", [(s,) for _, _, s in passes[2]] + [(s,) for s in absent_serials], serial)):
        order = list(range(len(calls)))
        random.Random(13).shuffle(order)
        latencies, found = timed([calls[i] for i in order], function)
        back = sorted(range(len(order)), key=order.__getitem__)  # un-shuffle so hits come first for the tally
        found = [found[i] for i in back]
        report(label, [latencies[i] for i in back], found, present)
        results.append(sum(found[:present]) / present)
    print(f"         {size:,} rows; each pass: {present:,} present keys from random rowids (fresh ones per pass), "
          f"{lookups - present:,} random absent keys; mean certificates per EUI-64 answer {results[0]:.2f}; "
          f"one connection, one thread; {resident}")
    connection.close()


# ---------------------------------------------------------------------------------------------------------------
# (b) the web service


def search_body(entity: str, kind: str) -> bytes:
    hyphenated = "-".join(entity[i:i + 2] for i in range(0, 16, 2))
    tag = "CertificateSubjectName" if kind == "organisation" else "CertificateSubjectAltName"
    return f"<CertificateSearchRequest><{tag}>{hyphenated}</{tag}></CertificateSearchRequest>".encode()


def retrieve_body(serial_hex: str) -> bytes:
    return f"<CertificateDataRequest><CertificateSerial>{serial_hex}</CertificateSerial></CertificateDataRequest>".encode()


WRK_SCRIPT = """
local pairs_ = {%s}
local counter, offset = 0, 0
function setup(thread) thread:set("offset", math.random(0, #pairs_ - 1)) end
function init(args) counter = offset * 2 end
request = function()
  local i = math.floor(counter / 2) %% #pairs_ + 1
  local pair = pairs_[i]
  counter = counter + 1
  if counter %% 2 == 1 then
    return wrk.format("POST", "/services/certificatesearch?apikey=%s", {["Content-Type"] = "application/xml"}, pair[1])
  end
  return wrk.format("POST", "/services/retrievecertificate?apikey=%s", {["Content-Type"] = "application/xml"}, pair[2])
end
"""


def _lua_string(data: bytes) -> str:
    return '"' + data.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def _serve(path: Path):
    from smki.librarian.repository_service import RepositoryService
    from smki.web.server import serve_repository

    service = RepositoryService(lambda: open_database(path), {API_KEY})
    return serve_repository(service, max_connections_per_client=256)  # every benchmark connection comes from loopback


def _client_worker(address, pairs, seconds, queue, go) -> None:
    import http.client

    connection = http.client.HTTPConnection(*address, timeout=30)
    done, bad, i = 0, 0, random.randrange(len(pairs))
    queue.put("ready")
    go.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        search, retrieve = pairs[i % len(pairs)]
        i += 1
        for route, body in (("certificatesearch", search), ("retrievecertificate", retrieve)):
            connection.request("POST", f"/services/{route}?apikey={API_KEY}", body=body, headers={"Content-Type": "application/xml"})
            response = connection.getresponse()
            response.read()
            done += 1
            bad += response.status != 200
    queue.put((done, bad))


def _wrk(wrk: str, script: Path, address: tuple, connections: int, threads: int, seconds: float) -> None:
    command = [wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:.0f}s", "--latency", "-s", str(script),
               f"http://{address[0]}:{address[1]}"]
    load_before = os.getloadavg()[0]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    lines = output.splitlines()
    rate = float(next(line for line in lines if line.startswith("Requests/sec")).split()[1])
    errors = [line.strip() for line in lines if "Non-2xx" in line or "Socket errors" in line]
    latency = {line.split()[0]: line.split()[1] for line in lines if line.strip().startswith(("50%", "99%"))}
    total = next(line.strip() for line in lines if "requests in" in line).split(",")[0]
    print(f"smki     web service, {connections:3d} connections:       {rate:8,.0f} requests/s  (target >= 1,000)  "
          f"[wrk -t{min(threads, connections)} -c{connections} {seconds:.0f} s: {total}, latency p50 {latency.get('50%')} "
          f"p99 {latency.get('99%')}, {'; '.join(errors) or 'every answer 200'}, load {load_before:.2f}]")


def _python_clients(address: tuple, pairs: list, connections: int, seconds: float) -> None:
    load_before = os.getloadavg()[0]
    context = multiprocessing.get_context("spawn")
    queue, go = context.Queue(), context.Event()
    workers = [context.Process(target=_client_worker, args=(address, pairs, seconds, queue, go)) for _ in range(connections)]
    for worker in workers:
        worker.start()
    for _ in workers:
        queue.get()  # every client started and imported: all run the same `seconds`
    began = time.perf_counter()
    go.set()
    results = [queue.get() for _ in workers]
    elapsed = time.perf_counter() - began
    for worker in workers:
        worker.join()
    done, bad = sum(r[0] for r in results), sum(r[1] for r in results)
    print(f"smki     web service, {connections:3d} connections:       {done / elapsed:8,.0f} requests/s  (target >= 1,000)  "
          f"[{connections} http.client processes, no wrk on PATH: {done:,} requests in {elapsed:.1f} s, "
          f"{bad} not 200, load {load_before:.2f}]")


def bench_service(path: Path, seconds: float, connection_counts: list[int], threads: int) -> None:
    connection = open_database(path)
    pairs = [(search_body(e, t), retrieve_body(s)) for e, t, s in sample_keys(connection, 5000, seed=17)]
    connection.close()
    server = _serve(path)
    address = server.server_address[:2]
    try:
        import http.client
        check = http.client.HTTPConnection(*address, timeout=30)  # one pair answers 200 before the load starts
        for route, body in (("certificatesearch", pairs[0][0]), ("retrievecertificate", pairs[0][1])):
            check.request("POST", f"/services/{route}?apikey={API_KEY}", body=body, headers={"Content-Type": "application/xml"})
            answer = check.getresponse()
            assert answer.status == 200 and b"<ResponseCode>200</ResponseCode>" in answer.read(), answer.status
        check.close()
        wrk = shutil.which("wrk")
        print("         the service in this process (aiohttp, one event loop and one actor thread, HTTP/1.1 keep-alive) over the store; each client "
              "connection alternates search and retrieve for 5,000 random existing (EUI-64, serial) pairs")
        with tempfile.TemporaryDirectory() as directory:
            script = Path(directory) / "pairs.lua"
            script.write_text(WRK_SCRIPT % (", ".join(f"{{{_lua_string(a)}, {_lua_string(b)}}}" for a, b in pairs), API_KEY, API_KEY))
            for connections in connection_counts:
                if wrk:
                    _wrk(wrk, script, address, connections, threads, seconds)
                else:
                    _python_clients(address, pairs, connections, seconds)
    finally:
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=int(os.environ.get("SMKI_BENCH_REPOSITORY_SIZE", "10000000")))
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10, help="load time per connection count")
    parser.add_argument("--connections", default="4,16,64", help="concurrent keep-alive HTTP connections, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the server needs the other core)")
    parser.add_argument("--skip-service", action="store_true")
    args = parser.parse_args()
    if args.size <= 0:
        print("skipped  (SMKI_BENCH_REPOSITORY_SIZE=0)")
        return
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    print(f"machine  {model}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} at start")
    path = build_store(args.size)
    print(f"store    {args.size:,} certificates, {path.stat().st_size / 1e9:.2f} GB on disk; DER in every row is a real DCC "
          f"test-PKI certificate used as a template (device/organisation), not the row's own certificate")
    bench_lookups(path, args.lookups)
    if not args.skip_service:
        bench_service(path, args.seconds, [int(c) for c in args.connections.split(",")], args.threads)
    print(f"machine  load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
