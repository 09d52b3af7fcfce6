"""Exact latency percentiles: HDR histograms per second and per request kind.

Locust keeps response times rounded to two significant digits (a true p95 of
1,040 ms reads as 1,000 ms). Here every latency goes into an HdrHistogram with
three significant digits, in microseconds, from 1 us to one hour; each load
generator process keeps one histogram per (second, request kind), ships the
closed seconds to the master encoded, and the master adds them up. Percentiles
of a merged run are computed on the merged histogram, never averaged.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np
from hdrh.histogram import HdrHistogram

from mlscale.loadtest.records import EncodedWindow

LOWEST_US = 1
HIGHEST_US = 3_600_000_000
DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record(histogram: HdrHistogram, seconds: float) -> None:
    """Record a latency in seconds (clamped into the histogram's range)."""
    histogram.record_value(min(max(int(seconds * 1e6), LOWEST_US), HIGHEST_US))


def _counts(histogram: HdrHistogram) -> np.ndarray:
    # The counts array itself, without a copy (a decoded histogram may carry fewer).
    length = min(histogram.counts_len, histogram.encoder.payload.counts_len)
    return np.ctypeslib.as_array(histogram.counts)[:length]


def values_at_percentiles(histogram: HdrHistogram, percentiles: list[float]) -> list[int]:
    """HdrHistogram's ``get_value_at_percentile`` for each of ``percentiles``, in one pass.

    hdrh walks its 23,552 counts in Python for every percentile (about 10 ms
    each): computed every second inside a load generator that blocked its event
    loop long enough to add tens of milliseconds to the latencies it was
    measuring. This is the same definition (the first count index whose running
    total reaches the target count, reported as the highest value equivalent to
    it) on a cumulative sum, in microseconds.
    """
    total = histogram.get_total_count()
    if total == 0:
        return [0 for _ in percentiles]
    running = np.cumsum(_counts(histogram))
    values = []
    for q in percentiles:
        target = histogram.get_target_count_at_percentile(q)
        index = int(np.searchsorted(running, target, side="left"))
        value = histogram.get_value_from_index(min(index, len(running) - 1))
        values.append(
            histogram.get_highest_equivalent_value(value)
            if q
            else histogram.get_lowest_equivalent_value(value)
        )
    return values


def mean_us(histogram: HdrHistogram) -> float:
    """HdrHistogram's ``get_mean_value`` (each count at the middle of its bucket),
    over the buckets that hold counts only."""
    total = histogram.get_total_count()
    if total == 0:
        return 0.0
    counts = _counts(histogram)
    weighted = 0
    for index in np.flatnonzero(counts).tolist():
        weighted += int(counts[index]) * histogram._hdr_median_equiv_value(
            histogram.get_value_from_index(index)
        )
    return weighted / total


def latency_ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """p50 … p99.9, max and mean in milliseconds; None where there were no requests.

    The mean is for Little's law (users = throughput x (think time + mean response)),
    which the capacity model uses; the percentiles are what SLAs are written on.
    """
    if histogram.get_total_count() == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None}
    at = values_at_percentiles(histogram, list(PERCENTILES.values()))
    values: dict[str, float | None] = {
        name: value / 1000 for name, value in zip(PERCENTILES, at, strict=True)
    }
    values["max"] = histogram.get_max_value() / 1000
    values["mean"] = round(mean_us(histogram) / 1000, 3)
    return values


@dataclass
class Window:
    """One second of one process's results."""

    latency: dict[str, HdrHistogram] = field(default_factory=lambda: defaultdict(new_histogram))
    # Latency measured from the actual send (open loop only: the uncorrected view).
    service: dict[str, HdrHistogram] = field(default_factory=lambda: defaultdict(new_histogram))
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, error) -> count
    late: int = 0  # open loop: requests sent later than scheduled
    dropped: int = 0  # open loop: requests not sent because too many were in flight


class Recorder:
    """A load generator process's results, per wall-clock second."""

    def __init__(self) -> None:
        self.windows: dict[int, Window] = defaultdict(Window)

    def success(self, second: int, kind: str, latency_s: float, service_s: float | None = None) -> None:
        window = self.windows[second]
        record(window.latency[kind], latency_s)
        if service_s is not None:
            record(window.service[kind], service_s)

    def failure(self, second: int, kind: str, error: str) -> None:
        self.windows[second].failures[kind, error] += 1

    def late(self, second: int) -> None:
        self.windows[second].late += 1

    def dropped(self, second: int) -> None:
        self.windows[second].dropped += 1

    def drain(self, before: int | None = None) -> list[EncodedWindow]:
        """Encode and forget the windows older than ``before`` (all when None)."""
        seconds = sorted(s for s in self.windows if before is None or s < before)
        return [encode_window(s, self.windows.pop(s)) for s in seconds]


def encode_window(second: int, window: Window) -> EncodedWindow:
    def encoded(histograms: dict[str, HdrHistogram]) -> dict[str, str]:
        # HdrHistogram's own wire format: compressed, then base64 (ASCII).
        return {kind: h.encode().decode("ascii") for kind, h in histograms.items()}

    return {
        "second": second,
        "latency": encoded(window.latency),
        "service": encoded(window.service),
        "failures": [(kind, error, n) for (kind, error), n in window.failures.items()],
        "late": window.late,
        "dropped": window.dropped,
    }


def _decode_into(target: HdrHistogram, text: str) -> None:
    target.decode_and_add(text.encode("ascii"))


class Store:
    """The merged results of every generator process, per second."""

    def __init__(self) -> None:
        self.windows: dict[int, Window] = defaultdict(Window)

    def add(self, encoded_windows: list[EncodedWindow]) -> None:
        for data in encoded_windows:
            window = self.windows[int(data["second"])]
            for kind, text in data["latency"].items():
                _decode_into(window.latency[kind], text)
            for kind, text in data["service"].items():
                _decode_into(window.service[kind], text)
            for kind, error, count in data["failures"]:
                window.failures[kind, error] += count
            window.late += data["late"]
            window.dropped += data["dropped"]

    def encode(self) -> list[EncodedWindow]:
        return [encode_window(s, self.windows[s]) for s in sorted(self.windows)]
