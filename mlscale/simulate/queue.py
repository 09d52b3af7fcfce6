"""A pod as a queue: what it serves, how busy it is, and its latency percentiles.

The stated model. A ready pod is an M/M/c queue: ``c`` servers (requests it
works on at once), each completing ``μ`` requests/s while busy, plus a fixed
delay ``d`` in every response (parsing, network). Its CPU request is its limit,
so a pod whose servers are all busy uses 100 % of its request and the CPU
utilisation the HPA sees is the fraction of busy servers.

- Open loop (requests/s, Poisson arrivals): Erlang C, with the response-time
  quantiles of ``mlscale.capacity.models`` (exact for M/M/c, FIFO).
- Closed loop (users, think time Z): the finite-source queue M/M/c//N (the
  "machine repairman"), solved exactly: the number in the pod has a product-form
  distribution; an arriving user sees the distribution of N−1 users (arrival
  theorem); a user who finds j ≥ c ahead waits for j−c+1 departures at rate cμ,
  so its response is Gamma(j−c+1, cμ) + Exp(μ). Throughput X = Σ min(k, c) μ p(k)
  and the mean response R = N/X − Z (Little). So with N users the arrival rate
  is N/(Z+R), and an overloaded pod's latency grows with N, not without bound.

Where c, μ and d come from (a plan, or the reference scenario) is
``calibration``; the tables the tick loop reads are ``tables``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import gammainc

from mlscale.capacity.models import erlang_c, max_arrival_rate, mmc_response_quantile

# Percentiles the simulator reports; the SLA's is added when it is another one.
REPORTED = (0.5, 0.95)
# Open loop: the stationary M/M/c is used up to this share of capacity. Closer to 1
# the stationary queue takes longer to build than loads usually last (its relaxation
# time grows as 1/(μ(1−√ρ)²): minutes at 97 % for a 10 requests/s server), so the
# latency is held at its 95 % value there, and beyond capacity a backlog builds.
RHO_MAX = 0.95


@dataclass(frozen=True, kw_only=True)
class PodModel:
    servers: int  # c: requests served at once
    service_rate: float  # μ: requests/s one busy server completes
    delay_ms: float = 0.0  # d: fixed part of every response
    cpu_cores: float = 1.0  # the pod's CPU request (= limit)
    memory_mib: float = 512.0
    source: str = ""
    # Per quantile, (load, measured/queue) at each measured step, in load order: the
    # scale that brings the queue's percentile to what was measured (see above).
    calibration: tuple[tuple[float, tuple[tuple[float, float], ...]], ...] = ()

    @property
    def capacity_rps(self) -> float:
        """Requests/s with every server busy: the most the pod can serve."""
        return self.servers * self.service_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "servers": self.servers,
            "service_rate_per_s": self.service_rate,
            "delay_ms": self.delay_ms,
            "cpu_cores": self.cpu_cores,
            "memory_mib": self.memory_mib,
            "capacity_rps": self.capacity_rps,
            "source": self.source,
            "calibration": {
                f"p{q * 100:g}": [list(point) for point in points] for q, points in self.calibration
            },
        }

    def scale(self, quantile: float, load: float) -> float:
        """The measured/queue factor for ``quantile`` at ``load`` (users or requests/s
        per pod); 1 without calibration. A quantile not calibrated takes the nearest
        calibrated one's factors."""
        if not self.calibration:
            return 1.0
        _, points = min(self.calibration, key=lambda entry: abs(entry[0] - quantile))
        loads = [x for x, _ in points]
        if load <= loads[0]:
            return points[0][1]
        if load >= loads[-1]:
            return points[-1][1]
        i = bisect.bisect_right(loads, load) - 1
        (x0, f0), (x1, f1) = points[i], points[i + 1]
        return float(f0 * (f1 / f0) ** ((load - x0) / (x1 - x0)))

    def calibrated(
        self, quantiles: Sequence[float], load: float, queue_ms: Sequence[float]
    ) -> tuple[float, ...]:
        """Queue percentiles (the fixed delay included) scaled to the measurements."""
        return tuple(ms * self.scale(q, load) for q, ms in zip(quantiles, queue_ms, strict=False))


