"""The demo's ``index.html``: the headline numbers and a link to every report.

Plain HTML with no script and no fetch: it opens from the file system, offline.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from mlscale.schemas.plan import Plan
from mlscale.schemas.simulation import SimulationSummary


@dataclass(frozen=True, kw_only=True)
class LoadTestHeadline:
    """The demo's stepped load test, in the numbers index.html shows."""

    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True, kw_only=True)
class OverlayCheck:
    """The overlay the demo rendered from its plan, and what validating it found."""

    dir: str
    ok: bool
    objects: int
    problems: tuple[str, ...]


@dataclass(kw_only=True)
class DemoResults:
    """What the demo found, filled in step by step: what index.html shows."""

    quick: bool
    model_uri: str = ""
    loadtest: LoadTestHeadline | None = None
    plan: Plan | None = None
    k8s: OverlayCheck | None = None
    simulate: dict[str, SimulationSummary] = field(default_factory=dict)  # by preset
    # mlscale against `mlflow models serve`: compare/compare.json's content.
    compare: dict[str, Any] | None = None
    seconds: float | None = None


def _fmt(value, spec: str = ".0f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


_HPA_STEP = re.compile(r"(\d+) -> (\d+) replicas")


def pod_scale_up(summary: SimulationSummary) -> tuple[int, int, float] | None:
    """(replicas before the HPA's first step up, the most it asked for, seconds from
    that first step to the one that reached the most), read from the simulation's
    events; None when it never scaled up."""
    steps = []
    for event in summary.events:
        match = _HPA_STEP.search(event.detail) if event.kind == "hpa_scale" else None
        if match and int(match[2]) > int(match[1]):
            steps.append((event.time_s, int(match[1]), int(match[2])))
    if not steps:
        return None
    peak = max(steps, key=lambda step: step[2])
    return steps[0][1], peak[2], peak[0] - steps[0][0]


def scale_down_text(summary: SimulationSummary) -> str:
    """The nodes' scale-down after the load fell; the same words wherever it is shown
    (0 is a time, None is not reached)."""
    down = summary.scale_down_s
    if summary.max_nodes <= summary.cluster.min_nodes:
        return "nodes never above the minimum: no scale-down to measure"
    if down is None:
        return "back to the minimum nodes: not reached within the replay"
    return f"back to the minimum nodes {down / 60:.1f} min after the load fell"


def simulation_text(summary: SimulationSummary) -> str:
    """One simulated experiment in a sentence: the pods' and the nodes' scale-up,
    the nodes' scale-down, the time the SLA was missed."""
    parts = [f"{summary.max_pods_pending} pods Pending at most"]
    pods = pod_scale_up(summary)
    if pods is not None:
        parts.append(
            f"the HPA scaled the pods from {pods[0]} to {pods[1]} replicas in {pods[2] / 60:.1f} min"
        )
    up = summary.scale_up_delay_s
    if up is not None:
        parts.append(f"first node Ready {up:.0f} s after the first pod went Pending")
    else:
        parts.append("no node added (the pool cannot grow)")
    parts.append(scale_down_text(summary))
    parts.append(f"SLA missed for {_fmt(summary.sla_violation_s)} s")
    return "; ".join(parts)


def _simulation_rows(simulations: dict[str, SimulationSummary]) -> list[tuple[str, str]]:
    return [(preset, simulation_text(summary)) for preset, summary in simulations.items()]


def headline_rows(results: DemoResults) -> list[tuple[str, str]]:
    rows = []
    compare = results.compare
    if compare:
        bound = "at least " if compare.get("lower_bound") else ""
        rows.append(
            (
                "speed-up over mlflow models serve",
                f"{bound}{compare['speedup']:.1f}x ({compare['mlscale']['rps']:.0f} against "
                f"{compare['mlflow']['rps']:.0f} requests/s, {compare['users']} users, one core each)",
            )
        )
    plan = results.plan
    if plan and plan.sizing:
        sizing = plan.sizing
        per_core = sizing.capacity_per_pod / sizing.cpu_per_pod
        rows.append(
            (
                "users per core at the SLA",
                f"{per_core:.0f} (a pod of {sizing.cpu_per_pod:g} CPU carries "
                f"{sizing.capacity_per_pod:g} users at {plan.sla.expr}; "
                "the reference scenario: about 10)",
            )
        )
        rows.append(("sizing", sizing.sentence))
    loadtest = results.loadtest
    if loadtest:
        rows.append(
            (
                "stepped load test",
                f"{loadtest.requests} requests, "
                f"{loadtest.failures} failed, p50 {_fmt(loadtest.p50_ms, '.1f')} ms, "
                f"p95 {_fmt(loadtest.p95_ms, '.1f')} ms",
            )
        )
    rows.extend(_simulation_rows(results.simulate))
    k8s = results.k8s
    if k8s:
        verdict = "valid" if k8s.ok else f"{len(k8s.problems)} problems"
        rows.append(("Kubernetes overlay", f"{k8s.objects} objects, {verdict}"))
    return rows


def _links(out_dir: str) -> list[tuple[str, str]]:
    candidates = [
        ("Load test report", "loadtest/report.html"),
        ("Capacity plan", "plan/plan.html"),
        ("Plan (JSON)", "plan/plan.json"),
        ("Kubernetes overlay (kustomization)", "k8s/kustomization.yaml"),
        ("Simulation: HPA on a full cluster", "simulate/reference-hpa/report.html"),
        ("Simulation: with the cluster autoscaler", "simulate/reference-cluster-autoscaler/report.html"),
        ("mlscale against mlflow models serve (JSON)", "compare/compare.json"),
        ("Server log", "serve.log"),
    ]
    return [(name, path) for name, path in candidates if os.path.exists(os.path.join(out_dir, path))]


def render_index(out_dir: str, results: DemoResults) -> str:
    headline = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in headline_rows(results)
    )
    links = "".join(
        f'<li><a href="{html.escape(path)}">{html.escape(name)}</a></li>' for name, path in _links(out_dir)
    )
    quick = (
        " <b>Quick demo</b>: every step shortened; the figures have wide error bars." if results.quick else ""
    )
    seconds = results.seconds
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale demo</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; }}
table {{ border-collapse: collapse; }} th, td {{ border: 1px solid #ccc; padding: 6px 12px;
text-align: left; vertical-align: top; }}</style></head>
<body><h1>mlscale demo</h1>
<p>The reference scenario on this machine: {html.escape(results.model_uri)}
trained, served, load-tested, planned, rendered for Kubernetes and simulated
in {_fmt(seconds)} s.{quick}</p>
<table>{headline}</table>
<h2>Reports</h2><ul>{links}</ul>
</body></html>
"""


def write_index(out_dir: str, results: DemoResults) -> str:
    compare = results.compare
    if compare:
        os.makedirs(os.path.join(out_dir, "compare"), exist_ok=True)
        with open(os.path.join(out_dir, "compare", "compare.json"), "w") as handle:
            json.dump(compare, handle, indent=2)
    path = os.path.join(out_dir, "index.html")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_index(out_dir, results))
    return path
