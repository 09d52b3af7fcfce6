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

Calibration: from a ``plan.json``, or, without one, the reference scenario's pod
(about 10 users per core at p95 < 1 s, one request at a time per core). From a
plan, c, μ and d are fitted to the measured steps (cμ is the throughput plateau
when the search saturated the pod), and the queue's percentiles are then scaled,
load by load, to pass through what each step measured: a real server's latency
curve bends earlier and its tail is heavier than M/M/c's (its batching makes
requests cheaper under load; a stall of the machine lands on many requests at
once), so the queue gives the shape (saturation, Little's law, the growth beyond
the last step) and the measurements give the level. Between two steps the scale
factor is interpolated (linear in load, geometric in the factor); outside them
the nearest step's factor holds. Throughput, CPU use and the mean are the queue's own.

The simulator reads these through tables (``ClosedTable``, ``OpenTable``) so a
tick costs a lookup, not a solve.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammainc

from mlscale.capacity.models import erlang_c, max_arrival_rate, mmc_response_quantile
from mlscale.errors import ConfigurationError

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

    def to_dict(self) -> dict:
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
        return f0 * (f1 / f0) ** ((load - x0) / (x1 - x0))

    def calibrated(self, quantiles, load: float, queue_ms) -> tuple[float, ...]:
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


def open_loop(model: PodModel, rate: float, quantiles=REPORTED) -> PodState:
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
    return p / p.sum()


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
    return cdf @ seen


def _support(p: np.ndarray, cut: float = 1e-12) -> tuple[int, np.ndarray]:
    """The part of a distribution that carries its mass: (first index, probabilities)."""
    keep = np.flatnonzero(p > cut * p.max())
    first, last = int(keep[0]), int(keep[-1])
    part = p[first : last + 1]
    return first, part / part.sum()


def _closed_integer(model: PodModel, users: int, think_s: float, quantiles) -> PodState:
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


def closed_loop(model: PodModel, users: float, think_s: float, quantiles=REPORTED) -> PodState:
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


# --- calibration --------------------------------------------------------------------------


def reference_pod(
    *,
    users_per_core: float = 10.0,
    limit_ms: float = 1000.0,
    quantile: float = 0.95,
    think_s: float = 1.0,
    cores: float = 1.0,
    memory_mib: float = 512.0,
) -> PodModel:
    """The reference scenario's pod: `mlflow models serve` sized at about 10 users per
    core at p95 < 1 s with 1 s of think time; one request at a time per core. The
    service rate is solved so that exactly ``users_per_core`` users meet the limit."""
    servers = max(1, round(cores))
    users = users_per_core * cores

    def p_at(mu: float) -> float:
        model = PodModel(servers=servers, service_rate=mu)
        return closed_loop(model, users, think_s, (quantile,)).quantiles_ms[0]

    low, high = 1e-3, 1e4  # requests/s per server; latency falls as μ grows
    for _ in range(60):
        middle = math.sqrt(low * high)
        if p_at(middle) > limit_ms:
            low = middle
        else:
            high = middle
    return PodModel(
        servers=servers,
        service_rate=high,
        cpu_cores=cores,
        memory_mib=memory_mib,
        source=f"the reference scenario: {users_per_core:g} users per core at "
        f"p{quantile * 100:g} < {limit_ms:g} ms, {think_s:g} s think time",
    )


_SERVER_CHOICES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


def _delays(fastest_median_s: float | None, latencies_s: list[float]) -> tuple[float, ...]:
    """The fixed delays a fit tries: shares of the fastest median measured, which at
    light load is mostly fixed delay, or smaller shares of the fastest tail
    percentile, which is not."""
    if fastest_median_s:
        return tuple(share * fastest_median_s for share in (0.0, 0.5, 0.9))
    return tuple(share * min(latencies_s) for share in (0.0, 0.25, 0.5))


