"""Capacity search, models and sizing on synthetic measurements with known answers."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import mlscale.capacity.planner as planner
import mlscale.capacity.pods as pods_module
from mlscale.capacity.models import (
    QuotaThroughput,
    SizeMeasurement,
    TailModel,
    UslFit,
    erlang_c,
    fit_capacity,
    fit_throughput,
    fit_usl,
    holdout_check,
    holdout_error,
    max_arrival_rate,
    mmc_response_quantile,
)
from mlscale.capacity.planner import PlanSettings, _assemble, _at_limit
from mlscale.capacity.pods import PodSpec
from mlscale.capacity.search import Step, expected_rate, find_max_load, min_requests, step_duration
from mlscale.capacity.sizing import (
    NODE_TYPES,
    allocatable_cpu_m,
    allocatable_memory_mib,
    cpu_share_at,
    hpa_cpu_target,
    pod_memory_mib,
    size,
)
from mlscale.errors import ConfigurationError
from mlscale.loadtest.sla import parse_sla
from mlscale.schemas.loadtest import LoadTestSummary
from mlscale.schemas.plan import Measurement, PlanStep, parse_plan


def server_with_capacity(capacity: float, *, saturate_at: float | None = None):
    """A measure function: the SLA holds up to ``capacity``; p95 grows with load."""
    calls = []

    def measure(load: float) -> Step:
        calls.append(load)
        p95 = 100 * load / capacity
        valid = saturate_at is None or load < saturate_at
        return Step(load, p95, 0.0, meets=load <= capacity, valid=valid)

    return measure, calls


@pytest.mark.parametrize("capacity", [1, 7, 120, 333, 1000])
def test_the_search_finds_the_capacity_within_its_precision(capacity):
    measure, calls = server_with_capacity(capacity)
    result = find_max_load(measure, start=4, ceiling=10_000, precision=0.05)
    assert result.stopped_by == "converged"
    assert result.max_load <= capacity
    assert result.max_load >= capacity * 0.95 or capacity - result.max_load <= 1
    assert len(calls) <= 20


def test_growth_is_geometric_then_bisection():
    measure, calls = server_with_capacity(100)
    find_max_load(measure, start=10, ceiling=1000, precision=0.1)
    assert calls[:5] == [10, 20, 40, 80, 160]
    assert all(80 <= c <= 160 for c in calls[5:])


def test_the_ceiling_ends_the_search():
    measure, _ = server_with_capacity(10_000)
    assert find_max_load(measure, start=10, ceiling=50).stopped_by == "ceiling"


def test_a_saturated_generator_bounds_the_bracket_and_leaves_a_lower_bound():
    # The server carries 10,000 but the generator cannot send more than 99: the search
    # closes in under the generator's reach and says the capacity is a lower bound.
    measure, calls = server_with_capacity(10_000, saturate_at=100)
    result = find_max_load(measure, start=10, ceiling=10_000)
    assert result.stopped_by == "invalid"
    assert 90 <= result.max_load < 100
    assert calls[:5] == [10, 20, 40, 80, 160]


def test_a_miss_below_where_the_generator_saturates_converges():
    measure, _ = server_with_capacity(120, saturate_at=150)
    result = find_max_load(measure, start=10, ceiling=10_000, precision=0.05)
    assert result.stopped_by == "converged"
    assert 114 <= result.max_load <= 120


def test_far_below_the_limit_the_load_grows_four_fold():
    measure, calls = server_with_capacity(5_000)
    result = find_max_load(
        measure, start=4, ceiling=100_000, precision=0.1, far_below=lambda step: step.latency_ms < 10
    )
    # p95 = 100 x load / 5,000 ms: under 10 ms (four-fold) up to 500 users, then doubling.
    assert calls[:7] == [4, 16, 64, 256, 1024, 2048, 4096]
    assert result.stopped_by == "converged" and 4_500 <= result.max_load <= 5_000
    doubling, _ = server_with_capacity(5_000)
    slow_calls = []
    find_max_load(lambda load: slow_calls.append(load) or doubling(load), start=4, ceiling=100_000)
    assert len(calls) < len(slow_calls)


def test_a_server_that_never_meets_the_sla():
    def measure(load):
        return Step(load, 5000, 0.0, meets=False)

    result = find_max_load(measure, start=8, ceiling=100)
    assert result.max_load is None and result.stopped_by == "floor"


def test_usl_recovers_known_parameters_and_predicts_a_held_out_size():
    truth = dict(lam=100.0, sigma=0.05, kappa=0.002)
    cores = [1, 2, 3, 4, 6, 8]
    throughput = [
        truth["lam"] * n / (1 + truth["sigma"] * (n - 1) + truth["kappa"] * n * (n - 1)) for n in cores
    ]
    fit = fit_usl(cores, throughput)
    assert fit.lam == pytest.approx(100, rel=1e-3)
    assert fit.sigma == pytest.approx(0.05, rel=1e-2)
    assert holdout_error(cores, throughput, held_out=4) < 0.01


def test_erlang_c_known_values():
    # Textbook values: c = 1 is M/M/1, where P(wait) = rho.
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    # M/M/1 response time is exponential with rate mu - lambda.
    q95 = mmc_response_quantile(0.95, arrival=5, service_rate=10, servers=1)
    assert q95 == pytest.approx(-math.log(0.05) / 5, rel=1e-6)


def test_the_sla_rate_is_the_largest_meeting_the_quantile():
    rate = max_arrival_rate(0.95, 0.5, service_rate=10, servers=4)
    assert mmc_response_quantile(0.95, rate, 10, 4) == pytest.approx(0.5, rel=1e-3)
    assert rate < 40


def test_gke_allocatable_matches_the_published_examples():
    assert allocatable_cpu_m(4) == 3920
    assert allocatable_cpu_m(1) == 940
    assert allocatable_memory_mib(16) / 1024 == pytest.approx(13.3, abs=0.1)


def test_the_reference_sentence_and_a_self_consistent_plan():
    plan = size(
        target=120,
        target_kind="users",
        capacity_per_pod=10,
        cpu_per_pod=1,
        workers_per_pod=1,
        sla_text="p95 < 1 s",
        node_type="e2-standard-4",
    )
    assert plan.pods == 15  # 120 users at 80 % of 10 users per pod
    assert plan.pods_per_node == 3  # (3920m - 100m) // 1000m, as GKE's own example
    assert plan.nodes == 5
    assert plan.pods * plan.cpu_per_pod >= plan.cores
    assert plan.pods_per_node * plan.nodes >= plan.pods
    assert plan.hpa_max_replicas >= plan.pods and plan.hpa_target_cpu_utilization == 80
    assert plan.sentence == (
        "120 concurrent users at p95 < 1 s need 15 cores: 15 pods of 1 CPU on 5 e2-standard-4 nodes"
    )


def test_a_pod_larger_than_the_node_is_refused():
    with pytest.raises(ConfigurationError, match="does not fit on e2-standard-2"):
        size(
            target=10,
            target_kind="rps",
            capacity_per_pod=5,
            cpu_per_pod=2,
            workers_per_pod=2,
            sla_text="p95 < 1 s",
            node_type="e2-standard-2",
        )


def test_two_sizes_fit_contention_only():
    fit = fit_usl([1, 2], [100, 180])
    assert fit.kappa == 0.0
    assert fit.throughput(1) == pytest.approx(100, rel=1e-3)
    assert fit.throughput(2) == pytest.approx(180, rel=1e-3)


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ([100, 102, 98, 101, 99, 100], True),
        ([50, 80, 100, 100, 100, 100], False),  # still warming up
        ([100, 100, 100, 100, 60, 60], False),  # a stall at the end
        ([100, 100], False),  # too short to tell
        ([0, 0, 0], False),
        # Four requests a second: windows of 24 ± 5 requests by counting alone.
        ([4, 5, 3, 4, 6, 2, 4, 4, 4, 3, 5, 4, 4, 4, 5, 3, 4, 6], True),
        ([4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1, 4, 4, 4, 4, 4, 4], False),
    ],
)
def test_a_step_is_stable_when_three_windows_agree(rates, expected):
    from mlscale.capacity.search import stable

    assert stable(rates) is expected


# A closed-loop system with known laws: USL throughput over whole cores, a CFS quota
# that loses 8 ms of each 100 ms period below one, 5 ms of fixed delay, and a p95
# twice the (queueing part of the) mean at the SLA's edge.
KNOWN_USL = UslFit(lam=200.0, sigma=0.05, kappa=0.0)
KNOWN = QuotaThroughput(KNOWN_USL, lost_ms=8.0, period_ms=100.0)
FIT_OPTIONS = dict(kind="users", quantile=0.95, limit_ms=1000.0, think_time_s=1.0)


def known_size(cpu: float, noise: float = 1.0) -> SizeMeasurement:
    rps = KNOWN.throughput(cpu) * noise
    mean_ms = 5 + (1000 - 5) / 2.0
    users = rps * (1.0 + mean_ms / 1000)  # Little's law
    return SizeMeasurement(
        cpu=cpu,
        workers=1,
        max_load=users,
        max_rps=rps,
        percentile_ms=1000.0,
        mean_ms=mean_ms,
        lightest_ms=5.0,
    )


def test_the_capacity_model_recovers_a_known_system_and_checks_a_held_out_size():
    sizes = [known_size(c) for c in (0.25, 0.5, 1.0, 2.0)]
    model = fit_capacity(sizes, **FIT_OPTIONS)
    assert model.tail.delay_ms == 5.0 and model.tail.tail_ratio == pytest.approx(2.0)
    assert model.throughput.lost_ms == pytest.approx(8.0, rel=1e-3)
    assert model.throughput.usl.sigma == pytest.approx(0.05, rel=1e-2)
    for size_ in sizes:
        assert model.max_load(size_.cpu) == pytest.approx(size_.max_load, rel=0.01)
    predicted, error = holdout_check(sizes, 1, **FIT_OPTIONS)
    assert predicted == pytest.approx(sizes[1].max_load, rel=0.01) and error < 0.01


def test_the_hold_out_error_is_the_held_out_sizes_own_error():
    # The held-out size measured 12 % above the law: the check reports about 12 %
    # (relative to what was measured), so a bad size cannot hide.
    sizes = [known_size(0.25), known_size(0.5, noise=1.12), known_size(1.0)]
    _, error = holdout_check(sizes, 1, **FIT_OPTIONS)
    assert error == pytest.approx(1 - 1 / 1.12, abs=0.01)


def test_the_open_loop_tail_is_erlang_c():
    tail = TailModel(
        kind="rps", quantile=0.95, limit_ms=105.0, think_time_s=0.0, delay_ms=5.0, tail_ratio=3.0
    )
    # 100 ms left for an M/M/1 with μ = 100/s: λ with ln(20)/(μ−λ) = 0.1 s, i.e. μ − 30.
    assert tail.load_at(100.0) == pytest.approx(100 - 10 * math.log(20), rel=1e-3)
    # Four workers sharing that throughput serve each request at 25/s: one service's own
    # p95 (ln 20 / 25 = 120 ms) is over the budget, so no arrival rate meets it.
    assert tail.load_at(100.0, servers=4) == 0.0


def test_the_capacity_at_the_limit_is_read_between_the_bracketing_steps():
    best = PlanStep(load=48, rps=48.0, latency_ms=700.0, mean_ms=150.0, meets=True)
    failed = PlanStep(load=64, rps=52.0, latency_ms=1300.0, mean_ms=300.0, meets=False)
    crossing = _at_limit(best, failed, 1000.0)
    assert crossing is not None
    assert crossing.model_dump() == pytest.approx({"load": 56, "rps": 50.0, "mean_ms": 225.0})
    assert _at_limit(best, None, 1000.0) is None  # the search hit its ceiling
    missed_on_errors = failed.model_copy(update={"latency_ms": 800.0})
    assert _at_limit(best, missed_on_errors, 1000.0) is None


def _measurement(cpu: float, stopped_by: str = "converged", **changes) -> dict:
    """A size's search as plan.json holds it (tests/cli/test_cli.py writes it to a file)."""
    size_ = known_size(cpu)
    best = {
        "load": round(size_.max_load * 0.95),
        "rps": size_.max_rps * 0.97,
        "latency_ms": 900.0,
        "mean_ms": size_.mean_ms * 0.9,
        "meets": True,
        "valid": True,
    }
    failed = {
        "load": round(size_.max_load * 1.05),
        "rps": size_.max_rps * 1.03,
        "latency_ms": 1100.0,
        "mean_ms": size_.mean_ms * 1.1,
        "meets": False,
        "valid": True,
    }
    light = {"load": 4, "rps": 4.0, "latency_ms": 5.0, "mean_ms": 3.0, "meets": True, "valid": True}
    crossing = _at_limit(PlanStep(**best), PlanStep(**failed), 1000.0)
    measurement = {
        "cpu": cpu,
        "workers": 1,
        "max_load": best["load"],
        "max_rps": best["rps"],
        "p95_ms_at_max": 900.0,
        "mean_ms_at_max": best["mean_ms"],
        "stopped_by": stopped_by,
        "at_limit": crossing.model_dump() if crossing else None,
        "steps": [light, best, failed],
        **changes,
    }
    return measurement


