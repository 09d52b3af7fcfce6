"""The pod's queueing model: exact on known cases, calibrated on the reference, and
fitted to a plan's steps."""

from __future__ import annotations

import math

import pytest

from mlscale.capacity.models import mmc_response_quantile
from mlscale.errors import ConfigurationError
from mlscale.schemas.plan import PlanStep, parse_plan
from mlscale.simulate.calibration import (
    check_against_plan,
    plan_think_time,
    pod_from_plan,
    pod_latency,
    reference_pod,
    saturation_throughput,
)
from mlscale.simulate.presets import build_preset
from mlscale.simulate.queue import RHO_MAX, PodModel, capacity_at_sla, closed_loop, open_loop
from mlscale.simulate.tables import ClosedTable, OpenTable


def test_one_user_sees_an_idle_server():
    model = PodModel(servers=1, service_rate=10.0)
    state = closed_loop(model, 1, think_s=1.0, quantiles=(0.5, 0.95))
    assert math.isclose(state.throughput, 1 / 1.1)  # one request per think + service
    assert math.isclose(state.quantiles_ms[1], 1000 * math.log(20) / 10, rel_tol=1e-6)  # Exp(μ)
    assert math.isclose(state.mean_ms, 100.0, rel_tol=1e-9)


def test_machine_repairman_two_users_one_server():
    # N=2, c=1, Z=1, μ=1: p0 ∝ 1, p1 ∝ 2, p2 ∝ 2 → X = μ (1 - p0) = 4/5.
    state = closed_loop(PodModel(servers=1, service_rate=1.0), 2, think_s=1.0)
    assert math.isclose(state.throughput, 0.8)
    assert math.isclose(state.mean_ms, 1000 * (2 / 0.8 - 1))


def test_many_users_saturate_the_pod_and_queue():
    model = PodModel(servers=4, service_rate=2.5)
    state = closed_loop(model, 80, think_s=1.0)
    assert math.isclose(state.throughput, 10.0, rel_tol=1e-6)  # c μ
    assert math.isclose(state.mean_ms, 1000 * (80 / 10 - 1), rel_tol=1e-6)  # R = N/X - Z
    assert state.busy > 0.999


def test_open_loop_is_erlang_c():
    model = PodModel(servers=2, service_rate=5.0, delay_ms=3.0)
    state = open_loop(model, 6.0, quantiles=(0.95,))
    assert math.isclose(state.quantiles_ms[0], 1000 * mmc_response_quantile(0.95, 6.0, 5.0, 2) + 3.0)
    assert math.isclose(state.busy, 0.6)
    assert math.isinf(open_loop(model, 10.0).mean_ms)


def test_the_reference_pod_holds_ten_users_per_core_at_p95_one_second():
    model = reference_pod()
    p50, p95 = pod_latency(None, 10)
    assert abs(p95 - 1000) < 1
    assert p50 < p95
    assert pod_latency(None, 12)[1] > 1100 and pod_latency(None, 8)[1] < 900
    assert math.isclose(capacity_at_sla(model, "users", 1.0, 0.95, 1000.0), 10.0, rel_tol=1e-3)
    assert reference_pod(cores=2).servers == 2


def test_tables_interpolate_the_exact_model():
    model = reference_pod()
    closed = ClosedTable(model, 1.0, (0.5, 0.95), max_users=500)
    for users in (3, 10, 10.5, 77, 250.0):
        exact = closed_loop(model, users, 1.0)
        row = closed.at(users / 1)
        assert math.isclose(row[0], exact.throughput, rel_tol=0.01)
        assert math.isclose(row[5], exact.quantiles_ms[1], rel_tol=0.01)
    opened = OpenTable(model, (0.5, 0.95))
    for rho in (0.1, 0.5, 0.9, 0.94):
        exact = open_loop(model, rho * model.capacity_rps)
        assert math.isclose(opened.at(rho)[2], exact.quantiles_ms[1], rel_tol=0.01)
    held = open_loop(model, RHO_MAX * model.capacity_rps)  # held at RHO_MAX up to capacity
    assert math.isclose(opened.at(0.99)[2], held.quantiles_ms[1], rel_tol=1e-9)