@dataclass(frozen=True)
class PodState:
    """One pod under a constant load, in steady state."""

    throughput: float  # requests/s served
    busy: float  # share of servers busy: CPU use over the CPU request
    mean_ms: float
    quantiles_ms: tuple[float, ...]  # at the quantiles asked for
    in_flight: float  # requests in the pod (queued or served)


# --- open loop: M/M/c through Erlang C ------------------------------------------------


def open_loop(model: PodModel, rate: float, quantiles: Sequence[float] = REPORTED) -> PodState:
    """One pod offered ``rate`` requests/s (Poisson)."""
    c, mu = model.servers, model.service_rate
    if rate >= c * mu:
        inf = math.inf
        return PodState(c * mu, 1.0, inf, tuple(inf for _ in quantiles), inf)
    wait = erlang_c(c, rate / mu) / (c * mu - rate) if rate > 0 else 0.0
    mean_s = wait + 1 / mu
    qs = tuple(1000 * mmc_response_quantile(q, rate, mu, c) + model.delay_ms for q in quantiles)
    qs = model.calibrated(quantiles, rate, qs)
    return PodState(rate, rate / (c * mu), 1000 * mean_s + model.delay_ms, qs, rate * mean_s)


# --- closed loop: the finite-source queue M/M/c//N --------------------------------------


def _population(users: int, servers: int, think_s: float, mu: float) -> np.ndarray:
    """P(k requests in the pod), k = 0..users: birth (users−k)/Z, death min(k, c)·μ."""
    if users == 0:
        return np.ones(1)
    k = np.arange(1, users + 1)
    z = max(think_s, 1e-9)
    steps = np.log(users - k + 1) - math.log(z * mu) - np.log(np.minimum(k, servers))
    log_p = np.concatenate(([0.0], np.cumsum(steps)))
    p = np.exp(log_p - log_p.max())
    distribution: np.ndarray = p / p.sum()
    return distribution


def _response_cdf(t: np.ndarray, seen: np.ndarray, first: int, servers: int, mu: float) -> np.ndarray:
    """P(response ≤ t) for arrivals that see ``first + i`` requests with probability ``seen[i]``."""
    j = np.arange(first, first + len(seen))[None, :]
    tt = t[:, None]
    served_at_once = 1 - np.exp(-mu * tt)  # j < c: only the own service, Exp(μ)
    m = np.maximum(j - servers + 1, 1)  # departures to wait for
    if servers == 1:
        queued = gammainc(m + 1, mu * tt)  # Gamma(m, μ) + Exp(μ) = Gamma(m+1, μ)
    else:
        # P(W + S ≤ t) = P(W ≤ t) − e^{−μt} E[e^{μW}; W ≤ t], W ~ Gamma(m, cμ).
        with np.errstate(divide="ignore"):
            tail = np.exp(
                -mu * tt
                + m * math.log(servers / (servers - 1))
                + np.log(gammainc(m, (servers - 1) * mu * tt))
            )
        queued = np.clip(gammainc(m, servers * mu * tt) - tail, 0.0, 1.0)
    cdf = np.where(j < servers, served_at_once, queued)
    result: np.ndarray = cdf @ seen
    return result


def _support(p: np.ndarray, cut: float = 1e-12) -> tuple[int, np.ndarray]:
    """The part of a distribution that carries its mass: (first index, probabilities)."""
    keep = np.flatnonzero(p > cut * p.max())
    first, last = int(keep[0]), int(keep[-1])
    part = p[first : last + 1]
    return first, part / part.sum()