def _measured(cpu: float, stopped_by: str = "converged", **changes) -> Measurement:
    """``_measurement`` through the schema, as the planner takes it."""
    return Measurement.model_validate(_measurement(cpu, stopped_by, **changes))


def test_a_plan_fits_converged_sizes_only_and_sizes_from_the_best_per_core():
    settings = PlanSettings(
        sla=parse_sla("p95<1s"),
        kind="users",
        target=1000,
        out_dir="unused",
        pods=(PodSpec(0.25), PodSpec(0.5), PodSpec(1.0)),
        url="http://x",
    )
    measurements = [_measured(0.25), _measured(0.5), _measured(1.0)]
    plan = _assemble(settings, measurements)
    model = plan.model
    assert model.fitted_cpus == (0.25, 0.5, 1.0) and model.holdout_cpu == 0.5
    assert model.holdout_error is not None and model.holdout_error < 0.05
    assert [p.cpu for p in model.predicted or ()] == [0.25, 0.5, 1.0, 2.0, 4.0]
    sizing = plan.sizing
    assert sizing is not None
    # The size that serves the most per core: here 1 CPU, as the quota costs the
    # fractional sizes more than contention costs the whole core.
    best = max(measurements, key=lambda m: m.max_load / m.cpu)
    assert best.cpu == 1.0 and sizing.cpu_per_pod == 1.0
    assert sizing.pods * sizing.capacity_per_pod * 0.8 >= 1000
    # A size whose search hit a saturated generator is a lower bound: shown, not fitted.
    measurements[2] = _measured(1.0, stopped_by="invalid")
    plan = _assemble(settings, measurements)
    assert plan.model.fitted_cpus == (0.25, 0.5)
    # Two sizes leave none to hold out: the check is a load step of the larger one.
    assert plan.model.holdout == "step" and plan.model.holdout_cpu == 0.5


