"""Prometheus metrics, aggregated over every worker process.

With several workers, prometheus_client's multiprocess mode keeps each
worker's values in files under ``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics``
on any worker sums them. The directory must be set before prometheus_client is
imported, so the supervisor sets it before it starts the workers.

Scoring requests of both protocols count alike: ``/invocations`` and the Open
Inference Protocol's infer (endpoint label ``infer``) are in the in-flight gauge
and the latency histogram; the other V2 endpoints are counted as ``v2_health``
and ``v2_metadata``. The in-flight gauge is the signal a concurrency autoscaler (KEDA, Knative)
scales on; the queue wait and batch size histograms show whether batching is
working and whether the server is saturated.
"""

from __future__ import annotations

import os
import re

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from mlscale.serving.batcher import BatchObserver

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384, 65536)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The server's metrics; one instance per worker process."""

    def __init__(self) -> None:
        directory = multiprocess_dir()
        self._multiprocess = directory is not None
        if directory is not None:
            forget_dead_workers(directory)
        # A registry of our own, so that several apps in one process (tests) do not clash.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlscale_requests",
            "Requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mlscale_request_duration_seconds",
            "Time from the request's arrival to its answer, for /invocations and V2 infer.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "mlscale_queue_wait_seconds",
            "Time a request waited in the batch queue before its predict call started.",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.predict = Histogram(
            "mlscale_predict_duration_seconds",
            "Duration of one predict call (one batch), including encoding the answers.",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "mlscale_batch_rows",
            "Rows in one predict call.",
            ["path"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.batch_requests = Histogram(
            "mlscale_batch_requests",
            "Requests merged into one predict call.",
            ["path"],
            buckets=_SIZE_BUCKETS[:9],
            registry=r,
        )
        self.in_flight = Gauge(
            "mlscale_in_flight_requests",
            "Requests being read, queued or predicted now (/invocations and V2 infer).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.model_load = Gauge(
            "mlscale_model_load_seconds",
            "Time to load and warm up the model.",
            multiprocess_mode="max",
            registry=r,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}

    def count(self, endpoint: str, status: int) -> None:
        child = self._request_children.get((endpoint, status))
        if child is None:
            child = self._request_children[endpoint, status] = self.requests.labels(endpoint, str(status))
        child.inc()

    def observer(self, path: str) -> BatchObserver:
        return _Observer(self, path)

    def exposition(self) -> bytes:
        if not self._multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)


class _Observer(BatchObserver):
    def __init__(self, metrics: Metrics, path: str) -> None:
        self._queue_wait = metrics.queue_wait.labels(path)
        self._predict = metrics.predict.labels(path)
        self._rows = metrics.batch_rows.labels(path)
        self._requests = metrics.batch_requests.labels(path)

    def queue_wait(self, seconds: float) -> None:
        self._queue_wait.observe(seconds)

    def batch(self, requests: int, rows: int, seconds: float) -> None:
        self._predict.observe(seconds)
        self._rows.observe(rows)
        self._requests.observe(requests)


_LIVE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that died, so in-flight counts only the living."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _LIVE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            multiprocess.mark_process_dead(int(match.group(1)), directory)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
