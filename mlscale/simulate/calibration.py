"""Where the pod's queue comes from: a ``plan.json``, or the reference scenario.

Without a plan, the reference scenario's pod (about 10 users per core at p95 < 1 s,
one request at a time per core). From a plan, c, μ and d are fitted to the measured
steps (cμ is the throughput plateau when the search saturated the pod), and the
queue's percentiles are then scaled, load by load, to pass through what each step
measured: a real server's latency curve bends earlier and its tail is heavier than
M/M/c's (its batching makes requests cheaper under load; a stall of the machine
lands on many requests at once), so the queue gives the shape (saturation,
Little's law, the growth beyond the last step) and the measurements give the
level. Between two steps the scale factor is interpolated (linear in load,
geometric in the factor); outside them the nearest step's factor holds.
Throughput, CPU use and the mean are the queue's own.

The plan is read only through its schema (``mlscale.schemas.plan.Plan``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np

from mlscale.capacity.models import mmc_response_quantile
from mlscale.errors import ConfigurationError
from mlscale.schemas.plan import Plan, PlanStep
from mlscale.simulate.queue import PodModel, closed_loop, open_loop
from mlscale.simulate.settings import quantile_of


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
    from scipy.optimize import minimize_scalar  # scipy.optimize costs a second to import: only a fit needs it

    rates = np.array([r for r, _ in points])
    observed = np.log([s for _, s in points])
    weighting = np.ones(len(points)) if weights is None else np.asarray(weights, dtype=float)
    top = float(rates.max())
    best: tuple[float, int, float, float] | None = None
    for c in _SERVER_CHOICES:
        for d in _delays(fastest_s, [s for _, s in points]):

            def error(x: float, c: int = c, d: float = d) -> float:
                mu = top * (1 + math.exp(x)) / c
                model = [math.log(mmc_response_quantile(quantile, r, mu, c) + d) for r in rates]
                return float(weighting @ (np.array(model) - observed) ** 2)

            result = minimize_scalar(
                error, bounds=(math.log(1e-4), math.log(100.0)), method="bounded", options={"xatol": 1e-3}
            )
            if best is None or result.fun < best[0]:
                best = (float(result.fun), c, top * (1 + math.exp(result.x)) / c, d)
    assert best is not None  # _SERVER_CHOICES is not empty
    total, c, mu, d = best
    rms = math.sqrt(total / float(weighting.sum()))
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
    weighting = np.ones(len(steps)) if weights is None else np.asarray(weights, dtype=float)
    best: tuple[float, int, float, float] | None = None
    for c in _SERVER_CHOICES:
        for d in _delays(fastest_s, [t for _, t in steps]):
            model = PodModel(servers=c, service_rate=capacity / c, delay_ms=1000 * d)
            predicted = np.log(
                [closed_loop(model, n, think_s, (quantile,)).quantiles_ms[0] / 1000 for n in users]
            )
            error = float(weighting @ (predicted - observed) ** 2)
            if best is None or error < best[0]:
                best = (error, c, capacity / c, d)
    assert best is not None  # _SERVER_CHOICES is not empty
    return best[1], best[2], best[3]


def saturation_throughput(steps: Sequence[PlanStep]) -> float | None:
    """The throughput plateau of a closed-loop search, or None if it never reached one:
    the pod is saturated from the first step after which more users brought no more
    than 5 % more requests/s, and the plateau is the most it served from there on.
    (A queue approaches its plateau from below, so the busiest step is often the
    last one: it cannot be the step the plateau is judged from.)"""
    ordered = sorted(steps, key=lambda s: s.load)
    for index, step in enumerate(ordered[:-1]):
        beyond = ordered[index + 1 :]
        if all(s.rps <= 1.05 * step.rps for s in beyond):
            return float(max(s.rps for s in (step, *beyond)))
    return None


def _plan_error(message: str) -> ConfigurationError:
    return ConfigurationError(f"The plan cannot drive the simulator: {message}.")


@functools.lru_cache(maxsize=16)
def pod_from_plan(plan: Plan) -> PodModel:
    """The pod a ``plan.json`` measured, as a queue.

    With ``model.latency`` {servers, service_rate_per_s, delay_ms} in the plan, those;
    otherwise c, μ and d fitted to the steps of the chosen pod size (throughput and
    the SLA's percentile, and the mean where the plan has it). Cached: a plan is
    frozen, and a fit costs a second."""
    sizing = plan.sizing
    if sizing is None:
        raise _plan_error("it has no sizing (no pod size met the SLA?); run `mlscale plan` again")
    cpu = sizing.cpu_per_pod
    workers = sizing.workers_per_pod or 1
    memory = sizing.memory_per_pod_mib or 512.0
    quantile = _plan_quantile(plan)
    if cpu <= 0:
        raise _plan_error("its pod has no CPU")
    size_label = f"plan.json: {cpu:g} CPU x {workers} worker(s)"
    latency = plan.model.latency
    if latency is not None:
        return PodModel(
            servers=latency.servers,
            service_rate=latency.service_rate_per_s,
            delay_ms=latency.delay_ms,
            cpu_cores=cpu,
            memory_mib=float(memory),
            source=f"{size_label}, the plan's latency model",
        )
    chosen = plan.measurement_of(cpu, workers)
    if chosen is None:
        raise _plan_error(f"no measurement of the {cpu:g}-CPU pod its sizing chose")
    steps = [s for s in chosen.steps if _usable(s)]
    if not steps:
        raise _plan_error(f"the {cpu:g}-CPU pod has no valid step with a throughput and a latency")
    kind, think = plan_kind(plan), plan_think_time(plan)
    plateau = saturation_throughput(steps) if kind == "users" else None
    points = [(s.rps, (s.latency_ms or 0.0) / 1000) for s in steps]
    # The step at the capacity found counts most: it is where the SLA is decided.
    weights = [3.0 if s.load == chosen.max_load else 1.0 for s in steps]
    medians = [s.p50_ms / 1000 for s in steps if s.p50_ms is not None and s.p50_ms > 0]
    fastest = min(medians, default=None)
    if plateau is None:
        c, mu, d, _ = fit_pod(points, quantile, weights=weights, fastest_s=fastest)
    else:
        c, mu, d = fit_closed_pod(
            [(float(s.load), (s.latency_ms or 0.0) / 1000) for s in steps],
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
        memory_mib=float(memory),
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


def _usable(step: PlanStep) -> bool:
    """A valid step with a throughput and a finite latency at a load."""
    latency_ms = step.latency_ms
    return bool(
        step.valid and step.rps > 0 and latency_ms is not None and 0 < latency_ms < math.inf and step.load
    )


Calibration = tuple[tuple[float, tuple[tuple[float, float], ...]], ...]


def _calibration(
    queue: PodModel, steps: Sequence[PlanStep], quantile: float, kind: str, think_s: float
) -> Calibration:
    """Per quantile measured (the SLA's, and the median where the plan has it), the
    measured/queue factor at each step's load; repeated loads are averaged."""
    wanted = [(quantile, "latency_ms")] + ([(0.5, "p50_ms")] if quantile != 0.5 else [])
    result = []
    for q, key in wanted:
        factors: dict[float, list[float]] = {}
        for step in steps:
            measured = step.latency_ms if key == "latency_ms" else step.p50_ms
            if measured is None or not 0 < measured < math.inf:
                continue
            load = float(step.load)
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


def plan_think_time(plan: Plan) -> float:
    """The think time a closed-loop plan's steps were measured with.

    Little's law on each step that met the SLA gives Z = users / throughput − R;
    their median is used when it differs from the plan's stated think time by more
    than a quarter (the load generator's own pauses, or a plan edited by hand), so
    that the simulated pod carries the throughput that was measured."""
    stated = plan.load_model.think_time_s
    if plan.load_model.kind != "users":
        return stated
    estimates = []
    for m in plan.measurements:
        for step in m.steps:
            latency = step.mean_ms or step.latency_ms
            if step.meets and step.valid and step.load and step.rps and latency:
                estimates.append(max(step.load / step.rps - latency / 1000, 0.0))
    if not estimates:
        return stated
    measured = float(np.median(estimates))
    return measured if abs(measured - stated) > 0.25 * max(stated, 1e-3) else stated


def plan_kind(plan: Plan) -> str:
    return plan.load_model.kind


def pod_latency(
    source: Plan | PodModel | None, load: float, *, kind: str | None = None, think_time_s: float | None = None
) -> tuple[float, float]:
    """(p50_ms, p95_ms) of one pod under a constant ``load``.

    ``source`` is a plan (its pod, its load kind and think time by default), a
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


@dataclasses.dataclass(frozen=True)
class StepCheck:
    """One measured step against the fitted pod, at the SLA's percentile."""

    load: float
    measured_ms: float
    simulated_ms: float
    error: float  # simulated / measured - 1


def check_against_plan(plan: Plan, model: PodModel | None = None) -> list[StepCheck]:
    """The fitted pod against each valid measured step of the sized pod: load, measured
    and simulated latency at the SLA's percentile, relative error."""
    model = model or pod_from_plan(plan)
    quantile = _plan_quantile(plan)
    kind, think = plan_kind(plan), plan_think_time(plan)
    cpu = plan.sizing.cpu_per_pod if plan.sizing else None
    measurement = next((m for m in plan.measurements if m.cpu == cpu), None)
    rows = []
    for step in measurement.steps if measurement else ():
        measured = step.latency_ms
        if not step.valid or not measured or not step.load:
            continue
        if kind == "users":
            state = closed_loop(model, step.load, think, (quantile,))
        else:
            state = open_loop(model, step.load, (quantile,))
        simulated = state.quantiles_ms[0]
        rows.append(StepCheck(step.load, measured, simulated, simulated / measured - 1))
    return rows


def _plan_quantile(plan: Plan) -> float:
    return quantile_of(plan.sla.percentile or "p95")