def _closed_integer(model: PodModel, users: int, think_s: float, quantiles: Sequence[float]) -> PodState:
    c, mu = model.servers, model.service_rate
    z = think_s + model.delay_ms / 1000  # the fixed delay is time the pod does not see
    if users == 0:
        qs = tuple(1000 * -math.log(1 - q) / mu + model.delay_ms for q in quantiles)
        return PodState(0.0, 0.0, 1000 / mu + model.delay_ms, model.calibrated(quantiles, 0, qs), 0.0)
    p = _population(users, c, z, mu)
    busy_servers = float(np.minimum(np.arange(users + 1), c) @ p)
    throughput = mu * busy_servers
    mean_s = users / throughput - z
    first, seen = _support(_population(users - 1, c, z, mu))
    targets = np.asarray(quantiles, dtype=float)
    low = np.zeros_like(targets)
    high = np.full_like(targets, (first + len(seen)) / (c * mu) + 10 / mu)
    while np.any(_response_cdf(high, seen, first, c, mu) < targets):
        high *= 2
    for _ in range(40):  # bisection: 2^-40 of the bracket
        middle = (low + high) / 2
        below = _response_cdf(middle, seen, first, c, mu) < targets
        low = np.where(below, middle, low)
        high = np.where(below, high, middle)
    qs = model.calibrated(quantiles, users, tuple(1000 * float(h) + model.delay_ms for h in high))
    in_flight = float(np.arange(users + 1) @ p)
    return PodState(throughput, busy_servers / c, 1000 * mean_s + model.delay_ms, qs, in_flight)


def closed_loop(
    model: PodModel, users: float, think_s: float, quantiles: Sequence[float] = REPORTED
) -> PodState:
    """One pod serving ``users`` users who think ``think_s`` between requests; a
    fractional count interpolates between the two whole counts around it."""
    low = math.floor(users)
    a = _closed_integer(model, low, think_s, quantiles)
    share = users - low
    if share == 0:
        return a
    b = _closed_integer(model, low + 1, think_s, quantiles)
    return _mix(a, b, share)


def _mix(a: PodState, b: PodState, share: float) -> PodState:
    def lerp(x: float, y: float) -> float:
        return x + (y - x) * share

    return PodState(
        lerp(a.throughput, b.throughput),
        lerp(a.busy, b.busy),
        lerp(a.mean_ms, b.mean_ms),
        tuple(lerp(x, y) for x, y in zip(a.quantiles_ms, b.quantiles_ms, strict=False)),
        lerp(a.in_flight, b.in_flight),
    )


def capacity_at_sla(model: PodModel, kind: str, think_s: float, quantile: float, limit_ms: float) -> float:
    """The load one pod carries with its ``quantile`` response at ``limit_ms``: users
    (closed loop) or requests/s (open loop, ``max_arrival_rate``)."""
    if kind == "rps":
        budget_s = (limit_ms - model.delay_ms) / 1000
        if budget_s <= 0:
            return 0.0
        return max_arrival_rate(quantile, budget_s, model.service_rate, model.servers)

    def meets(users: float) -> bool:
        return closed_loop(model, users, think_s, (quantile,)).quantiles_ms[0] <= limit_ms

    if not meets(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while meets(high) and high < 1e6:
        low, high = high, high * 2
    for _ in range(30):
        middle = (low + high) / 2
        if meets(middle):
            low = middle
        else:
            high = middle
    return low


def load_at_busy(model: PodModel, kind: str, think_s: float, busy: float) -> float:
    """The load (users or requests/s) that keeps one pod ``busy``: a share of its
    servers, which is its CPU use over its request."""
    if kind != "users":
        return busy * model.capacity_rps
    low, high = 0.0, 1.0
    while closed_loop(model, high, think_s).busy < busy:
        low, high = high, high * 2
    for _ in range(40):
        middle = (low + high) / 2
        if closed_loop(model, middle, think_s).busy < busy:
            low = middle
        else:
            high = middle
    return round(low, 2)
