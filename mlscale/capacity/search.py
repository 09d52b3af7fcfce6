"""The largest load that meets the SLA: grow geometrically until it fails, then bisect.

As MLPerf's LoadGen finds peak QPS. ``measure`` runs one step (a load test at
one load) and says whether the SLA held; the search itself is pure and takes
it as an argument, so tests drive it with a table instead of a server.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mlscale.schemas.plan import StopReason


@dataclass(frozen=True)
class Step:
    load: float
    latency_ms: float | None  # at the SLA's percentile
    error_rate: float
    meets: bool
    valid: bool = True  # False: the generator saturated; not a measurement


@dataclass(frozen=True)
class SearchResult:
    max_load: float | None  # None: not even the smallest load meets the SLA
    steps: tuple[Step, ...]
    # The failing load above max_load (None when the search hit its ceiling).
    first_failure: float | None
    stopped_by: StopReason


def find_max_load(
    measure: Callable[[float], Step],
    *,
    start: float,
    ceiling: float,
    growth: float = 2.0,
    precision: float = 0.1,
    floor: float = 1.0,
    integer: bool = True,
    max_steps: int = 20,
    far_below: Callable[[Step], bool] | None = None,
) -> SearchResult:
    """Search loads from ``start`` up to ``ceiling``; ``precision`` is the bracket's relative width.

    ``far_below(step)``: the step's latency is so far under the limit that the load
    grows by ``growth`` squared (latency is flat until near capacity, so the light
    steps, which are the longest ones, say little). A step that is not a valid
    measurement (the generator saturated) bounds the bracket from above without
    being a failure: the search goes on below it, and ends "converged" only on a
    real miss, else "invalid" with a lower bound.
    """
    if not (start > 0 and ceiling >= start and growth > 1 and 0 < precision < 1):
        raise ValueError("need 0 < start <= ceiling, growth > 1 and 0 < precision < 1")
    steps: list[Step] = []

    def run(load: float) -> Step:
        load = max(round(load), 1) if integer else load
        step = measure(load)
        steps.append(step)
        return step

    best: float | None = None
    failed: float | None = None
    missed = False  # whether ``failed`` is a measured miss (not a saturated generator)
    load = start
    # Phase 1: grow until the SLA fails, the ceiling is reached, or a step is invalid.
    while len(steps) < max_steps:
        step = run(load)
        if not step.valid:
            if best is None:
                return SearchResult(None, tuple(steps), None, "invalid")
            failed = step.load
            break
        if step.meets:
            best = step.load
            if step.load >= ceiling:
                return SearchResult(best, tuple(steps), None, "ceiling")
            factor = growth * growth if far_below is not None and far_below(step) else growth
            load = min(step.load * factor, ceiling)
            continue
        failed, missed = step.load, True
        break
    else:
        return SearchResult(best, tuple(steps), failed, "max_steps")

    # Phase 2: go down until a load meets the SLA (when the first already failed),
    # then bisect the bracket (best meets, failed does not or could not be measured).
    while len(steps) < max_steps:
        if best is None:
            load = failed / growth
            if load < floor:
                return SearchResult(None, tuple(steps), failed, "floor")
        elif (failed - best) / failed <= precision or (integer and failed - best <= 1):
            return SearchResult(best, tuple(steps), failed, "converged" if missed else "invalid")
        else:
            load = math.sqrt(best * failed) if failed / best > 4 else (best + failed) / 2
        step = run(load)
        if not step.valid:
            if best is None:
                return SearchResult(None, tuple(steps), failed, "invalid")
            failed, missed = step.load, False
        elif step.meets:
            best = step.load
        else:
            failed, missed = step.load, True
    return SearchResult(best, tuple(steps), failed, "max_steps" if best else "floor")


# A percentile from a handful of requests is not a measurement: a step must hold at
# least five requests beyond its percentile, n (1 - q) >= 5, so that the value is set
# by several slow requests rather than by the single slowest. That is 100 requests
# for a p95 and 500 for a p99; capped at 5000 (p99.9 and max ask for more than a
# short step can hold, and say so on the step).
TAIL_REQUESTS = 5
MOST_REQUESTS_NEEDED = 5000


def min_requests(quantile: float) -> int:
    """Requests a step needs for its ``quantile`` (0.95 for a p95) to be a measurement."""
    if not 0 <= quantile < 1:
        return MOST_REQUESTS_NEEDED
    return min(MOST_REQUESTS_NEEDED, math.ceil(round(TAIL_REQUESTS / (1 - quantile), 6)))


def step_duration(base_s: float, needed: int, rate: float | None, longest_s: float) -> float:
    """Seconds for a step to hold ``needed`` requests at ``rate`` requests/s (an upper
    bound before the step: users over think time, or the arrival rate; the measured
    rate after it), with a quarter more for the start; from ``base_s`` to ``longest_s``."""
    if not rate or rate <= 0 or not math.isfinite(rate):
        return base_s
    # Whole seconds: the load generator ends a run on a whole second anyway.
    return min(longest_s, max(base_s, float(math.ceil(1.25 * needed / rate))))


def expected_rate(load: float, earlier: list[tuple[float, float]], most: float | None) -> float | None:
    """Requests/s a step at ``load`` should see, before it runs: the throughput per unit
    of load of the nearest earlier step (load, rps) scaled to ``load``, at most ``most``
    (users over think time, or the arrival rate); ``most`` alone before any step."""
    known = [(x, rps) for x, rps in earlier if x > 0 and rps > 0]
    if not known:
        return most
    nearest, rps = min(known, key=lambda point: abs(math.log(point[0] / load)))
    guess = rps * load / nearest
    return min(guess, most) if most else guess


def stable(rates: list[float], windows: int = 3, tolerance: float = 0.10) -> bool:
    """Whether a step's per-second throughput is steady: ``windows`` equal windows
    whose means agree within ``tolerance`` of their average (perf_analyzer's rule).

    At a few requests per second, counting alone varies more than 10 % (Poisson: a
    window of n requests varies by about 1/√n), so the tolerance widens to two of
    those standard deviations: a light step is not re-measured for its arithmetic.
    """
    if len(rates) < windows:
        return False
    size = len(rates) // windows
    means = [sum(rates[i * size : (i + 1) * size]) / size for i in range(windows)]
    average = sum(means) / windows
    if average <= 0:
        return False
    allowed = max(tolerance, 2 / math.sqrt(average * size))
    return all(abs(m - average) <= allowed * average for m in means)
