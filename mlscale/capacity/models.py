"""Capacity models: throughput against CPU, and tail latency from queueing theory.

- The Universal Scalability Law, X(n) = λn / (1 + σ(n−1) + κn(n−1)), fitted to
  the maximum throughput measured at each whole-core size n; its error is
  checked on a size the fit did not see.
- Below a core, a pod runs under a CFS quota: c·P of CPU time in each period P,
  then throttled until the period ends. It is not a slower core: measured here,
  each throttled period also costs a slice of CPU time that serves no request,
  so X(c) = λ (c − lost/P), with ``lost`` (ms per period) fitted from the
  fractional sizes.
- Tail latency, which turns a throughput at the SLA into the load the SLA
  allows. Closed loop (users with think time Z): Little's law, N = X (Z + R̄),
  with the mean response R̄ at the SLA's edge taken from the measured ratio of
  the percentile to the mean near capacity. Open loop (arrival rate): Erlang C
  (M/M/c), whose response-time quantile gives the largest arrival rate whose
  percentile stays under the limit.
- ``CapacityModel`` joins the two: the load a pod of any CPU size carries at
  the SLA, checked on a measured size the fit did not see.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlscale.schemas.plan import CapacityFit


@dataclass(frozen=True)
class UslFit:
    lam: float  # throughput of one core, with no contention
    # Contention (serial fraction). Negative when throughput per core grows with
    # size (superlinear: Gunther's "payback" reading of the USL), as per-pod
    # fixed costs spread over more requests: the fit allows it.
    sigma: float
    kappa: float  # coherency (crosstalk)

    def throughput(self, cores: float) -> float:
        n = cores
        denominator = 1 + self.sigma * (n - 1) + self.kappa * n * (n - 1)
        return self.lam * n / denominator if denominator > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"law": "usl", "lambda": self.lam, "sigma": self.sigma, "kappa": self.kappa}


def fit_usl(cores: Sequence[float], throughput: Sequence[float], *, coherency: bool = True) -> UslFit:
    """Least-squares USL fit; with one point, a straight line through it.

    ``coherency=False`` fixes κ at 0: crosstalk between parallel workers cannot be
    observed on sizes of one core or less, and a κ fitted there is noise that would
    bend every larger size down.
    """
    from scipy.optimize import OptimizeWarning, curve_fit  # a second to import: only a fit needs it

    x = np.asarray(cores, dtype=float)
    y = np.asarray(throughput, dtype=float)
    if len(x) == 0 or np.any(x <= 0) or np.any(y < 0):
        raise ValueError("need positive core counts and non-negative throughputs")
    if len(x) == 1:
        return UslFit(float(y[0] / x[0]), 0.0, 0.0)

    def law(n: np.ndarray, lam: float, sigma: float, kappa: float = 0.0) -> np.ndarray:
        throughput: np.ndarray = lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))
        return throughput

    lam0 = float(max(y / x))
    with warnings.catch_warnings():
        # Exact fits (as many points as parameters) leave no covariance to estimate,
        # which SciPy warns about; only the parameters are used here.
        warnings.simplefilter("ignore", OptimizeWarning)
        if len(x) == 2 or not coherency:  # two points fix two parameters: contention only
            (lam, sigma), _ = curve_fit(
                law, x, y, p0=(lam0, 0.05), bounds=([0, -0.9], [np.inf, 1]), maxfev=20_000
            )
            return UslFit(float(lam), float(sigma), 0.0)
        (lam, sigma, kappa), _ = curve_fit(
            law, x, y, p0=(lam0, 0.05, 0.001), bounds=([0, -0.9, 0], [np.inf, 1, 1]), maxfev=20_000
        )
    return UslFit(float(lam), float(sigma), float(kappa))


# The kubelet's CFS period (Kubernetes' default, and what ``pods`` sets for plan's pods).
CFS_PERIOD_MS = 100.0


@dataclass(frozen=True)
class QuotaThroughput:
    """Throughput at the SLA against CPU: the USL over whole cores, and below one core
    a CFS quota that loses ``lost_ms`` of CPU time in each throttled period."""

    usl: UslFit
    lost_ms: float = 0.0
    period_ms: float = CFS_PERIOD_MS

    def throughput(self, cores: float) -> float:
        if cores < 1:
            # Under a quota of c cores: c·P of each period, less what throttling costs.
            return max(self.usl.lam * (cores - self.lost_ms / self.period_ms), 0.0)
        return self.usl.throughput(cores)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.usl.to_dict(),
            "law": "usl+cfs-quota",
            "throttle_lost_ms": self.lost_ms,
            "cfs_period_ms": self.period_ms,
        }

    @classmethod
    def from_fit(cls, model: CapacityFit) -> QuotaThroughput:
        """The law a plan's ``model`` block holds (see ``from_dict``)."""
        usl = UslFit(model.lam or 0.0, model.sigma or 0.0, model.kappa or 0.0)
        lost = 0.0 if model.throttle_lost_ms is None else model.throttle_lost_ms
        return cls(usl, lost, CFS_PERIOD_MS if model.cfs_period_ms is None else model.cfs_period_ms)

    @classmethod
    def from_dict(cls, model: dict[str, Any]) -> QuotaThroughput:
        usl = UslFit(model["lambda"], model["sigma"], model["kappa"])
        # Plans written before the quota term: the USL alone.
        return cls(usl, model.get("throttle_lost_ms", 0.0), model.get("cfs_period_ms", CFS_PERIOD_MS))


