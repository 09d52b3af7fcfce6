"""Capacity models: throughput against CPU, and tail latency from queueing theory.

- The Universal Scalability Law, X(n) = λn / (1 + σ(n−1) + κn(n−1)), fitted to
  the maximum throughput measured at each CPU size n (cores); its error is
  checked on a size the fit did not see.
- Erlang C (M/M/c): with c servers of service rate μ and arrivals λ, the
  response-time quantile, which turns a throughput into the load an SLA on a
  percentile allows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UslFit:
    lam: float  # throughput of one core, with no contention
    sigma: float  # contention (serial fraction)
    kappa: float  # coherency (crosstalk)

    def throughput(self, cores: float) -> float:
        n = cores
        return self.lam * n / (1 + self.sigma * (n - 1) + self.kappa * n * (n - 1))

    def to_dict(self) -> dict:
        return {"law": "usl", "lambda": self.lam, "sigma": self.sigma, "kappa": self.kappa}


def fit_usl(cores: Sequence[float], throughput: Sequence[float]) -> UslFit:
    """Least-squares USL fit; with one point, a straight line through it."""
    from scipy.optimize import curve_fit

    x = np.asarray(cores, dtype=float)
    y = np.asarray(throughput, dtype=float)
    if len(x) == 0 or np.any(x <= 0) or np.any(y < 0):
        raise ValueError("need positive core counts and non-negative throughputs")
    if len(x) == 1:
        return UslFit(float(y[0] / x[0]), 0.0, 0.0)

    def law(n, lam, sigma, kappa=0.0):
        return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))

    lam0 = float(max(y / x))
    if len(x) == 2:  # two points fix two parameters: contention only (Amdahl)
        (lam, sigma), _ = curve_fit(
            law, x, y, p0=(lam0, 0.05), bounds=([0, 0], [np.inf, 1]), maxfev=20_000
        )
        return UslFit(float(lam), float(sigma), 0.0)
    (lam, sigma, kappa), _ = curve_fit(
        law, x, y, p0=(lam0, 0.05, 0.001), bounds=([0, 0, 0], [np.inf, 1, 1]), maxfev=20_000
    )
    return UslFit(float(lam), float(sigma), float(kappa))


def holdout_error(cores: Sequence[float], throughput: Sequence[float], held_out: int) -> float:
    """Relative error predicting point ``held_out`` from a fit on the others."""
    keep = [i for i in range(len(cores)) if i != held_out]
    fit = fit_usl([cores[i] for i in keep], [throughput[i] for i in keep])
    measured = throughput[held_out]
    return abs(fit.throughput(cores[held_out]) - measured) / measured


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