def test_one_size_is_checked_on_a_load_step_left_out():
    settings = PlanSettings(
        sla=parse_sla("p95<1s"),
        kind="users",
        target=120,
        out_dir="unused",
        pods=(PodSpec(1.0),),
        url="http://x",
    )

    def step(load, p95, meets=True):
        return {
            "load": load,
            "rps": load / 1.1,
            "latency_ms": p95,
            "mean_ms": p95 / 2,
            "meets": meets,
            "valid": True,
        }

    steps = [
        step(1024, 5.0),
        step(4096, 200.0),
        step(5120, 520.0),
        step(5632, 800.0),
        step(6144, 1400.0, meets=False),
    ]
    measurement = {
        "cpu": 1.0,
        "workers": 1,
        "max_load": 5632,
        "max_rps": 5632 / 1.1,
        "p95_ms_at_max": 800.0,
        "mean_ms_at_max": 400.0,
        "stopped_by": "converged",
        "steps": steps,
    }
    model = _assemble(settings, [Measurement.model_validate(measurement)]).model
    # All steps: 1 s is crossed a third of the way from 5,632 (800 ms) to 6,144 (1,400 ms).
    assert model.holdout_measured_load == pytest.approx(5632 + 512 / 3)
    # Without 5,632: from 5,120 (520 ms) to 6,144, 480/880 of the way.
    assert model.holdout_step_load == 5632
    assert model.holdout_predicted_load == pytest.approx(5120 + 1024 * 480 / 880)
    assert model.holdout_error == pytest.approx(
        abs(5120 + 1024 * 480 / 880 - (5632 + 512 / 3)) / (5632 + 512 / 3)
    )
    assert model.fitted_cpus == (1.0,)


