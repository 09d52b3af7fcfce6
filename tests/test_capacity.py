"""Capacity search, models and sizing on synthetic measurements with known answers."""

from __future__ import annotations

import math

import pytest

from mlscale.capacity.models import (
    erlang_c,
    fit_usl,
    holdout_error,
    max_arrival_rate,
    mmc_response_quantile,
)
from mlscale.capacity.search import Step, find_max_load
from mlscale.capacity.sizing import allocatable_cpu_m, allocatable_memory_mib, size
from mlscale.errors import ConfigurationError


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


def test_the_ceiling_and_invalid_steps_end_the_search():
    measure, _ = server_with_capacity(10_000)
    assert find_max_load(measure, start=10, ceiling=50).stopped_by == "ceiling"
    measure, _ = server_with_capacity(10_000, saturate_at=100)
    result = find_max_load(measure, start=10, ceiling=10_000)
    assert (result.stopped_by, result.max_load) == ("invalid", 80)


def test_a_server_that_never_meets_the_sla():
    def measure(load):
        return Step(load, 5000, 0.0, meets=False)

    result = find_max_load(measure, start=8, ceiling=100)
    assert result.max_load is None and result.stopped_by == "floor"


def test_usl_recovers_known_parameters_and_predicts_a_held_out_size():
    truth = dict(lam=100.0, sigma=0.05, kappa=0.002)
    cores = [1, 2, 3, 4, 6, 8]
    throughput = [truth["lam"] * n / (1 + truth["sigma"] * (n - 1) + truth["kappa"] * n * (n - 1))
                  for n in cores]  # fmt: skip
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
    plan = size(target=120, target_kind="users", capacity_per_pod=10, cpu_per_pod=1,
                workers_per_pod=1, sla_text="p95 < 1 s", node_type="e2-standard-4")  # fmt: skip
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
        size(target=10, target_kind="rps", capacity_per_pod=5, cpu_per_pod=2, workers_per_pod=2,
             sla_text="p95 < 1 s", node_type="e2-standard-2")  # fmt: skip


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
    ],
)
def test_a_step_is_stable_when_three_windows_agree(rates, expected):
    from mlscale.capacity.search import stable

    assert stable(rates) is expected
