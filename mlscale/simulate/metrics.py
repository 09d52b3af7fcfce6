"""The metrics pipeline: what metrics-server tells the HPA about each pod's CPU.

metrics-server scrapes every kubelet once per --metric-resolution and keeps the
last two cumulative-CPU samples of each container; a pod's CPU is the rate
between them, so a pod has no metric until it has two samples. A container
at least 10 s old but younger than the resolution gets its start time (with no
CPU used) as its first sample.
  https://github.com/kubernetes-sigs/metrics-server/blob/master/pkg/storage/pod.go

Pods serving the same Service get the same share of its load, so one cumulative
series (CPU-seconds a serving pod has used since the start, per tick) describes
them all: a pod's counter is that series since it became Ready.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


def last_scrape(now: float, resolution_s: float, phase_s: float) -> float | None:
    """The most recent scrape at or before ``now`` (scrapes at phase + k·resolution)."""
    if now < phase_s:
        return None
    return phase_s + math.floor((now - phase_s) / resolution_s + 1e-9) * resolution_s


def sample_windows(
    *, scrape: float, resolution_s: float, fresh_min_s: float, started: ArrayLike
) -> tuple[np.ndarray, np.ndarray]:
    """(has_metric, window_start) of each container at a scrape [MS pod.go].

    ``started``: container start times (−inf for pods older than the simulation).
    The window ends at the scrape; it starts at the previous scrape, or at the
    container's start for a fresh container (age in [fresh_min_s, resolution))."""
    starts = np.asarray(started, dtype=float)
    with np.errstate(invalid="ignore"):
        two_samples = starts < scrape - resolution_s
        age = scrape - starts
        fresh = (age >= fresh_min_s) & (age < resolution_s)
    has_metric = two_samples | fresh
    window_start = np.where(two_samples, scrape - resolution_s, starts)
    return has_metric, window_start


class CpuSeries:
    """Cumulative CPU-seconds of one serving pod, tick by tick, with the first
    tick's rate extended into the past for pods that served before the start."""

    def __init__(self, ticks: int, tick_s: float):
        self.tick_s = tick_s
        self.cumulative = np.zeros(ticks + 1)
        self.first_rate = 0.0

    def at(self, times: ArrayLike) -> np.ndarray:
        """Cumulative CPU-seconds at tick times (may be before the start)."""
        at = np.asarray(times, dtype=float)
        index = np.rint(np.maximum(at, 0) / self.tick_s).astype(np.int64)
        np.minimum(index, len(self.cumulative) - 1, out=index)
        result: np.ndarray = np.where(at >= 0, self.cumulative[index], self.first_rate * at)
        return result

    def value_at(self, time: float) -> float:
        """``at`` for one time, without the arrays (round() rounds half to even, as rint)."""
        if time >= 0:
            return float(self.cumulative[min(round(time / self.tick_s), len(self.cumulative) - 1)])
        return self.first_rate * time

    def serving_usage_cores(self, window_start: float, window_end: float) -> float:
        """``pod_usage_cores`` of a pod Ready before ``window_start``: the serving share
        over the whole window, computed as that function computes it."""
        span = window_end - window_start
        return (self.value_at(window_end) - self.value_at(window_start)) / (span if span > 0 else 1.0)

    def pod_usage_cores(
        self, *, ready_since: ArrayLike, window_start: ArrayLike, window_end: float
    ) -> np.ndarray:
        """Each pod's CPU rate over [window_start, window_end]: it used the serving
        share from when it became Ready, nothing before (start-up is not modelled).
        NaN window (no metric) or NaN ready time (never Ready): no use."""
        starts = np.asarray(window_start, dtype=float)
        begin = np.maximum(starts, np.asarray(ready_since, dtype=float))  # NaN stays NaN
        begin = np.where(np.isnan(begin), window_end, np.minimum(begin, window_end))
        end_value = self.value_at(window_end)
        span = window_end - starts
        span = np.where(span > 0, span, 1.0)  # NaN compares false: no window, no use
        usage: np.ndarray = (end_value - self.at(begin)) / span
        return usage
