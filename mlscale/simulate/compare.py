"""``--compare``: several autoscaling policies on one load profile, and the cheapest
that meets the SLA, with the values to put in its manifests.

The default candidates: the HPA ``kubectl autoscale`` makes at 80 % and at 60 %
CPU (no ``behavior``), an in-flight-requests target (the External AverageValue
HPA KEDA generates), and CPU 70 % with a tuned ``behavior`` (scale up by the
larger of 100 % or 4 pods every 15 s, scale down by at most 50 % a minute after a
two-minute window). "Meets the SLA" means missing it for at most
``allowed_violation`` of the run (1 % by default): a ramp that outruns any
autoscaler for a few seconds should not disqualify every policy.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from mlscale.loadtest.shapes import Shape
from mlscale.report.simulate import write_comparison_report
from mlscale.schemas.simulation import PolicyComparison, PolicyOutcome
from mlscale.simulate.engine import simulate
from mlscale.simulate.inflight import inflight_target
from mlscale.simulate.queue import PodModel
from mlscale.simulate.results import summarize, write_outputs
from mlscale.simulate.settings import (
    CPU,
    INFLIGHT,
    Behavior,
    HpaSettings,
    ScalingPolicy,
    ScalingRules,
    SimSettings,
)

TUNED_BEHAVIOR = Behavior(
    scale_up=ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15))),
    scale_down=ScalingRules(120, "Max", (ScalingPolicy("Percent", 50, 60),)),
)


@dataclass(frozen=True)
class Candidate:
    name: str
    hpa: HpaSettings
    description: str


def default_candidates(
    base: HpaSettings, model: PodModel, kind: str, settings: SimSettings
) -> list[Candidate]:
    def hpa(**changes: Any) -> HpaSettings:
        return dataclasses.replace(base, **changes)

    target = inflight_target(model, kind, settings.think_time_s, settings.sla)
    return [
        Candidate(
            "cpu-80",
            hpa(metric=CPU, target=80, behavior=None),
            "kubectl autoscale --cpu-percent=80 (no behavior)",
        ),
        Candidate(
            "cpu-60",
            hpa(metric=CPU, target=60, behavior=None),
            "kubectl autoscale --cpu-percent=60 (no behavior)",
        ),
        Candidate(
            "inflight",
            hpa(metric=INFLIGHT, target=target, behavior=None),
            f"{target:g} in-flight requests per pod (KEDA-style External AverageValue)",
        ),
        Candidate(
            "cpu-70-tuned",
            hpa(metric=CPU, target=70, behavior=TUNED_BEHAVIOR),
            "CPU 70 % with behavior: up 100 % or 4 pods per 15 s, down 50 % per minute",
        ),
    ]


def compare(
    settings: SimSettings,
    shape: Shape,
    model: PodModel,
    candidates: list[Candidate],
    *,
    out_dir: str | None = None,
    allowed_violation: float = 0.01,
    report: bool = True,
) -> PolicyComparison:
    """Run every candidate; name the cheapest that meets the SLA. With ``out_dir``,
    each candidate's outputs in its own folder, compare.json and the report."""
    rows: list[PolicyOutcome] = []
    runs = []
    for candidate in candidates:
        run = simulate(
            dataclasses.replace(settings, hpa=candidate.hpa, manual=None), shape, model, name=candidate.name
        )
        summary = summarize(run)
        if out_dir:
            write_outputs(os.path.join(out_dir, candidate.name), run, summary, report=report)
        rows.append(
            PolicyOutcome(
                name=candidate.name,
                description=candidate.description,
                meets_sla=summary.sla_violation_s <= allowed_violation * summary.duration_s,
                sla_violation_s=summary.sla_violation_s,
                cost=summary.cost,
                node_hours=summary.node_hours,
                pod_hours=summary.pod_hours,
                max_pods_pending=summary.max_pods_pending,
                max_pods_ready=summary.max_pods_ready,
                worst_latency_ms=summary.worst_latency_ms,
                manifest=candidate.hpa.manifest(),
            )
        )
        runs.append(run)
    meeting = [r for r in rows if r.meets_sla]
    best = min(meeting, key=lambda r: r.cost) if meeting else None
    if best:
        verdict = (
            f"{best.name} is the cheapest policy that meets {settings.sla.expr}: "
            f"{best.cost:.2f} USD ({best.node_hours:.1f} node-hours), "
            f"{best.sla_violation_s:.0f} s over the limit"
        )
    else:
        closest = min(rows, key=lambda r: r.sla_violation_s)
        verdict = (
            f"No policy meets {settings.sla.expr} (at most {allowed_violation * 100:g} % of the time "
            f"over); the closest is {closest.name} ({closest.sla_violation_s:.0f} s over)"
        )
    result = PolicyComparison(
        sla=settings.sla.expr,
        allowed_violation=allowed_violation,
        best=best.name if best else None,
        verdict=verdict,
        policies=tuple(rows),
    )
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "compare.json"), "w") as handle:
            handle.write(result.to_json())
        if report:
            write_comparison_report(os.path.join(out_dir, "report.html"), result, runs)
    return result