def fit_throughput(
    cores: Sequence[float], throughput: Sequence[float], *, period_ms: float = CFS_PERIOD_MS
) -> QuotaThroughput:
    """The USL through the whole-core sizes, and the quota's loss through the others.

    Without a whole-core size, λ and the loss come from a straight line through the
    fractional sizes (X = λc − λ·lost/P); with a single size, it is a slower core.
    """
    pairs = [(float(c), float(x)) for c, x in zip(cores, throughput, strict=True)]
    if not pairs or any(c <= 0 or x < 0 for c, x in pairs):
        raise ValueError("need positive core counts and non-negative throughputs")
    whole = [(c, x) for c, x in pairs if c >= 1]
    fractional = [(c, x) for c, x in pairs if c < 1]
    if whole:
        usl = fit_usl([c for c, _ in whole], [x for _, x in whole], coherency=max(c for c, _ in whole) > 1)
        lost = [c - x / usl.lam for c, x in fractional] if usl.lam > 0 else []
        share = max(sum(lost) / len(lost), 0.0) if lost else 0.0
    elif len({c for c, _ in fractional}) >= 2:
        slope, intercept = np.polyfit([c for c, _ in fractional], [x for _, x in fractional], 1)
        smallest = min(c for c, _ in fractional)
        if slope > 0:
            usl, share = UslFit(float(slope), 0.0, 0.0), min(max(-intercept / slope, 0.0), smallest / 2)
        else:  # throughput not growing with CPU: no loss can be read from it
            usl, share = UslFit(max(x / c for c, x in fractional), 0.0, 0.0), 0.0
    else:
        c, x = pairs[0]
        usl, share = UslFit(x / c, 0.0, 0.0), 0.0
    return QuotaThroughput(usl, share * period_ms, period_ms)


def holdout_error(
    cores: Sequence[float], throughput: Sequence[float], held_out: int, *, period_ms: float = CFS_PERIOD_MS
) -> float:
    """Relative error predicting point ``held_out`` from a fit on the others."""
    keep = [i for i in range(len(cores)) if i != held_out]
    fit = fit_throughput([cores[i] for i in keep], [throughput[i] for i in keep], period_ms=period_ms)
    measured = throughput[held_out]
    return abs(fit.throughput(cores[held_out]) - measured) / measured


@dataclass(frozen=True)
class TailModel:
    """What a pod's latency looks like at the SLA's edge, from the measured steps."""

    kind: str  # "users" (closed loop) or "rps" (open loop)
    quantile: float  # 0.95 for p95
    limit_ms: float  # the SLA's bound on that percentile
    think_time_s: float
    delay_ms: float  # response at the lightest load: network, parsing, one call
    tail_ratio: float  # (percentile - delay) / (mean - delay) near capacity

    def mean_at_limit_ms(self) -> float:
        """The mean response when the percentile sits on the limit."""
        return self.delay_ms + max(self.limit_ms - self.delay_ms, 0.0) / self.tail_ratio

    def load_at(self, throughput_rps: float, servers: int = 1) -> float:
        """The load (users or requests/s) a pod with this SLA throughput carries."""
        if self.kind == "users":
            return throughput_rps * (self.think_time_s + self.mean_at_limit_ms() / 1000)
        # Open loop: the arrival rate whose quantile meets the limit, M/M/c with the
        # pod's throughput shared by its servers and the fixed delay taken off first.
        budget_s = (self.limit_ms - self.delay_ms) / 1000
        if budget_s <= 0:
            return 0.0
        return max_arrival_rate(self.quantile, budget_s, throughput_rps / servers, servers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "quantile": self.quantile,
            "limit_ms": self.limit_ms,
            "think_time_s": self.think_time_s,
            "delay_ms": self.delay_ms,
            "tail_ratio": self.tail_ratio,
            "mean_at_limit_ms": self.mean_at_limit_ms(),
        }


