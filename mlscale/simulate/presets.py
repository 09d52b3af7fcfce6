"""The reference scenario's experiments, replayed (see reference-scenario.md).

- ``reference-manual``: fixed pod counts in four phases of rising load on a pool
  resized by hand, the article's first experiment.
- ``reference-hpa``: ``kubectl autoscale --cpu-percent=80 --min=1 --max=12`` on
  three e2-standard-4 nodes; the cluster fills and pods stay Pending.
- ``reference-cluster-autoscaler``: the same with the pool at 3 to 5 nodes: nodes
  come about a minute after pods go Pending, and the pool is back at three
  nodes about 15 minutes after the load falls.

The article gives the commands, not the load curves; these profiles keep its
proportions. The cluster: 1-CPU pods (the reference's ``requests.cpu: 1000m``) on
e2-standard-4 nodes (3,920m allocatable, 100m of DaemonSets), with about a core of
kube-system Deployments on the first node (kube-dns, metrics-server and the
like; an assumption, since GKE does not publish them), so three nodes hold 8 pods
and the HPA's 12 need five nodes, as the reference found. The load: the HPA's
maximum times the pod's capacity at the SLA (12 × 10 users = 120 users, the
reference's sizing) at the peak, half of it before.

With a plan, the same experiment is run with the plan's pod: the HPA's maximum
is 1.5 times the pods three nodes hold (12 for the reference pod) and the load
is scaled to the pod's capacity, so the cluster fills the same way.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from mlscale.errors import ConfigurationError
from mlscale.loadtest.shapes import Shape, Stage
from mlscale.schemas.plan import Plan
from mlscale.schemas.simulation import PresetInfo, SimulationSummary
from mlscale.simulate.calibration import plan_kind, plan_think_time, pod_from_plan, reference_pod
from mlscale.simulate.cluster import NodeShape
from mlscale.simulate.engine import Run, simulate
from mlscale.simulate.queue import PodModel, capacity_at_sla, load_at_busy
from mlscale.simulate.results import summarize, write_outputs
from mlscale.simulate.settings import (
    HpaSettings,
    ManualScaling,
    NodePool,
    PodTemplate,
    SimSettings,
    Sla,
)

# About a core of kube-system Deployments on the first node: it holds 2 pods, not 3.
_SYSTEM_CPU_M = (950,)
PRESETS = {
    "reference-manual": "fixed pod counts (1, 4, 8, 14) in four phases of rising load; the pool "
    "resized by hand from 3 to 5 nodes for the last",
    "reference-hpa": "kubectl autoscale --cpu-percent=80 --min=1 --max=12 on 3 e2-standard-4 "
    "nodes: the cluster fills, pods stay Pending",
    "reference-cluster-autoscaler": "the same HPA with the pool at 3 to 5 nodes: nodes added a "
    "minute after pods go Pending, back to 3 about 15 minutes after the load falls",
}


@dataclass(frozen=True)
class Experiment:
    name: str
    settings: SimSettings
    shape: Shape
    model: PodModel


def _steps(kind: str, phases: list[tuple[float, float]]) -> Shape:
    stages, start = [], 0.0
    for seconds, value in phases:
        stages.append(Stage(start, start + seconds, value, value))
        start += seconds
    return Shape(kind, tuple(stages))


def _pods_on(nodes: int, pool: NodePool, pod: PodTemplate) -> int:
    """Pods that fit on the first ``nodes`` nodes, kube-system included."""
    shape = NodeShape.of(pool, pod)
    total = 0
    for index in range(nodes):
        system = pool.system_cpu_m[index] if index < len(pool.system_cpu_m) else 0
        free = shape.cpu_m - pool.daemonset_cpu_m - system
        total += min(shape.pods_fit, max(0, free // pod.cpu_request_m))
    return total


def build_preset(name: str, plan: Plan | None = None) -> Experiment:
    """The settings, load and pod of a preset; with ``plan``, the plan's pod."""
    if name not in PRESETS:
        raise ConfigurationError(f"Unknown preset {name!r}; known: {', '.join(PRESETS)}.")
    if plan is None:
        model = reference_pod()
        kind, think = "users", 1.0
    else:
        model = pod_from_plan(plan)
        kind, think = plan_kind(plan), plan_think_time(plan)
    sla = Sla(percentile="p95", limit_ms=1000.0)
    if plan is not None:
        sla = Sla(percentile=plan.sla.percentile or "p95", limit_ms=plan.sla.limit_ms or 1000.0)
    capacity = capacity_at_sla(model, kind, think, sla.quantile, sla.limit_ms)
    if capacity <= 0:
        raise ConfigurationError(
            f"The plan's pod misses the SLA ({sla.percentile} < {sla.limit_ms:g} ms) even with one user: no number "
            "of pods meets it. Check the plan's steps (`mlscale plan` again on a quiet machine) or its SLA."
        )
    pod = PodTemplate(
        cpu_request_m=max(1, round(model.cpu_cores * 1000)), memory_request_mib=round(model.memory_mib)
    )
    base_pool = NodePool(machine_type="e2-standard-4", min_nodes=3, max_nodes=3, system_cpu_m=_SYSTEM_CPU_M)
    on_three = _pods_on(3, base_pool, pod)
    on_five = _pods_on(5, base_pool, pod)
    max_pods = max(2, math.ceil(1.5 * on_three))  # the reference: 8 fit, --max=12
    peak = max_pods * capacity
    settings = SimSettings(think_time_s=think, pod=pod, sla=sla, initial_replicas=1, pool=base_pool)
    if name == "reference-manual":
        shape = _steps(kind, [(600, peak / 4), (600, peak / 2), (600, 3 * peak / 4), (900, peak)])
        replicas = ((0.0, 1), (600.0, max(2, on_three // 2)), (1200.0, on_three), (1800.0, on_five))
        settings = dataclasses.replace(
            settings, hpa=None, manual=ManualScaling(replicas=replicas, nodes=((1800.0, 5),))
        )
    else:
        # 15 minutes at half the peak, 30 at the peak, then 30 at what keeps one pod
        # half busy (the reference pod: 5 users), so the HPA can go back to 1.
        shape = _steps(kind, [(900, peak / 2), (1800, peak), (1800, load_at_busy(model, kind, think, 0.5))])
        hpa = HpaSettings(metric="cpu", target=80, min_replicas=1, max_replicas=max_pods)
        pool = base_pool if name == "reference-hpa" else dataclasses.replace(base_pool, max_nodes=5)
        settings = dataclasses.replace(settings, hpa=hpa, pool=pool)
    return Experiment(name, settings, shape, model)


def run_experiment(
    experiment: Experiment, out_dir: str | None = None, *, report: bool = True
) -> tuple[Run, SimulationSummary]:
    run = simulate(experiment.settings, experiment.shape, experiment.model, name=experiment.name)
    preset = PresetInfo(name=experiment.name, description=PRESETS.get(experiment.name, ""))
    summary = summarize(run).model_copy(update={"preset": preset})
    if out_dir:
        write_outputs(out_dir, run, summary, report=report)
    return run, summary


def run_preset(name: str, out_dir: str, plan: Plan | None = None) -> SimulationSummary:
    """Replay a preset, write timeseries.csv, summary.json and report.html to
    ``out_dir``, and return the summary (``scale_up_delay_s``: first node Ready
    after the first pod went Pending; ``scale_down_s``: nodes back at the minimum
    after the load fell)."""
    os.makedirs(out_dir, exist_ok=True)
    return run_experiment(build_preset(name, plan), out_dir)[1]