def fit_pod(
    points: list[tuple[float, float]],
    quantile: float,
    *,
    weights: list[float] | None = None,
    fastest_s: float | None = None,
) -> tuple[int, float, float, float]:
    """(c, μ, d, rms log error) of the M/M/c + delay that best fits measured
    (requests/s, seconds at ``quantile``) points: least squares on log latency, the
    open-loop model at the measured throughput (a closed loop's arrival rate is its
    throughput), the capacity cμ above the largest throughput measured, by a bounded
    search. c from a short list, d from three shares of ``fastest_s`` (the fastest
    median response measured), or, without it, of the fastest ``quantile``."""
    from scipy.optimize import minimize_scalar

    rates = np.array([r for r, _ in points])
    observed = np.log([s for _, s in points])
    weights = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=float)
    top = float(rates.max())
    best = None
    for c in _SERVER_CHOICES:
        for d in _delays(fastest_s, [s for _, s in points]):

            def error(x: float, c=c, d=d) -> float:
                mu = top * (1 + math.exp(x)) / c
                model = [math.log(mmc_response_quantile(quantile, r, mu, c) + d) for r in rates]
                return float(weights @ (np.array(model) - observed) ** 2)

            result = minimize_scalar(
                error, bounds=(math.log(1e-4), math.log(100.0)), method="bounded", options={"xatol": 1e-3}
            )
            if best is None or result.fun < best[0]:
                best = (float(result.fun), c, top * (1 + math.exp(result.x)) / c, d)
    total, c, mu, d = best
    rms = math.sqrt(total / float(weights.sum()))
    return c, mu, d, rms


def fit_closed_pod(
    steps: list[tuple[float, float]],
    quantile: float,
    think_s: float,
    capacity: float,
    *,
    weights: list[float] | None = None,
    fastest_s: float | None = None,
) -> tuple[int, float, float]:
    """(c, μ, d) of the closed-loop M/M/c//N + delay, cμ = ``capacity`` (the plateau
    a saturated search measured), that best fits (users, seconds at ``quantile``)
    steps: least squares on log latency, each step solved as the finite-source
    queue it was, so the steps at the plateau count as well as those below it."""
    users = [n for n, _ in steps]
    observed = np.log([t for _, t in steps])
    weights = np.ones(len(steps)) if weights is None else np.asarray(weights, dtype=float)
    best = None
    for c in _SERVER_CHOICES:
        for d in _delays(fastest_s, [t for _, t in steps]):
            model = PodModel(servers=c, service_rate=capacity / c, delay_ms=1000 * d)
            predicted = np.log(
                [closed_loop(model, n, think_s, (quantile,)).quantiles_ms[0] / 1000 for n in users]
            )
            error = float(weights @ (predicted - observed) ** 2)
            if best is None or error < best[0]:
                best = (error, c, capacity / c, d)
    return best[1], best[2], best[3]


def saturation_throughput(steps: list[dict]) -> float | None:
    """The throughput plateau of a closed-loop search, or None if it never reached one:
    the pod is saturated from the first step after which more users brought no more
    than 5 % more requests/s, and the plateau is the most it served from there on.
    (A queue approaches its plateau from below, so the busiest step is often the
    last one: it cannot be the step the plateau is judged from.)"""
    valid = [
        s for s in steps if isinstance(s.get("rps"), (int, float)) and isinstance(s.get("load"), (int, float))
    ]
    valid.sort(key=lambda s: s["load"])
    for index, step in enumerate(valid[:-1]):
        beyond = valid[index + 1 :]
        if all(s["rps"] <= 1.05 * step["rps"] for s in beyond):
            return float(max(s["rps"] for s in (step, *beyond)))
    return None


def _plan_error(message: str) -> ConfigurationError:
    return ConfigurationError(f"The plan cannot drive the simulator: {message}.")


def pod_from_plan(plan: dict) -> PodModel:
    """The pod a ``plan.json`` measured, as a queue.

    With ``model.latency`` {servers, service_rate_per_s, delay_ms} in the plan, those;
    otherwise c, μ and d fitted to the steps of the chosen pod size (throughput and
    the SLA's percentile, and the mean where the plan has it)."""
    return _pod_from_plan_text(json.dumps(plan, sort_keys=True, default=str))