@dataclass(frozen=True)
class CapacityModel:
    """Throughput at the SLA against CPU (USL), and the load it carries (tail model)."""

    throughput: QuotaThroughput
    tail: TailModel
    largest_cpu: float  # the largest size fitted

    def max_rps(self, cpu: float) -> float:
        """Throughput at the SLA; above the sizes measured, never more per core than the
        largest one measured (a superlinear fit must not promise unbounded gains)."""
        fitted = self.throughput.throughput(cpu)
        if cpu <= self.largest_cpu:
            return fitted
        return min(fitted, self.throughput.throughput(self.largest_cpu) * cpu / self.largest_cpu)

    def max_load(self, cpu: float, workers: int = 1) -> float:
        return self.tail.load_at(self.max_rps(cpu), servers=workers)

    def to_dict(self) -> dict[str, Any]:
        return {**self.throughput.to_dict(), "tail": self.tail.to_dict(), "largest_cpu": self.largest_cpu}


@dataclass(frozen=True)
class SizeMeasurement:
    """What the search measured for one pod size, as the models need it."""

    cpu: float
    workers: int
    max_load: float  # users or requests/s at the SLA
    max_rps: float  # throughput there
    percentile_ms: float  # the SLA's percentile there
    mean_ms: float | None  # the mean response there
    lightest_ms: float  # the SLA's percentile at the lightest load measured


def fit_capacity(
    sizes: Sequence[SizeMeasurement],
    *,
    kind: str,
    quantile: float,
    limit_ms: float,
    think_time_s: float,
    period_ms: float = CFS_PERIOD_MS,
) -> CapacityModel:
    """Throughput against CPU through the sizes (USL and quota); the tail from their
    lightest and capacity steps."""
    delay = min(s.lightest_ms for s in sizes)
    ratios = [
        (s.percentile_ms - delay) / (s.mean_ms - delay)
        for s in sizes
        if s.mean_ms is not None and s.mean_ms - delay > 0 and s.percentile_ms >= s.mean_ms
    ]
    # Without a usable pair, an exponential response time's ratio (p95: ln 20 = 3.0).
    ratio = sum(ratios) / len(ratios) if ratios else -math.log(1 - quantile)
    tail = TailModel(
        kind=kind,
        quantile=quantile,
        limit_ms=limit_ms,
        think_time_s=think_time_s,
        delay_ms=delay,
        tail_ratio=ratio,
    )
    largest = max(s.cpu for s in sizes)
    throughput = fit_throughput([s.cpu for s in sizes], [s.max_rps for s in sizes], period_ms=period_ms)
    return CapacityModel(throughput, tail, largest_cpu=largest)


def holdout_check(
    sizes: Sequence[SizeMeasurement],
    held_out: int,
    *,
    kind: str,
    quantile: float,
    limit_ms: float,
    think_time_s: float,
) -> tuple[float, float]:
    """(predicted load, relative error) at size ``held_out`` from a model fitted on the
    others alone: their throughputs and their latencies."""
    kept = [s for i, s in enumerate(sizes) if i != held_out]
    target = sizes[held_out]
    fitted = fit_capacity(kept, kind=kind, quantile=quantile, limit_ms=limit_ms, think_time_s=think_time_s)
    predicted = fitted.max_load(target.cpu, target.workers)
    return predicted, abs(predicted - target.max_load) / target.max_load


def erlang_c(servers: int, offered: float) -> float:
    """Probability that an arrival waits, M/M/c with ``offered`` = λ/μ Erlangs."""
    if offered >= servers:
        return 1.0
    # The stable recurrence of Erlang B, then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1 - rho + rho * b)


def mmc_response_quantile(q: float, arrival: float, service_rate: float, servers: int) -> float:
    """Seconds under which a fraction ``q`` of responses fall, M/M/c (FIFO)."""
    if arrival >= servers * service_rate:
        return math.inf
    wait_probability = erlang_c(servers, arrival / service_rate)
    theta = servers * service_rate - arrival  # the waiting time's rate, when waiting
    mu = service_rate

    def tail(t: float) -> float:  # P(response > t) = P(W + S > t)
        no_wait = math.exp(-mu * t)
        if abs(theta - mu) < 1e-12:
            both = math.exp(-mu * t) * (1 + mu * t)
        else:
            both = (theta * math.exp(-mu * t) - mu * math.exp(-theta * t)) / (theta - mu)
        return (1 - wait_probability) * no_wait + wait_probability * both

    low, high = 0.0, 1.0 / mu
    while tail(high) > 1 - q:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        if tail(middle) > 1 - q:
            low = middle
        else:
            high = middle
    return high


def max_arrival_rate(q: float, limit_s: float, service_rate: float, servers: int) -> float:
    """The largest λ whose ``q`` response quantile stays under ``limit_s`` (M/M/c)."""
    if mmc_response_quantile(q, 1e-9, service_rate, servers) > limit_s:
        return 0.0
    low, high = 0.0, servers * service_rate
    for _ in range(100):
        middle = (low + high) / 2
        if mmc_response_quantile(q, middle, service_rate, servers) <= limit_s:
            low = middle
        else:
            high = middle
    return low
