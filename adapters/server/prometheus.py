"""Prometheus metrics for one server (its own registry, so several apps can live in one process).

The resident-adapter gauge and the swap counter are updated from the worker threads after each
engine call (``observe_resident``), so a scrape never waits for the engine's model lock.
"""

from __future__ import annotations

import threading

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the app)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from adapters.runtime import READY

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("adapters_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.latency = Histogram("adapters_request_latency_seconds", "HTTP request latency (streams: until "
                                 "the first byte)", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("adapters_queue_wait_seconds", "time a request waited in the batch queue",
                                    ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("adapters_batch_size", "rows per engine call", ["kind"],
                                    buckets=SIZE_BUCKETS, registry=r)
        self.batch_adapters = Histogram("adapters_batch_adapters", "distinct adapters (the base counts as one) "
                                        "per engine call", ["kind"], buckets=SIZE_BUCKETS, registry=r)
        self.batch_seconds = Histogram("adapters_batch_seconds", "engine time per batch", ["kind"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Gauge("adapters_queued_rows", "rows waiting for the engine", registry=r)
        self.streams = Gauge("adapters_active_streams", "streaming responses in progress", registry=r)
        self.resident = Gauge("adapters_resident_adapters", "adapters resident on the base (READY)", registry=r)
        self.swaps = Counter("adapters_adapter_swaps", "adapters made resident (load) or dropped "
                             "(unload, evict)", ["event"], registry=r)
        self.tokens = Counter("adapters_generated_tokens", "generated tokens", registry=r)
        self.overloaded = Counter("adapters_rejected_overloaded", "requests refused with 503 (queue full)",
                                  registry=r)
        self._lock = threading.Lock()
        self._resident: set[str] = set()
        self._unloading: set[str] = set()

    def observe_batch(self, kind: str, rows: int, adapters: int, seconds: float) -> None:
        self.batch_rows.labels(kind).observe(rows)
        self.batch_adapters.labels(kind).observe(adapters)
        self.batch_seconds.labels(kind).observe(seconds)

    def expect_unload(self, names: set[str]) -> None:
        with self._lock:
            self._unloading |= names

    def observe_resident(self, infos) -> None:
        """Diff the engine's resident set against the last one seen: new names are loads, names
        gone without an unload request are evictions."""
        names = {i.name for i in infos if i.state == READY and i.name}
        with self._lock:
            added, gone = names - self._resident, self._resident - names
            unloaded = gone & self._unloading
            self._unloading -= gone
            self._resident = names
        if added:
            self.swaps.labels("load").inc(len(added))
        if unloaded:
            self.swaps.labels("unload").inc(len(unloaded))
        if gone - unloaded:
            self.swaps.labels("evict").inc(len(gone - unloaded))
        self.resident.set(len(names))

    def render(self) -> bytes:
        return generate_latest(self.registry)