@functools.lru_cache(maxsize=16)
def _pod_from_plan_text(text: str) -> PodModel:
    plan = json.loads(text)
    if not isinstance(plan, dict):
        raise _plan_error("it is not a JSON object")
    sizing = plan.get("sizing")
    if not isinstance(sizing, dict) or "cpu_per_pod" not in sizing:
        raise _plan_error("it has no sizing (no pod size met the SLA?); run `mlscale plan` again")
    try:
        cpu = float(sizing["cpu_per_pod"])
        workers = int(sizing.get("workers_per_pod") or 1)
        memory = float(sizing.get("memory_per_pod_mib") or 512)
        quantile = _plan_quantile(plan)
    except (TypeError, ValueError) as exc:
        raise _plan_error(f"its sizing is not numbers ({exc})") from None
    if cpu <= 0:
        raise _plan_error("its pod has no CPU")
    size_label = f"plan.json: {cpu:g} CPU x {workers} worker(s)"
    latency = (plan.get("model") or {}).get("latency")
    if isinstance(latency, dict) and "servers" in latency and "service_rate_per_s" in latency:
        try:
            return PodModel(
                servers=int(latency["servers"]),
                service_rate=float(latency["service_rate_per_s"]),
                delay_ms=float(latency.get("delay_ms", 0.0)),
                cpu_cores=cpu,
                memory_mib=memory,
                source=f"{size_label}, the plan's latency model",
            )
        except (TypeError, ValueError) as exc:
            raise _plan_error(f"model.latency is not numbers ({exc})") from None
    measurements = plan.get("measurements")
    if not isinstance(measurements, list):
        raise _plan_error("it has no measurements")
    chosen = [
        m
        for m in measurements
        if isinstance(m, dict) and m.get("cpu") == cpu and m.get("workers", 1) == workers
    ]
    chosen = chosen or [m for m in measurements if isinstance(m, dict) and m.get("cpu") == cpu]
    if not chosen:
        raise _plan_error(f"no measurement of the {cpu:g}-CPU pod its sizing chose")
    steps = [s for s in chosen[0].get("steps") or [] if isinstance(s, dict) and _usable(s)]
    if not steps:
        raise _plan_error(f"the {cpu:g}-CPU pod has no valid step with a throughput and a latency")
    kind, think = plan_kind(plan), plan_think_time(plan)
    plateau = saturation_throughput(steps) if kind == "users" else None
    points = [(float(s["rps"]), s["latency_ms"] / 1000) for s in steps]
    # The step at the capacity found counts most: it is where the SLA is decided.
    weights = [3.0 if s.get("load") == chosen[0].get("max_load") else 1.0 for s in steps]
    medians = [
        s["p50_ms"] / 1000 for s in steps if isinstance(s.get("p50_ms"), (int, float)) and s["p50_ms"] > 0
    ]
    fastest = min(medians, default=None)
    if plateau is None:
        c, mu, d, _ = fit_pod(points, quantile, weights=weights, fastest_s=fastest)
    else:
        c, mu, d = fit_closed_pod(
            [(float(s["load"]), s["latency_ms"] / 1000) for s in steps],
            quantile,
            think,
            plateau,
            weights=weights,
            fastest_s=fastest,
        )
    queue = PodModel(
        servers=c,
        service_rate=mu,
        delay_ms=1000 * d,
        cpu_cores=cpu,
        memory_mib=memory,
        source=f"{size_label}, M/M/{c} fitted to {len(points)} steps",
    )
    calibration = _calibration(queue, steps, quantile, kind, think)
    # The queue's own error at each step is what its calibration factor corrects.
    factors = [f for q, points in calibration if q == quantile for _, f in points]
    queue_off = max((abs(1 / f - 1) for f in factors), default=0.0)
    return dataclasses.replace(
        queue,
        calibration=calibration,
        source=f"{queue.source}, queue alone {100 * queue_off:.0f} % off at worst, calibrated to them",
    )


def _usable(step: dict) -> bool:
    rps, latency_ms = step.get("rps"), step.get("latency_ms")
    numbers = isinstance(rps, (int, float)) and isinstance(latency_ms, (int, float))
    return bool(
        step.get("valid", True) and numbers and rps > 0 and 0 < latency_ms < math.inf and step.get("load")
    )


def _calibration(queue: PodModel, steps: list[dict], quantile: float, kind: str, think_s: float):
    """Per quantile measured (the SLA's, and the median where the plan has it), the
    measured/queue factor at each step's load; repeated loads are averaged."""
    wanted = [(quantile, "latency_ms")] + ([(0.5, "p50_ms")] if quantile != 0.5 else [])
    result = []
    for q, key in wanted:
        factors: dict[float, list[float]] = {}
        for step in steps:
            measured = step.get(key)
            if not isinstance(measured, (int, float)) or not 0 < measured < math.inf:
                continue
            load = float(step["load"])
            state = (
                closed_loop(queue, load, think_s, (q,)) if kind == "users" else open_loop(queue, load, (q,))
            )
            if math.isfinite(state.quantiles_ms[0]) and state.quantiles_ms[0] > 0:
                factors.setdefault(load, []).append(math.log(measured / state.quantiles_ms[0]))
        if factors:
            result.append(
                (q, tuple((load, math.exp(float(np.mean(f)))) for load, f in sorted(factors.items())))
            )
    return tuple(result)


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