def test_a_quota_is_not_a_slower_core():
    # Measured per core: 0.25 and 0.5 CPU serve less than a quarter and a half of a
    # whole core, by the same CPU time lost to each throttled period.
    cpus, rps = [0.25, 0.5, 1.0], [42.0, 92.0, 200.0]  # 200 x (c - 0.04)
    fit = fit_throughput(cpus, rps, period_ms=100.0)
    assert fit.lost_ms == pytest.approx(4.0, rel=1e-6)
    for cpu, measured in zip(cpus, rps, strict=True):
        assert fit.throughput(cpu) == pytest.approx(measured, rel=1e-6)
    # Fitted on 0.25 and 1 CPU alone, the middle size is predicted; a slower-core
    # (linear) model would say 100 requests/s, 8.7 % high.
    assert holdout_error(cpus, rps, held_out=1) == pytest.approx(0.0, abs=1e-9)
    # A longer period loses the same time in fewer periods.
    assert fit_throughput(cpus, rps, period_ms=200.0).lost_ms == pytest.approx(8.0)
    # Without a whole core: λ and the loss from the fractional sizes alone.
    fractional = fit_throughput([0.25, 0.5], [42.0, 92.0])
    assert fractional.usl.lam == pytest.approx(200.0) and fractional.lost_ms == pytest.approx(4.0)
    # Plans written before the quota term read as the USL alone.
    old = QuotaThroughput.from_dict({"lambda": 200.0, "sigma": 0.0, "kappa": 0.0})
    assert old.throughput(0.5) == pytest.approx(100.0)
    assert QuotaThroughput.from_dict(fit.to_dict()) == fit


