"""The plan report: latency against load for each pod size (the reference's last
chart, with the SLA line), throughput against CPU with the fitted curve, and the
sizing in words and numbers. Self-contained, like the load test report."""

from __future__ import annotations

import html
import json

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from mlscale.capacity.models import UslFit


def _latency_figure(plan: dict) -> go.Figure:
    figure = go.Figure()
    for measurement in plan["measurements"]:
        steps = sorted((s for s in measurement["steps"] if s["valid"]), key=lambda s: s["load"])
        label = f"{measurement['cpu']:g} CPU × {measurement['workers']} worker(s)"
        figure.add_trace(go.Scatter(x=[s["load"] for s in steps], y=[s["latency_ms"] for s in steps],
                                    mode="lines+markers", name=label))  # fmt: skip
    limit = plan["sla"].get("limit_ms")
    percentile = plan["sla"]["percentile"] or "p95"
    if limit is not None:
        figure.add_hline(y=limit, line_dash="dash", line_color="#d62728", annotation_text="SLA")
    kind = plan["load_model"]["kind"]
    figure.update_layout(title=f"{percentile} against load, per pod size",
                         xaxis_title="concurrent users" if kind == "users" else "requests/s",
                         yaxis_title="milliseconds")  # fmt: skip
    return figure


def _throughput_figure(plan: dict) -> go.Figure | None:
    model = plan["model"]
    points = [(m["cpu"], m["max_rps"]) for m in plan["measurements"] if m["max_load"]]
    if not points or "lambda" not in model:
        return None
    fit = UslFit(model["lambda"], model["sigma"], model["kappa"])
    top = max(c for c, _ in points) * 2
    xs = [top * i / 50 for i in range(1, 51)]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=xs, y=[fit.throughput(x) for x in xs], name="fitted (USL)"))
    figure.add_trace(go.Scatter(x=[c for c, _ in points], y=[r for _, r in points],
                                mode="markers", name="measured at the SLA",
                                marker={"size": 10}))  # fmt: skip
    figure.update_layout(title="Throughput at the SLA against CPU per pod",
                         xaxis_title="cores", yaxis_title="requests/s")  # fmt: skip
    return figure


def render_plan(plan: dict) -> str:
    figures = [f for f in (_latency_figure(plan), _throughput_figure(plan)) if f is not None]
    charts = "\n".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figures)
    sizing = plan["sizing"]
    sentence = html.escape(sizing["sentence"]) if sizing else "No pod size met the SLA."
    rows = "".join(
        f"<tr><td>{m['cpu']:g}</td><td>{m['workers']}</td><td>{m['max_load']}</td>"
        f"<td>{m['max_rps']:.1f}</td><td>{m['p95_ms_at_max'] or '–'}</td></tr>"
        for m in plan["measurements"]
    )
    quick = "<p><b>Quick plan</b>: short steps, wide error bars.</p>" if plan["quick"] else ""
    holdout = plan["model"].get("holdout_error")
    holdout_text = (f"<p>Model check on a size the fit did not see: {holdout * 100:.1f} % error.</p>"
                    if holdout is not None else "")  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale plan</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; }}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>Capacity plan at {html.escape(plan['sla']['expr'])}</h1>
<p style="font-size: 1.3em"><b>{sentence}</b></p>{quick}{holdout_text}
<table><tr><th>CPU per pod</th><th>workers</th><th>max load at the SLA</th>
<th>requests/s there</th><th>latency there (ms)</th></tr>{rows}</table>
{charts}
<details><summary>plan.json</summary><pre>{html.escape(json.dumps(plan, indent=2))}</pre></details>
</body></html>
"""


def write_plan_report(path: str, plan: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_plan(plan))