def plan_think_time(plan: dict) -> float:
    """The think time a closed-loop plan's steps were measured with.

    Little's law on each step that met the SLA gives Z = users / throughput − R;
    their median is used when it differs from the plan's stated think time by more
    than a quarter (the load generator's own pauses, or a plan edited by hand), so
    that the simulated pod carries the throughput that was measured."""
    load_model = plan.get("load_model") or {}
    stated = float(load_model.get("think_time_s", 1.0))
    if load_model.get("kind", "users") != "users":
        return stated
    estimates = []
    for m in plan.get("measurements") or []:
        for step in (m.get("steps") or []) if isinstance(m, dict) else []:
            load, rps = step.get("load"), step.get("rps")
            latency = step.get("mean_ms") or step.get("latency_ms")
            if step.get("meets") and step.get("valid", True) and load and rps and latency:
                estimates.append(max(load / rps - latency / 1000, 0.0))
    if not estimates:
        return stated
    measured = float(np.median(estimates))
    return measured if abs(measured - stated) > 0.25 * max(stated, 1e-3) else stated


def plan_kind(plan: dict) -> str:
    return (plan.get("load_model") or {}).get("kind", "users")


def pod_latency(
    source: dict | PodModel | None, load: float, *, kind: str | None = None, think_time_s: float | None = None
) -> tuple[float, float]:
    """(p50_ms, p95_ms) of one pod under a constant ``load``.

    ``source`` is a plan dict (its pod, its load kind and think time by default), a
    ``PodModel``, or None for the reference scenario's pod. ``load`` is users
    (closed loop, ``think_time_s``) or requests/s (``kind="rps"``)."""
    if isinstance(source, PodModel):
        model, default_kind, default_think = source, "users", 1.0
    elif source is None:
        model, default_kind, default_think = reference_pod(), "users", 1.0
    else:
        model = pod_from_plan(source)
        default_kind, default_think = plan_kind(source), plan_think_time(source)
    kind = kind or default_kind
    think = default_think if think_time_s is None else think_time_s
    if kind == "users":
        state = closed_loop(model, load, think, (0.5, 0.95))
    elif kind == "rps":
        state = open_loop(model, load, (0.5, 0.95))
    else:
        raise ConfigurationError(f"A load is counted in users or rps, not {kind!r}.")
    return state.quantiles_ms[0], state.quantiles_ms[1]


def check_against_plan(plan: dict, model: PodModel | None = None) -> list[dict]:
    """The fitted pod against each valid measured step: load, measured and simulated
    latency at the SLA's percentile, relative error."""
    model = model or pod_from_plan(plan)
    quantile = _plan_quantile(plan)
    kind, think = plan_kind(plan), plan_think_time(plan)
    cpu = (plan.get("sizing") or {}).get("cpu_per_pod")
    rows = []
    for m in plan.get("measurements") or []:
        if m.get("cpu") != cpu:
            continue
        for step in m.get("steps") or []:
            measured = step.get("latency_ms")
            if not step.get("valid", True) or not measured or not step.get("load"):
                continue
            if kind == "users":
                state = closed_loop(model, step["load"], think, (quantile,))
            else:
                state = open_loop(model, step["load"], (quantile,))
            simulated = state.quantiles_ms[0]
            rows.append(
                {
                    "load": step["load"],
                    "measured_ms": measured,
                    "simulated_ms": simulated,
                    "error": simulated / measured - 1,
                }
            )
        break
    return rows


def _plan_quantile(plan: dict) -> float:
    from mlscale.simulate.settings import quantile_of

    return quantile_of((plan.get("sla") or {}).get("percentile") or "p95")


# --- tables: what the tick loop reads --------------------------------------------------


