"""Prometheus metrics: requests per route, method and status, and their latency.

With several worker processes prometheus_client runs in its multiprocess mode: the parent sets
PROMETHEUS_MULTIPROC_DIR (a fresh directory) before it spawns the workers, each worker writes its
own files there, and /metrics (in any worker) sums them. In one process (the repository alias,
the test kit) the default registry serves.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("smki_http_requests", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram("smki_http_request_duration_seconds", "Time to answer an HTTP request", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def observe(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics page and its content type: every worker's, summed, in multiprocess mode."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_gone(pid: int) -> None:
    """A dead worker's live gauges are dropped (its counters stay summed)."""
    if os.environ.get(MULTIPROCESS_ENV):
        multiprocess.mark_process_dead(pid)
