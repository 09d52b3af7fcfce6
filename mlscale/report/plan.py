"""The plan report: latency against load for each pod size (the reference's last
chart, with the SLA line), throughput against CPU with the fitted curve, and the
sizing in words and numbers. Self-contained, like the load test report."""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from mlscale.schemas.plan import CapacityFit, Plan, PlanSizing


def _latency_figure(plan: Plan) -> go.Figure:
    figure = go.Figure()
    for measurement in plan.measurements:
        steps = sorted((s for s in measurement.steps if s.valid), key=lambda s: s.load)
        label = f"{measurement.cpu:g} CPU × {measurement.workers} worker(s)"
        figure.add_trace(
            go.Scatter(
                x=[s.load for s in steps],
                y=[s.latency_ms for s in steps],
                mode="lines+markers",
                name=label,
            )
        )
    limit = plan.sla.limit_ms
    percentile = plan.sla.percentile or "p95"
    if limit is not None:
        figure.add_hline(y=limit, line_dash="dash", line_color="#d62728", annotation_text="SLA")
    kind = plan.load_model.kind
    figure.update_layout(
        title=f"{percentile} against load, per pod size",
        xaxis_title="concurrent users" if kind == "users" else "requests/s",
        yaxis_title="milliseconds",
    )
    return figure


def _throughput_figure(plan: Plan, curve: Sequence[tuple[float, float]]) -> go.Figure | None:
    """The measured throughputs, and the fitted law through them: ``curve``, computed
    by the planner (a report renders results; it fits nothing)."""
    points = [(m.cpu, m.max_rps) for m in plan.measurements if m.max_load]
    if not points or plan.model.lam is None or not curve:
        return None
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[x for x, _ in curve], y=[y for _, y in curve], name="fitted (USL, CFS quota below a core)"
        )
    )
    figure.add_trace(
        go.Scatter(
            x=[c for c, _ in points],
            y=[r for _, r in points],
            mode="markers",
            name="measured at the SLA",
            marker={"size": 10},
        )
    )
    figure.update_layout(
        title="Throughput at the SLA against CPU per pod", xaxis_title="cores", yaxis_title="requests/s"
    )
    return figure