def sizing_block(cpu: float, workers: int, capacity: float, **more) -> dict:
    """A plan's sizing block as `mlscale plan` writes it, for ``capacity`` users per pod."""
    return {
        "target": 100.0,
        "target_kind": "users",
        "capacity_per_pod": capacity,
        "cpu_per_pod": cpu,
        "workers_per_pod": workers,
        "pods": 1,
        "cores": cpu,
        "node_type": "e2-standard-4",
        "pods_per_node": 3,
        "nodes": 1,
        "hpa_min_replicas": 1,
        "hpa_max_replicas": 2,
        "hpa_target_cpu_utilization": 80,
        "sentence": "",
        "hpa": {"min_replicas": 1, "max_replicas": 2, "target_cpu_utilization": 80},
        **more,
    }


def synthetic_plan(true: PodModel, think: float = 0.1, loads=(4, 8, 16, 32, 64, 128, 256, 384, 512)) -> dict:
    steps = []
    for users in loads:
        state = closed_loop(true, users, think, (0.95,))
        steps.append(
            {
                "load": users,
                "rps": state.throughput,
                "latency_ms": state.quantiles_ms[0],
                "mean_ms": state.mean_ms,
                "valid": True,
                "meets": state.quantiles_ms[0] < 100,
            }
        )
    return {
        "sla": {"expr": "p95<100ms", "percentile": "p95", "limit_ms": 100.0},
        "load_model": {"kind": "users", "think_time_s": think},
        "measurements": [{"cpu": 1.0, "workers": 1, "max_load": 384, "steps": steps}],
        "model": {},
        "sizing": sizing_block(1.0, 1, 384),
    }


def test_a_plan_fit_reproduces_its_steps():
    plan = synthetic_plan(PodModel(servers=4, service_rate=500.0, delay_ms=2.0))
    model = pod_from_plan(parse_plan(plan))
    assert model.cpu_cores == 1.0
    rows = check_against_plan(parse_plan(plan), model)
    assert len(rows) == 9
    assert max(abs(r.error) for r in rows) < 0.2  # each step's p95 within 20 %
    # The one-pod helper is what a loadtest of one pod at a constant load measures.
    p50, p95 = pod_latency(parse_plan(plan), 384)
    assert abs(p95 / plan["measurements"][0]["steps"][7]["latency_ms"] - 1) < 0.2
    assert p50 < p95


def test_between_steps_the_calibrated_pod_predicts_what_it_did_not_see():
    true = PodModel(servers=4, service_rate=500.0, delay_ms=2.0)
    plan = synthetic_plan(true, loads=(8, 32, 128, 256, 512, 640))
    for users in (20, 80, 200):  # loads the plan never measured
        exact = closed_loop(true, users, 0.1, (0.95,)).quantiles_ms[0]
        assert abs(pod_latency(parse_plan(plan), users)[1] / exact - 1) < 0.15


def test_calibration_passes_through_each_step_and_interpolates_between():
    plan = synthetic_plan(PodModel(servers=2, service_rate=300.0))
    steps = plan["measurements"][0]["steps"]
    for step, factor in zip(steps, (1.5, 1.5, 2.0, 2.0, 3.0, 3.0, 1.2, 1.2, 1.2), strict=False):
        step["latency_ms"] *= factor  # a server whose tail is heavier than the queue's
    model = pod_from_plan(parse_plan(plan))
    assert max(abs(r.error) for r in check_against_plan(parse_plan(plan), model)) < 1e-9
    ((quantile, points),) = model.calibration
    assert quantile == 0.95 and [load for load, _ in points] == [4, 8, 16, 32, 64, 128, 256, 384, 512]
    between = model.scale(0.95, 24)  # halfway between 16 and 32, geometric in the factor
    assert math.isclose(between, math.sqrt(model.scale(0.95, 16) * model.scale(0.95, 32)))
    assert model.scale(0.95, 1) == model.scale(0.95, 4) and model.scale(0.95, 9999) == model.scale(0.95, 512)
    assert "calibrated" in model.source


def test_a_measured_median_calibrates_the_p50():
    plan = synthetic_plan(PodModel(servers=4, service_rate=500.0, delay_ms=2.0))
    for step in plan["measurements"][0]["steps"]:
        step["p50_ms"] = 3.0 + step["load"] / 100
    model = pod_from_plan(parse_plan(plan))
    assert sorted(q for q, _ in model.calibration) == [0.5, 0.95]
    assert math.isclose(pod_latency(parse_plan(plan), 64)[0], 3.64, rel_tol=1e-6)


