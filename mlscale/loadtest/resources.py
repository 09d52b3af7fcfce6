"""Resource usage once a second: the server's process tree and the load generators.

CPU is reported in cores (1.0 = one core busy for the whole second), memory as
the resident set of the server's whole process tree, so workers count too.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import NamedTuple, TypedDict
from urllib.parse import urlparse

import psutil
from prometheus_client.parser import text_string_to_metric_families

from mlscale.loadtest.results import Sample


def find_server_pid(host_url: str) -> int | None:
    """The process listening on the target's port, when the target is this machine."""
    parsed = urlparse(host_url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        return None
    # A listening socket's laddr is an address; only unconnected UNIX sockets have an empty one.
    pids = {
        c.pid
        for c in connections
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid is not None
    }
    if not pids:
        return None
    # With several workers on one socket, the supervisor is their common parent.
    for pid in pids:
        try:
            parent = psutil.Process(pid).parent()
        except psutil.Error:
            continue
        if parent is not None and parent.pid in pids:
            return parent.pid
    return min(pids)


class TreeReading(NamedTuple):
    """One reading of a process tree, since the previous one."""

    cpu_s: float  # CPU seconds the whole tree used
    rss_mb: float  # its resident memory now
    per_process: dict[int, float]  # CPU seconds by process id


class _Tree:
    """CPU seconds and RSS of a process and its descendants, between two readings."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self._last: dict[int, float] = {}

    def read(self) -> TreeReading | None:
        """(CPU seconds used since the last read, RSS in MB, CPU seconds per process);
        None once the process is gone (a dead server is not one using no memory)."""
        try:
            processes = [self.root, *self.root.children(recursive=True)]
            if self.root.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
                return None
        except psutil.Error:
            return None
        used, rss = 0.0, 0.0
        per_process: dict[int, float] = {}
        seen: dict[int, float] = {}
        for process in processes:
            try:
                times = process.cpu_times()
                total = times.user + times.system
                rss += process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            seen[process.pid] = total
            delta = total - self._last.get(process.pid, total)
            per_process[process.pid] = delta
            used += delta
        self._last = seen
        return TreeReading(used, rss, per_process)


class ServerInternals(TypedDict):
    """The server's own view of each second, as the sample's fields of the same names."""

    in_flight: float | None
    queue_wait_ms: float | None  # mean queue wait of the requests batched in that second
    batch_rows: float | None  # mean rows per predict call


class ServerMetrics:
    """mlscale's own gauges and histograms from the server's /metrics, per second.

    Turns itself off at the first scrape that is not Prometheus text with
    mlscale's metrics (another server, or none at that path).
    """

    _SUMS = ("mlscale_queue_wait_seconds", "mlscale_batch_rows")

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._last: dict[str, tuple[float, float]] = {}

    def read(self) -> ServerInternals:
        empty = ServerInternals(in_flight=None, queue_wait_ms=None, batch_rows=None)
        if self.url is None:
            return empty
        try:
            with urllib.request.urlopen(self.url, timeout=0.5) as response:
                text = response.read().decode()
            families = {f.name: f for f in text_string_to_metric_families(text)}
        except (OSError, ValueError):
            self.url = None if not self._last else self.url
            return empty
        if "mlscale_in_flight_requests" not in families:
            self.url = None
            return empty
        values = ServerInternals(
            in_flight=sum(s.value for s in families["mlscale_in_flight_requests"].samples),
            queue_wait_ms=None,
            batch_rows=None,
        )
        for name in self._SUMS:
            family = families.get(name)
            if family is None:
                continue
            total = sum(s.value for s in family.samples if s.name == f"{name}_sum")
            count = sum(s.value for s in family.samples if s.name == f"{name}_count")
            previous = self._last.get(name)
            self._last[name] = (total, count)
            if previous and count > previous[1]:
                mean = (total - previous[0]) / (count - previous[1])
                if name == "mlscale_queue_wait_seconds":
                    values["queue_wait_ms"] = mean * 1000
                else:
                    values["batch_rows"] = mean
        return values


class ResourceMonitor:
    """Samples the server and the generator processes each second, in a thread."""

    def __init__(
        self, server_pid: int | None, generator_pids: list[int], metrics_url: str | None = None
    ) -> None:
        self.samples: list[Sample] = []
        self._metrics = ServerMetrics(metrics_url)
        self._server = _Tree(server_pid) if server_pid and psutil.pid_exists(server_pid) else None
        self._generators = [_Tree(pid) for pid in generator_pids if psutil.pid_exists(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlscale-monitor", daemon=True)

    def start(self) -> ResourceMonitor:
        self._read()  # baseline readings
        self._metrics.read()
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(5)
        return self.samples

    def _read(self) -> tuple[TreeReading | None, list[TreeReading]]:
        server = self._server.read() if self._server else None
        generators = [reading for tree in self._generators if (reading := tree.read()) is not None]
        return server, generators

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(1.0 - (time.time() % 1.0)):
            now = time.monotonic()
            elapsed = max(now - last, 1e-3)
            last = now
            server, generators = self._read()
            per_process = [d / elapsed for g in generators for d in g.per_process.values()]
            internals = self._metrics.read()
            self.samples.append(
                Sample(
                    second=int(time.time()) - 1,
                    server_cpu=server.cpu_s / elapsed if server else None,
                    server_rss_mb=server.rss_mb if server else None,
                    generator_cpu=sum(g.cpu_s for g in generators) / elapsed if generators else None,
                    generator_cpu_max=max(per_process, default=None),
                    **internals,
                )
            )
