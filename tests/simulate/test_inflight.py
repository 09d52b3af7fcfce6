"""The in-flight target: one function, read off the pod's queue at the SLA."""

from __future__ import annotations

import math

from mlscale.schemas.plan import parse_plan
from mlscale.simulate.calibration import plan_think_time, pod_from_plan
from mlscale.simulate.compare import default_candidates
from mlscale.simulate.inflight import inflight_target, plan_inflight_target, plan_sla
from mlscale.simulate.queue import PodModel, capacity_at_sla, closed_loop, open_loop
from mlscale.simulate.settings import INFLIGHT, HpaSettings, SimSettings, Sla
from tests.simulate.test_service import synthetic_plan

POD = PodModel(servers=4, service_rate=50.0, delay_ms=5.0)


def test_the_target_is_the_queue_at_a_share_of_the_capacity_at_the_sla():
    sla = Sla(percentile="p95", limit_ms=200.0)
    for kind, think in (("users", 0.5), ("rps", 1.0)):
        capacity = capacity_at_sla(POD, kind, think, 0.95, 200.0)
        for share in (0.5, 0.8):
            load = share * capacity
            state = closed_loop(POD, load, think) if kind == "users" else open_loop(POD, load)
            assert math.isclose(inflight_target(POD, kind, think, sla, share), round(state.in_flight, 2))
        # More load held, more requests in flight.
        assert inflight_target(POD, kind, think, sla, 0.5) < inflight_target(POD, kind, think, sla, 0.8)


def test_a_pod_that_never_meets_the_sla_still_gets_a_target_a_metric_can_hold():
    assert inflight_target(POD, "rps", 1.0, Sla(limit_ms=1.0)) == 0.01


def test_the_plans_target_is_its_fitted_pod_at_its_sla_and_the_compare_candidates():
    plan = parse_plan(synthetic_plan(PodModel(servers=4, service_rate=500.0, delay_ms=2.0)))
    model, think = pod_from_plan(plan), plan_think_time(plan)
    target = plan_inflight_target(plan)
    assert target == inflight_target(model, "users", think, plan_sla(plan))
    assert plan_sla(plan) == Sla(percentile="p95", limit_ms=100.0)
    # --compare's in-flight candidate, on the plan's settings, runs the same number.
    settings = SimSettings(think_time_s=think, sla=plan_sla(plan))
    (candidate,) = [
        c for c in default_candidates(HpaSettings(), model, "users", settings) if c.name == "inflight"
    ]
    assert (candidate.hpa.metric, candidate.hpa.target) == (INFLIGHT, target)