def test_the_plateau_of_a_saturated_search_is_the_capacity():
    plan = synthetic_plan(PodModel(servers=4, service_rate=500.0, delay_ms=2.0))
    steps = [PlanStep(**step) for step in plan["measurements"][0]["steps"]]
    assert math.isclose(saturation_throughput(steps), 2000.0, rel_tol=0.01)
    assert saturation_throughput(steps[:5]) is None  # still climbing: no plateau seen
    assert math.isclose(pod_from_plan(parse_plan(plan)).capacity_rps, saturation_throughput(steps))


def test_a_noisy_plan_still_drives_the_presets():
    # Measured on a busy CI machine: throughput fell past the knee, and the p95 at the
    # lightest step is already a third of the SLA. The fit once left a pod that
    # missed the SLA with no load at all.
    measured = [
        (32, 32.0, 386.6, 60.0),
        (64, 63.0, 768.5, 190.0),
        (128, 54.0, 2639.9, 1370.0),
        (96, 56.0, 1457.2, 710.0),
        (80, 72.0, 960.0, 300.0),
    ]
    steps = [
        {"load": load, "rps": rps, "latency_ms": p95, "mean_ms": mean, "valid": True, "meets": p95 < 1000}
        for load, rps, p95, mean in measured
    ]
    plan = {
        "sla": {"expr": "p95<1s", "percentile": "p95", "limit_ms": 1000.0},
        "load_model": {"kind": "users", "think_time_s": 1.0},
        "measurements": [{"cpu": 0.25, "workers": 1, "max_load": 80, "steps": steps}],
        "model": {},
        "sizing": sizing_block(0.25, 1, 80),
    }
    model = pod_from_plan(parse_plan(plan))
    capacity = capacity_at_sla(model, "users", plan_think_time(parse_plan(plan)), 0.95, 1000.0)
    assert 64 < capacity < 96  # between the last step that met the SLA and the first that missed
    experiment = build_preset("reference-hpa", parse_plan(plan))
    assert experiment.model is not None and experiment.settings.hpa is not None


def test_the_plan_latency_block_wins():
    plan = synthetic_plan(PodModel(servers=1, service_rate=100.0))
    plan["model"]["latency"] = {"servers": 3, "service_rate_per_s": 40.0, "delay_ms": 1.5}
    model = pod_from_plan(parse_plan(plan))
    assert (model.servers, model.service_rate, model.delay_ms) == (3, 40.0, 1.5)


def test_a_plan_measured_with_another_think_time_is_read_with_it():
    plan = synthetic_plan(PodModel(servers=2, service_rate=50.0), think=0.05)
    assert plan_think_time(parse_plan(plan)) == 0.05
    plan["load_model"]["think_time_s"] = 1.0  # what the steps cannot have been measured with
    assert math.isclose(plan_think_time(parse_plan(plan)), 0.05, rel_tol=0.3)


def _changed(**top) -> dict:
    """The synthetic plan with some of its blocks replaced."""
    return {**synthetic_plan(PodModel(servers=1, service_rate=100.0)), **top}


@pytest.mark.parametrize(
    "plan, message",
    [
        ([], "is not a plan: expected a JSON object"),
        (_changed(sizing=None), "no sizing"),
        # Types are the schema's to check: its message names the field.
        (_changed(sizing=sizing_block("x", 1, 384)), "sizing.cpu_per_pod: Input should be a valid number"),
        (_changed(model={"latency": {"servers": "x", "service_rate_per_s": 1.0}}), "model.latency.servers"),
        (_changed(measurements=[]), "no measurement"),
        (
            _changed(
                measurements=[
                    {
                        "cpu": 1.0,
                        "workers": 1,
                        "max_load": 4,
                        "steps": [{"load": 4, "rps": 0, "latency_ms": None, "meets": False}],
                    }
                ]
            ),
            "no valid step",
        ),
    ],
)
def test_bad_plans_say_what_is_wrong(plan, message):
    with pytest.raises(ConfigurationError, match=message):
        pod_from_plan(parse_plan(plan))