def test_beyond_the_sizes_measured_no_more_per_core_than_the_largest():
    sizes = [
        SizeMeasurement(
            cpu=c,
            workers=1,
            max_load=r * 1.5,
            max_rps=r,
            percentile_ms=1000.0,
            mean_ms=500.0,
            lightest_ms=5.0,
        )
        for c, r in ((0.5, 90.0), (1.0, 250.0))
    ]
    model = fit_capacity(sizes, **FIT_OPTIONS)
    assert model.max_rps(4.0) == pytest.approx(4 * model.max_rps(1.0))
    assert math.isinf(UslFit(250.0, -0.5, 0.0).throughput(4.0))


# --- sizing's inputs from measurement: request counts, CPU, memory -------------------


@pytest.mark.parametrize(
    ("quantile", "needed"), [(0.5, 10), (0.9, 50), (0.95, 100), (0.99, 500), (0.999, 5000), (0.9999, 5000)]
)
def test_a_percentile_needs_five_requests_beyond_it(quantile, needed):
    assert min_requests(quantile) == needed


def test_a_light_step_is_longer_from_the_start_and_never_beyond_the_longest():
    # 2 users thinking 50 ms send at most 40 requests/s: 100 requests take 2.5 s, 3.125 with margin.
    assert step_duration(2.0, 100, 40.0, 8.0) == 4.0
    assert step_duration(2.0, 100, 400.0, 8.0) == 2.0  # enough in the base step
    assert step_duration(2.0, 100, 1.0, 8.0) == 8.0  # capped: the step is flagged instead
    assert step_duration(2.0, 100, None, 8.0) == 2.0  # no think time: no bound known
    # Before a step: the nearest earlier step's throughput per user, at most users / think.
    assert expected_rate(8, [(4, 60.0), (16, 100.0)], most=400.0) == pytest.approx(120.0)
    assert expected_rate(8, [], most=400.0) == 400.0
    assert expected_rate(8, [(4, 60.0)], most=100.0) == 100.0


def _fake_loadtests(monkeypatch, rate_of, latency_ms=50.0, fail_in=None):
    """run_loadtest replaced: ``rate_of(load)`` requests/s, steady, 0.3 core of server CPU;
    an error for the steps of the size ``fail_in`` (a steps/ folder name)."""
    runs = []

    def run_loadtest(settings):
        load = settings.shape.stages[0].start_value
        duration = settings.shape.duration_s
        runs.append((load, duration))
        if fail_in and fail_in in settings.out_dir:
            raise ConfigurationError("the model server went away")
        rate = rate_of(load)
        rows = [
            {
                "users": load,
                "target_rps": None,
                "rps": rate,
                "server_cpu": 0.3,
                "server_rss_mb": 200.0 + second,
            }
            for second in range(int(duration))
        ]
        summary = {
            "requests": int(rate * duration),
            "rps": rate,
            "duration_s": duration,
            "latency_ms": {"p95": latency_ms, "mean": latency_ms / 2, "p50": latency_ms / 3},
            "error_rate": 0.0,
            "failures": 0,
            "sla": {"expr": "p95<1s", "met": True},
            "valid": True,
            "problems": [],
        }
        return type("Result", (), {"summary": LoadTestSummary.model_validate(summary), "rows": rows})()

    monkeypatch.setattr(planner, "run_loadtest", run_loadtest)
    return runs