class ClosedTable:
    """Closed-loop pod states over a grid of users per pod, interpolated.

    Whole counts up to 64, then 4 % apart: the latency curve is smooth there and
    a linear interpolation between neighbours is well within the model's error.
    A row is solved the first time a lookup needs it: a run visits a band of the
    grid, and each row costs a bisection."""

    def __init__(self, model: PodModel, think_s: float, quantiles, max_users: float):
        grid = list(range(65))
        n = 64.0
        while grid[-1] < max_users:
            n *= 1.04
            if round(n) > grid[-1]:
                grid.append(round(n))
        self.grid = grid
        self._model, self._think_s, self._quantiles = model, think_s, tuple(quantiles)
        self._rows: list[tuple | None] = [None] * len(grid)

    def row(self, i: int) -> tuple[float, ...]:
        """(throughput, busy, mean_ms, in_flight, *quantiles_ms) at ``grid[i]`` users."""
        row = self._rows[i]
        if row is None:
            s = _closed_integer(self._model, self.grid[i], self._think_s, self._quantiles)
            row = self._rows[i] = (s.throughput, s.busy, s.mean_ms, s.in_flight, *s.quantiles_ms)
        return row

    def at(self, users: float) -> tuple[float, ...]:
        """(throughput, busy, mean_ms, in_flight, *quantiles_ms) for ``users`` per pod."""
        grid = self.grid
        if users >= grid[-1]:
            return self.row(len(grid) - 1)
        i = bisect.bisect_right(grid, users) - 1
        low, high = grid[i], grid[i + 1]
        share = (users - low) / (high - low)
        a, b = self.row(i), self.row(i + 1)
        return tuple(x + (y - x) * share for x, y in zip(a, b, strict=False))

    def serving(self, users: float, extra: int) -> tuple[float, float, float, float, float, float]:
        """What a tick reads, as ``at`` computes it: (throughput, busy, in_flight,
        p50_ms, p95_ms, and the quantile at ``extra``)."""
        grid = self.grid
        if users >= grid[-1]:
            a = self.row(len(grid) - 1)
            return a[0], a[1], a[3], a[4], a[5], a[4 + extra]
        i = bisect.bisect_right(grid, users) - 1
        low, high = grid[i], grid[i + 1]
        share = (users - low) / (high - low)
        a, b = self.row(i), self.row(i + 1)
        k = 4 + extra
        return (
            a[0] + (b[0] - a[0]) * share,
            a[1] + (b[1] - a[1]) * share,
            a[3] + (b[3] - a[3]) * share,
            a[4] + (b[4] - a[4]) * share,
            a[5] + (b[5] - a[5]) * share,
            a[k] + (b[k] - a[k]) * share,
        )


class OpenTable:
    """Open-loop pod states against the offered share of capacity ρ < RHO_MAX, on a
    grid uniform in −ln(1−ρ), which is dense where the latency climbs. Rows are
    solved on first use, as in ``ClosedTable``."""

    def __init__(self, model: PodModel, quantiles, points: int = 240):
        self.capacity = model.capacity_rps
        self.top = -math.log(1 - RHO_MAX)
        self.step = self.top / (points - 1)
        self._model, self._quantiles = model, tuple(quantiles)
        self._rows: list[tuple | None] = [None] * points

    def row(self, i: int) -> tuple[float, ...]:
        """(mean_ms, *quantiles_ms) at the grid's ``i``-th point."""
        row = self._rows[i]
        if row is None:
            rho = 1 - math.exp(-i * self.step)
            s = open_loop(self._model, min(rho, RHO_MAX) * self.capacity, self._quantiles)
            row = self._rows[i] = (s.mean_ms, *s.quantiles_ms)
        return row

    def _place(self, rho: float) -> tuple[int, float]:
        x = -math.log1p(-rho) / self.step
        i = int(x)
        return i, x - i

    def at(self, rho: float) -> tuple[float, ...]:
        """(mean_ms, *quantiles_ms) at ``rho`` (clamped to RHO_MAX)."""
        last = len(self._rows) - 1
        if rho >= RHO_MAX:
            return self.row(last)
        i, share = self._place(rho)
        a, b = self.row(i), self.row(min(i + 1, last))
        return tuple(p + (q - p) * share for p, q in zip(a, b, strict=False))

    def serving(self, rho: float, extra: int) -> tuple[float, float, float, float]:
        """What a tick reads, as ``at`` computes it: (mean_ms, p50_ms, p95_ms, and the
        quantile at ``extra``)."""
        last = len(self._rows) - 1
        if rho >= RHO_MAX:
            a = self.row(last)
            return a[0], a[1], a[2], a[1 + extra]
        i, share = self._place(rho)
        a, b = self.row(i), self.row(min(i + 1, last))
        k = 1 + extra
        return (
            a[0] + (b[0] - a[0]) * share,
            a[1] + (b[1] - a[1]) * share,
            a[2] + (b[2] - a[2]) * share,
            a[k] + (b[k] - a[k]) * share,
        )
