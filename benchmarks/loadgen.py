"""A small HTTP/1.1 load generator for the service benchmarks: keep-alive connections over mutual TLS.

wrk, the tool bench_repository.py uses, cannot present a client certificate, and the CSR web services
require one; so the load comes from here: asyncio streams, one request in flight per connection, each
connection's requests written as prepared bytes and answers read by Content-Length (the service
always sends one). Every answer's status is checked: a benchmark that counts refusals as throughput
would measure nothing. Latency is from the request's write to the answer's last byte.

Run in its own processes (`--client-processes`), so its cost is visible beside the server's.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# (method, path, headers, body) -> the request's bytes, made once per distinct request.
Request = bytes


def http_request(method: str, path: str, host: str, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()) -> Request:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


@dataclass(frozen=True)
class ClientTls:
    ca: str
    certificate: str
    key: str

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.certificate, self.key)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


@dataclass
class LoadResult:
    requests: int
    failures: int
    seconds: float
    latencies_ms: list[float]
    first_failure: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")

    def merge(self, other: "LoadResult") -> "LoadResult":
        return LoadResult(self.requests + other.requests, self.failures + other.failures, max(self.seconds, other.seconds),
                          self.latencies_ms + other.latencies_ms, self.first_failure or other.first_failure)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    return status, await reader.readexactly(length) if length else b""


async def _connection(host: str, port: int, tls: ssl.SSLContext, requests: Sequence[Request], start: int, stride: int,
                      deadline: float, check: Callable[[int, bytes], bool], result: LoadResult, once: bool = False) -> None:
    """One keep-alive connection sending until the deadline (with `once`, also until its share of the requests is
    sent: each request at most once); a connection the server closed counts as a failure and is opened again (a
    server that drops connections must not look fast)."""
    index = start

    def more() -> bool:
        return time.perf_counter() < deadline and not (once and index >= len(requests))

    while more():
        reader, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=host)
        try:
            while more():
                request = requests[index % len(requests)]
                index += stride
                began = time.perf_counter()
                writer.write(request)
                status, body = await _read_answer(reader)
                result.latencies_ms.append((time.perf_counter() - began) * 1000)
                result.requests += 1
                if not check(status, body):
                    result.failures += 1
                    result.first_failure = result.first_failure or f"HTTP {status}: {body[:200]!r}"
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            result.failures += 1
            result.first_failure = result.first_failure or f"connection lost: {type(exc).__name__}"
        finally:
            writer.close()


async def _run(host: str, port: int, tls: ClientTls, requests: Sequence[Request], connections: int, seconds: float,
               offset: int, stride: int, check: Callable[[int, bytes], bool], once: bool = False) -> LoadResult:
    context = tls.context()
    result = LoadResult(0, 0, 0.0, [])
    began = time.perf_counter()
    deadline = began + seconds
    await asyncio.gather(*(_connection(host, port, context, requests, offset + n, stride, deadline, check, result, once)
                           for n in range(connections)))
    result.seconds = time.perf_counter() - began
    return result


def _client_process(arguments) -> LoadResult:
    host, port, tls, requests, connections, seconds, offset, stride, check, once = arguments
    return asyncio.run(_run(host, port, tls, requests, connections, seconds, offset, stride, check, once))


def status_200(status: int, body: bytes) -> bool:
    return status == 200


def drive(host: str, port: int, tls: ClientTls, requests: Sequence[Request], *, connections: int, seconds: float,
          processes: int = 1, check: Callable[[int, bytes], bool] = status_200, once: bool = False) -> LoadResult:
    """`connections` keep-alive connections (split over `processes` client processes) sending `requests` round-robin
    for `seconds`; the merged counts and latencies. `check(status, body)` says whether an answer is a success.
    `once`: each request is sent at most once (requests that may not be repeated, e.g. CSRs), so the run also
    ends when they are all sent."""
    processes = max(1, min(processes, connections))
    shares = [connections // processes + (1 if n < connections % processes else 0) for n in range(processes)]
    jobs = [(host, port, tls, requests, share, seconds, sum(shares[:n]), connections, check, once) for n, share in enumerate(shares)]
    if processes == 1:
        return _client_process(jobs[0])
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_client_process, jobs)
    merged = results[0]
    for other in results[1:]:
        merged = merged.merge(other)
    return merged