def _settings(tmp_path, **changes) -> PlanSettings:
    options = dict(
        sla=parse_sla("p95<1s"),
        kind="users",
        target=100,
        out_dir=str(tmp_path),
        pods=(PodSpec(0.5),),
        url="http://x",
        think_time_s=0.05,
        step_s=2.0,
        quick=True,
    )
    return PlanSettings(**{**options, **changes})


def test_a_step_with_too_few_requests_is_measured_again_longer_then_flagged(tmp_path, monkeypatch):
    # 10 users thinking 50 ms could send 200 requests/s: a 2 s step, before it runs.
    # 30 requests/s: 60 in the 2 s step, fewer than a p95's 100; measured again for 5 s.
    runs = _fake_loadtests(monkeypatch, lambda load: 30.0)
    log: list[PlanStep] = []
    step = planner._measure_fn(_settings(tmp_path), "http://x", None, log, lambda _: None, "s", 0.5)(10)
    assert runs == [(10, 2.0), (10, 5.0)] and step.meets
    assert log[0].requests == 150 and log[0].enough_requests
    assert log[0].server_cpu_share == pytest.approx(0.6)  # 0.3 core of a 500m pod
    assert log[0].server_rss_mb_peak == 204.0
    # 5 requests/s: even the longest step (4 x 2 s) holds 40; kept, flagged, not re-run again.
    runs = _fake_loadtests(monkeypatch, lambda load: 5.0)
    log = []
    planner._measure_fn(_settings(tmp_path), "http://x", None, log, lambda _: None, "s", None)(10)
    assert runs == [(10, 2.0), (10, 8.0)]
    assert log[0].enough_requests is False and log[0].min_requests == 100
    assert log[0].server_cpu_share is None  # --url: the server's CPU is not a pod's


def test_what_was_measured_is_kept_when_a_later_size_fails(tmp_path, monkeypatch):
    class FakePod:
        def __init__(self, model_uri, spec, env=None):
            self.url = "http://x"

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(planner, "Pod", FakePod)
    monkeypatch.setattr(planner, "quota_supported", lambda: True)
    monkeypatch.setattr("os.cpu_count", lambda: 4)

    runs = _fake_loadtests(monkeypatch, lambda load: 40.0 * load, fail_in="cpu1-w1")
    settings = _settings(
        tmp_path,
        url=None,
        model_uri="models:/x/1",
        ceiling=16,
        pods=(PodSpec(0.5), PodSpec(1.0)),
        start_load=8,
    )

    with pytest.raises(ConfigurationError, match="went away"):
        planner.run_plan(settings, say=lambda _: None)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [m["cpu"] for m in plan["measurements"]] == [0.5]
    assert plan["sizing"] is None and plan["incomplete"]
    assert "after 1 of 2 sizes: the model server went away" in plan["sizing_error"]
    assert planner.read_plan(str(tmp_path / "plan.json")).incomplete  # and it reads back
    assert [load for load, _ in runs] == [8, 16, 8]  # the first size's search, then the failure


def test_the_hpa_target_is_the_cpu_the_pod_shows_at_its_sized_load():
    # Capacity 100 users; sized at 80. CPU share 0.3 at 40 users, 0.7 at 120: 0.5 at 80.
    points = [(40, 0.3), (120, 0.7)]
    assert cpu_share_at(points, 80) == pytest.approx(0.5)
    assert cpu_share_at(points, 20) == pytest.approx(0.15)  # through (0, 0)
    assert cpu_share_at(points, 500) == pytest.approx(0.7)  # saturated
    assert hpa_cpu_target(points, 80)[0] == 50
    assert hpa_cpu_target([(10, 0.95)], 80)[0] == 80  # capped at the headroom
    assert hpa_cpu_target([(100, 0.1)], 80)[0] == 30  # floored
    target, reason = hpa_cpu_target([], 80)
    assert target == 80 and "not measured" in reason
    sized = size(
        target=400,
        target_kind="users",
        capacity_per_pod=100,
        cpu_per_pod=1,
        workers_per_pod=1,
        sla_text="p95 < 1 s",
        cpu_by_load=points,
    )
    assert sized.hpa_target_cpu_utilization == 50 and sized.to_dict()["hpa"]["target_cpu_utilization"] == 50


