"""Containers' CPU and memory once a second, from the engine (``podman stats``).

What a cluster console shows for a pod, here for the stack's containers: CPU in
cores (the CPU time the container's cgroup used over each second) and memory as
the engine counts it (the cgroup's usage less its page cache). The samples are
the load test's own ``Sample`` rows, so the summary and the report are
``mlscale loadtest``'s.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mlscale.containers.engine import Engine
from mlscale.loadtest.resources import ServerMetrics
from mlscale.loadtest.results import Sample

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|µs|us|ns)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGT]?i?B)\s*$")
_BYTES = {
    "B": 1,
    "kB": 1e3,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def go_duration_s(text: str) -> float:
    """Seconds in a Go duration as podman prints it (``1m2.5s``, ``950ms``)."""
    parts = _DURATION.findall(text.strip())
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.strip():
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def size_bytes(text: str) -> float:
    """Bytes in a size as podman prints it (``330.8MB``, decimal units; ``1.5GiB``)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return float(match.group(1)) * _BYTES[match.group(2)]


@dataclass(frozen=True)
class Reading:
    """One container's totals at one moment."""

    name: str
    cpu_s: float  # CPU time used since the container started
    memory_bytes: float


def parse_stats(text: str) -> list[Reading]:
    """``podman stats --no-stream --format json``'s output, read."""
    readings = []
    for entry in json.loads(text or "[]") or []:
        try:
            readings.append(
                Reading(
                    entry["name"],
                    go_duration_s(entry["cpu_time"]),
                    size_bytes(entry["mem_usage"].split("/")[0]),
                )
            )
        except (KeyError, ValueError):
            continue
    return readings


def cores_used(
    before: Sequence[Reading], after: Sequence[Reading], seconds: float, names: Sequence[str]
) -> dict[str, float]:
    """Cores each of ``names`` used between two readings ``seconds`` apart (a
    restarted container, whose CPU time went back, counts from zero)."""
    first = {r.name: r.cpu_s for r in before}
    used = {}
    for reading in after:
        if reading.name in names and reading.name in first:
            delta = reading.cpu_s - first[reading.name]
            used[reading.name] = max(delta if delta >= 0 else reading.cpu_s, 0.0) / max(seconds, 1e-3)
    return used


class EngineMonitor:
    """Samples the server and load generator containers each second, in a thread."""

    def __init__(
        self,
        engine: Engine,
        servers: Sequence[str],
        generators: Sequence[str],
        metrics_url: str | None = None,
    ) -> None:
        self.engine = engine
        self.servers, self.generators = list(servers), list(generators)
        self.samples: list[Sample] = []
        #: (second, cores per generator container), for the CPU-limit check.
        self.generator_cores: list[tuple[int, dict[str, float]]] = []
        self._metrics = ServerMetrics(metrics_url)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlscale-engine-stats", daemon=True)

    def read(self) -> list[Reading]:
        done = self.engine.run(
            "stats",
            "--no-stream",
            "--format",
            "json",
            *self.servers,
            *self.generators,
            check=False,
            timeout=20,
        )
        try:
            return parse_stats(done.stdout) if done.returncode == 0 else []
        except ValueError:
            return []

    def start(self) -> EngineMonitor:
        self._last = (time.monotonic(), self.read())
        self._metrics.read()
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(25)
        return self.samples

    def _run(self) -> None:
        while not self._stop.wait(1.0 - (time.time() % 1.0)):
            now, readings = time.monotonic(), self.read()
            then, before = self._last
            self._last = (now, readings)
            if not readings:
                continue
            elapsed = now - then
            servers = cores_used(before, readings, elapsed, self.servers)
            generators = cores_used(before, readings, elapsed, self.generators)
            memory = [r.memory_bytes for r in readings if r.name in self.servers]
            second = int(time.time()) - 1
            self.generator_cores.append((second, generators))
            self.samples.append(
                Sample(
                    second=second,
                    server_cpu=sum(servers.values()) if servers else None,
                    server_rss_mb=sum(memory) / 2**20 if memory else None,
                    generator_cpu=sum(generators.values()) if generators else None,
                    # Checked against each container's own CPU limit instead (the
                    # local overlay's workers have half a core): see busiest_share.
                    generator_cpu_max=None,
                    **self._metrics.read(),
                )
            )


def busiest_share(
    per_second: Sequence[tuple[int, dict[str, float]]],
    limits: dict[str, float | None],
    *,
    start: float,
    end: float,
) -> tuple[str, float] | None:
    """The generator container that came closest to its CPU limit between ``start``
    and ``end`` (seconds since the epoch), and how close: its busiest second as a
    share of its limit (of one core where it has none)."""
    best = None
    for second, cores_by_name in per_second:
        if not int(start) < second < int(end):
            continue
        for name, cores in cores_by_name.items():
            share = cores / (limits.get(name) or 1.0)
            if best is None or share > best[1]:
                best = (name, share)
    return best
