"""The in-flight target: how many requests a pod holds when it is as busy as it should be.

A concurrency autoscaler (KEDA's prometheus trigger on the server's
``mlscale_in_flight_requests`` gauge, or an HPA on that gauge through
prometheus-adapter) adds pods when the requests in flight per pod exceed a
target. The target is read off the pod's queue: the in-flight count (queued or
served) at ``share`` of the load the pod carries at the SLA, the same headroom
the CPU policy's 80 % gives.

One function computes it, and everything that needs the number calls it: the
simulator's ``--policy inflight`` and ``--compare`` candidates, and
``mlscale k8s render --policy inflight``, which writes it as the KEDA
threshold or the HPA's AverageValue. So what is simulated is what is deployed.
"""

from __future__ import annotations

from mlscale.loadtest.shapes import USERS
from mlscale.schemas.plan import Plan
from mlscale.simulate.calibration import plan_kind, plan_think_time, pod_from_plan
from mlscale.simulate.queue import PodModel, capacity_at_sla, closed_loop, open_loop
from mlscale.simulate.settings import Sla

# The share of the SLA capacity a pod is held at: where the CPU policy at 80 %
# keeps it, so the two policies are compared at the same headroom.
DEFAULT_SHARE = 0.8
# Below this the target rounds to nothing a metric could hold: 0.01 request.
_SMALLEST = 0.01


def inflight_target(
    model: PodModel, kind: str, think_s: float, sla: Sla, share: float = DEFAULT_SHARE
) -> float:
    """In-flight requests per pod at ``share`` of the pod's capacity at ``sla``.

    ``kind`` is ``"users"`` (closed loop, ``think_s`` seconds between a user's
    requests) or ``"rps"`` (open loop). Rounded to hundredths: a Prometheus
    threshold, and a number a person reads in a manifest.
    """
    capacity = capacity_at_sla(model, kind, think_s, sla.quantile, sla.limit_ms)
    if kind == USERS:
        state = closed_loop(model, share * capacity, think_s)
    else:
        state = open_loop(model, share * capacity)
    return max(round(state.in_flight, 2), _SMALLEST)


def plan_sla(plan: Plan) -> Sla:
    """The SLA a plan was sized for, as the simulator counts it (p95 < 1 s when unsaid)."""
    return Sla(percentile=plan.sla.percentile or "p95", limit_ms=plan.sla.limit_ms or 1000.0)


def plan_inflight_target(plan: Plan, share: float = DEFAULT_SHARE) -> float:
    """The in-flight target of the pod a plan measured, at the plan's SLA.

    The pod is the plan's fitted queue (``calibration.pod_from_plan``), its load
    kind and think time the plan's: what ``mlscale simulate --plan`` runs.
    """
    kind = plan_kind(plan)
    think = plan_think_time(plan) if kind == USERS else 1.0
    return inflight_target(pod_from_plan(plan), kind, think, plan_sla(plan), share)