def test_pod_memory_is_the_measured_peak_with_half_again_or_a_per_worker_default():
    assert pod_memory_mib(280, 1)[0] == 448  # 420 rounded up to 64 Mi
    assert pod_memory_mib(560, 2)[0] == 896
    assert pod_memory_mib(100, 1)[0] == 256  # the floor
    assert pod_memory_mib(None, 1)[0] == 556 and pod_memory_mib(None, 2)[0] == 856
    sized = size(
        target=10,
        target_kind="users",
        capacity_per_pod=5,
        cpu_per_pod=1,
        workers_per_pod=2,
        sla_text="p95 < 1 s",
        peak_rss_mb=560,
    )
    # The keys `mlscale k8s render` and `mlscale simulate` read.
    data = sized.to_dict()
    assert data["memory_per_pod_mib"] == 896 and data["workers_per_pod"] == 2
    assert set(data["hpa"]) == {"min_replicas", "max_replicas", "target_cpu_utilization"}


def test_a_plan_sizes_from_the_measured_cpu_and_memory_and_old_plans_still_size():
    settings = PlanSettings(
        sla=parse_sla("p95<1s"),
        kind="users",
        target=1000,
        out_dir="unused",
        pods=(PodSpec(0.25),),
        url="http://x",
    )
    old = _measured(0.25)
    plan = _assemble(settings, [old])
    assert plan.sizing is not None
    assert plan.sizing.hpa.target_cpu_utilization == 80
    assert plan.sizing.memory_per_pod_mib == 556  # unmeasured: 256 + 300 per worker
    capacity = old.max_load
    new = old.model_copy(
        update={
            "peak_rss_mb": 300.0,
            "steps": tuple(
                s.model_copy(update={"server_cpu_share": 0.6 * s.load / capacity}) for s in old.steps
            ),
        }
    )
    sizing = _assemble(settings, [new]).sizing
    assert sizing is not None
    assert sizing.hpa.target_cpu_utilization == 48  # 0.6 x 80 % of the capacity
    assert sizing.memory_per_pod_mib == 512
    # A pod that fits no node once measured: no sizing, and the reason, not an exception.
    plan = _assemble(dataclasses.replace(settings, node_type="e2-standard-2", daemonset_cpu_m=1800), [new])
    assert plan.sizing is None and "does not fit on e2-standard-2" in (plan.sizing_error or "")


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    target=st.floats(0.5, 1e6),
    capacity=st.floats(0.1, 1e4),
    cpu=st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 8.0]),
    workers=st.integers(1, 8),
    node_type=st.sampled_from(sorted(NODE_TYPES)),
    daemonset_cpu_m=st.integers(0, 1500),
    peak_rss_mb=st.one_of(st.none(), st.floats(10, 20_000)),
    cpu_share=st.one_of(st.none(), st.floats(0, 1.2)),
)
def test_sizing_is_self_consistent(
    target, capacity, cpu, workers, node_type, daemonset_cpu_m, peak_rss_mb, cpu_share
):
    cpu_by_load = [] if cpu_share is None else [(capacity, cpu_share)]
    try:
        sized = size(
            target=target,
            target_kind="users",
            capacity_per_pod=capacity,
            cpu_per_pod=cpu,
            workers_per_pod=workers,
            sla_text="p95 < 1 s",
            node_type=node_type,
            daemonset_cpu_m=daemonset_cpu_m,
            peak_rss_mb=peak_rss_mb,
            cpu_by_load=cpu_by_load,
        )
    except ConfigurationError as exc:
        assert "does not fit" in str(exc)
        return
    vcpus, memory_gib = NODE_TYPES[node_type]
    free_cpu_m = allocatable_cpu_m(vcpus) - daemonset_cpu_m
    free_memory = allocatable_memory_mib(memory_gib) - 200
    # The pods fit on the nodes after reservations and DaemonSets, CPU and memory.
    assert sized.nodes * free_cpu_m >= sized.pods * cpu * 1000 - 1e-6
    assert sized.nodes * free_memory >= sized.pods * sized.memory_per_pod_mib
    assert sized.pods_per_node * cpu * 1000 <= free_cpu_m + 1e-6
    assert sized.pods_per_node * sized.memory_per_pod_mib <= free_memory
    # The pods cover the target at 80 % of their capacity; no more than one pod too many.
    assert sized.pods * capacity * 0.8 >= target * (1 - 1e-12)
    assert sized.pods == 1 or (sized.pods - 1) * capacity * 0.8 < target * (1 + 1e-12)
    assert sized.cores == pytest.approx(sized.pods * cpu)
    assert 1 <= sized.hpa_min_replicas <= sized.pods <= sized.hpa_max_replicas
    assert 30 <= sized.hpa_target_cpu_utilization <= 80
    if cpu_share is None:
        assert sized.hpa_target_cpu_utilization == 80
    if peak_rss_mb is None:
        assert sized.memory_per_pod_mib == 256 + 300 * workers
    else:
        assert sized.memory_per_pod_mib % 64 == 0
        assert sized.memory_per_pod_mib >= max(256, peak_rss_mb * 1.5)