def _sizing_table(sizing: PlanSizing) -> str:
    unit = "concurrent users" if sizing.target_kind == "users" else "requests/s"
    hpa = sizing.hpa
    cost = sizing.monthly_cost
    memory = 512 if sizing.memory_per_pod_mib is None else sizing.memory_per_pod_mib
    rows = [
        ("target", f"{sizing.target:g} {unit}"),
        ("capacity of one pod at the SLA", f"{sizing.capacity_per_pod:g} {unit}"),
        (
            "pod",
            f"{sizing.cpu_per_pod:g} CPU (request = limit), "
            f"{sizing.workers_per_pod} worker(s), {memory:.0f} Mi"
            + (f" ({sizing.memory_reason})" if sizing.memory_reason else ""),
        ),
        (f"pods at the target (CPU at most {hpa.target_cpu_utilization} %)", str(sizing.pods)),
        ("cores", f"{sizing.cores:g}"),
        (
            "nodes",
            f"{sizing.nodes} × {sizing.node_type} "
            f"({sizing.pods_per_node} pods per node after reservations and DaemonSets)",
        ),
        (
            "HPA",
            f"min {hpa.min_replicas}, max {hpa.max_replicas}, "
            f"target CPU {hpa.target_cpu_utilization} %"
            + (f" ({sizing.hpa_target_reason})" if sizing.hpa_target_reason else ""),
        ),
        ("cost per month", f"{cost:,.0f}" if cost is not None else "– (give --price-per-node-hour)"),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<h2>Sizing</h2><table>{cells}</table>"


def _model_text(model: CapacityFit) -> str:
    parts = []
    if model.lam is not None:
        tail = model.tail
        parts.append(
            f"<p>Throughput at the SLA against CPU: USL with λ = {model.lam:.1f} req/s per "
            f"core, σ = {model.sigma or 0.0:.3f}, κ = {model.kappa or 0.0:.4f}; below a core, a CFS quota "
            f"that loses {model.throttle_lost_ms or 0.0:.1f} ms of each "
            f"{model.cfs_period_ms or 100.0:g} ms period; fitted on "
            f"{', '.join(f'{c:g}' for c in model.fitted_cpus)} CPU. "
            f"Tail: delay {tail.delay_ms if tail else 0:.1f} ms, percentile-to-mean ratio "
            f"{tail.tail_ratio if tail else 0:.2f} near capacity.</p>"
        )
    if model.holdout == "step":
        parts.append(
            f"<p><b>Model check</b> on {model.holdout_cpu or 0:g} CPU, without the step at "
            f"{model.holdout_step_load or 0:g} (the last load that met the SLA): capacity read "
            f"{model.holdout_predicted_load or 0:.0f} from the next lighter step, "
            f"{model.holdout_measured_load or 0:.0f} from all of them: "
            f"<b>{(model.holdout_error or 0) * 100:.1f} % error</b>.</p>"
        )
    elif model.holdout_error is not None:
        parts.append(
            f"<p><b>Model check</b> on {model.holdout_cpu or 0:g} CPU, a size the fit did not see: "
            f"predicted {model.holdout_predicted_load or 0:.0f}, measured "
            f"{model.holdout_measured_load or 0:.0f} (where the measured percentile crosses the "
            f"limit): <b>{model.holdout_error * 100:.1f} % error</b> "
            f"(throughput alone: {(model.holdout_throughput_error or 0) * 100:.1f} %).</p>"
        )
    elif model.note:
        parts.append(f"<p>Model: {html.escape(model.note)}.</p>")
    if model.predicted:
        cells = "".join(
            f"<tr><td>{p.cpu:g}</td><td>{p.max_load:.0f}</td><td>{p.max_rps:.1f}</td></tr>"
            for p in model.predicted
        )
        parts.append(
            "<table><tr><th>CPU per pod</th><th>predicted max load</th>"
            f"<th>requests/s</th></tr>{cells}</table>"
        )
    return "<h2>Model</h2>" + "".join(parts) if parts else ""


def render_plan(plan: Plan, curve: Sequence[tuple[float, float]] = ()) -> str:
    """plan.html's text; ``curve``: the fitted throughput against CPU, to draw."""
    figures = [f for f in (_latency_figure(plan), _throughput_figure(plan, curve)) if f is not None]
    charts = "\n".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)
    sizing = plan.sizing
    # Plans before ``sizing_error`` have only "no size met the SLA" as a reason.
    reason = plan.sizing_error or "No pod size met the SLA."
    sentence = html.escape(sizing.sentence) if sizing else f"No sizing: {html.escape(reason)}"
    rows = "".join(
        f"<tr><td>{m.cpu:g}</td><td>{m.workers}</td><td>{m.max_load}</td>"
        f"<td>{m.max_rps:.1f}</td><td>{m.p95_ms_at_max or '–'}</td>"
        f"<td>{html.escape(m.stopped_by)}</td>"
        f"<td>{', '.join(f'{x:g}' for x in m.few_requests_at) or '–'}</td></tr>"
        for m in plan.measurements
    )
    quick = (
        "<p><b>Quick plan</b>: short steps and a coarse search (±25 % on each "
        "capacity); run without --quick for a plan to size a cluster on.</p>"
        if plan.quick
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale plan</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>Capacity plan at {html.escape(plan.sla.expr)}</h1>
<p style="font-size: 1.3em"><b>{sentence}</b></p>{quick}
{_sizing_table(sizing) if sizing else ""}
<h2>Measured</h2>
<table><tr><th>CPU per pod</th><th>workers</th><th>max load at the SLA</th>
<th>requests/s there</th><th>latency there (ms)</th><th>search ended by</th>
<th>loads with too few requests for the percentile</th></tr>{rows}</table>
{_model_text(plan.model)}
{charts}
<details><summary>plan.json</summary><pre>{html.escape(plan.to_json())}</pre></details>
</body></html>
"""


def write_plan_report(path: str, plan: Plan, curve: Sequence[tuple[float, float]] = ()) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_plan(plan, curve))