# --- a pod never outlives a failed start ---------------------------------------------


class _StandInServer:
    """A real, cheap child process in place of `mlscale serve`; ``ready`` as given."""

    def __init__(self, args, *, prefix=(), env=None, ready=None):
        self.process = subprocess.Popen(["sleep", "60"], start_new_session=True)
        self.pid = self.process.pid
        self.lines: list[str] = []
        self._ready = ready

    def ready(self, timeout_s):
        return self._ready()

    def stop(self):
        self.process.kill()
        return self.process.wait()


def _stand_in(monkeypatch, ready):
    started = []

    def server(args, **options):
        started.append(_StandInServer(args, ready=ready, **options))
        return started[-1]

    monkeypatch.setattr(pods_module, "ServeProcess", server)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    monkeypatch.setattr(pods_module, "quota_supported", lambda: True)
    return started


@pytest.mark.slow
def test_ctrl_c_while_a_pod_starts_stops_its_server(monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    started = _stand_in(monkeypatch, interrupted)
    with pytest.raises(KeyboardInterrupt), pods_module.Pod("models:/x/1", PodSpec(1.0)):
        pytest.fail("the pod never became ready")
    assert started[0].process.poll() is not None  # stopped, not left running


@pytest.mark.slow
def test_a_failed_cpu_limit_stops_the_server_it_started(monkeypatch):
    started = _stand_in(monkeypatch, lambda: True)

    def unwritable(self, cpu):
        raise PermissionError("cpu.cfs_quota_us: read-only file system")

    monkeypatch.setattr(pods_module.Pod, "_limit", unwritable)
    with pytest.raises(PermissionError):
        pods_module.Pod("models:/x/1", PodSpec(0.5))
    assert started[0].process.poll() is not None


def test_old_and_new_plans_load_in_the_simulator():
    from mlscale.simulate.calibration import pod_from_plan

    settings = PlanSettings(
        sla=parse_sla("p95<1s"),
        kind="users",
        target=1000,
        out_dir="unused",
        pods=(PodSpec(0.25),),
        url="http://x",
    )
    # An old plan: no schema_version, no sizing_error, no reasons in its sizing.
    old = _assemble(settings, [_measured(0.25)]).to_json_dict()
    for key in ("sizing_error", "schema_version"):
        old.pop(key)
    for key in ("hpa_target_reason", "memory_reason"):
        old["sizing"].pop(key)
    measured = _measured(0.25, peak_rss_mb=300.0, few_requests_at=[4])
    steps = tuple(
        s.model_copy(
            update={
                "server_cpu_share": 0.5,
                "server_rss_mb_peak": 300.0,
                "enough_requests": True,
                "min_requests": 100,
            }
        )
        for s in measured.steps
    )
    new = _assemble(settings, [measured.model_copy(update={"steps": steps})])
    for plan, memory in (
        (parse_plan(json.loads(json.dumps(old))), 556),
        (parse_plan(json.loads(new.to_json())), 512),
    ):
        pod = pod_from_plan(plan)
        assert pod.cpu_cores == 0.25 and pod.memory_mib == memory
