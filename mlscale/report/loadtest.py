"""The load test report: the reference scenario's charts, exact numbers, one HTML file.

Charts are Plotly figures; plotly.js is inlined once, so the page works
offline and carries its charts' data.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from mlscale.schemas.loadtest import LoadTestSummary, parse_loadtest_summary

if TYPE_CHECKING:
    # For annotations only: the load-test engine calls this report, never the reverse.
    from mlscale.loadtest.shapes import Shape

MEDIAN = "#2ca02c"  # the reference's green
P95 = "#ff7f0e"  # the reference's orange


def _stage_marks(figure: go.Figure, shape: Shape) -> None:
    for index, stage in enumerate(shape.stages):
        if index:
            figure.add_vline(x=stage.start_s, line_dash="dot", line_color="#999")


def latency_figure(rows: list[dict], shape: Shape) -> go.Figure:
    x = [r["elapsed_s"] for r in rows]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=x, y=[r["p50_ms"] for r in rows], name="median (ms)", line_color=MEDIAN))
    figure.add_trace(go.Scatter(x=x, y=[r["p95_ms"] for r in rows], name="p95 (ms)", line_color=P95))
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[r["p99_ms"] for r in rows],
            name="p99 (ms)",
            line_color="#d62728",
            line_dash="dot",
            visible="legendonly",
        )
    )
    load_key = "users" if shape.kind == "users" else "target_rps"
    figure.add_trace(
        go.Scatter(
            x=x,
            y=[r[load_key] for r in rows],
            name=load_key.replace("_", " "),
            line_color="#1f77b4",
            line_shape="hv",
            opacity=0.6,
        ),
        secondary_y=True,
    )
    _stage_marks(figure, shape)
    figure.update_layout(title="Response time over time", xaxis_title="seconds")
    figure.update_yaxes(title_text="milliseconds", secondary_y=False, rangemode="tozero")
    figure.update_yaxes(title_text=load_key.replace("_", " "), secondary_y=True, rangemode="tozero")
    return figure


def throughput_figure(rows: list[dict], shape: Shape) -> go.Figure:
    x = [r["elapsed_s"] for r in rows]
    figure = go.Figure()
    figure.add_trace(go.Scatter(x=x, y=[r["rps"] for r in rows], name="requests/s"))
    figure.add_trace(
        go.Scatter(x=x, y=[r["failures_per_s"] for r in rows], name="failures/s", line_color="#d62728")
    )
    _stage_marks(figure, shape)
    figure.update_layout(title="Requests and failures per second", xaxis_title="seconds")
    figure.update_yaxes(rangemode="tozero")
    return figure


def resources_figure(rows: list[dict], shape: Shape) -> go.Figure:
    x = [r["elapsed_s"] for r in rows]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=x, y=[r["server_cpu"] for r in rows], name="server CPU (cores)"))
    figure.add_trace(
        go.Scatter(
            x=x, y=[r["generator_cpu"] for r in rows], name="load generator CPU (cores)", line_dash="dot"
        )
    )
    figure.add_trace(
        go.Scatter(x=x, y=[r["server_rss_mb"] for r in rows], name="server memory (MB)"), secondary_y=True
    )
    _stage_marks(figure, shape)
    figure.update_layout(title="Server CPU and memory", xaxis_title="seconds")
    figure.update_yaxes(title_text="cores", secondary_y=False, rangemode="tozero")
    figure.update_yaxes(title_text="MB", secondary_y=True, rangemode="tozero")
    return figure


def internals_figure(rows: list[dict], shape: Shape) -> go.Figure | None:
    """The server's own view, from its /metrics: None when it had none."""
    if all(r.get("in_flight") is None for r in rows):
        return None
    x = [r["elapsed_s"] for r in rows]
    figure = make_subplots(specs=[[{"secondary_y": True}]])
    figure.add_trace(go.Scatter(x=x, y=[r["in_flight"] for r in rows], name="in flight"))
    figure.add_trace(
        go.Scatter(x=x, y=[r["batch_rows"] for r in rows], name="rows per predict call", line_dash="dot")
    )
    figure.add_trace(
        go.Scatter(x=x, y=[r["queue_wait_ms"] for r in rows], name="queue wait (ms, mean)"), secondary_y=True
    )
    _stage_marks(figure, shape)
    figure.update_layout(title="Inside the server (its /metrics)", xaxis_title="seconds")
    figure.update_yaxes(title_text="requests / rows", secondary_y=False, rangemode="tozero")
    figure.update_yaxes(title_text="milliseconds", secondary_y=True, rangemode="tozero")
    return figure


def distribution_figure(points: Sequence[tuple[float, float]]) -> go.Figure:
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=[100 / max(100 - q, 1e-4) for q, _ in points],
            y=[ms for _, ms in points],
            text=[f"p{q:.4g}" for q, _ in points],
            hovertemplate="%{text}: %{y} ms",
            name="latency",
            line_color=P95,
        )
    )
    ticks = [(50, "50%"), (90, "90%"), (99, "99%"), (99.9, "99.9%"), (99.99, "99.99%")]
    figure.update_layout(title="Latency distribution (whole run)", yaxis_title="milliseconds")
    figure.update_xaxes(
        type="log",
        tickvals=[100 / (100 - q) for q, _ in ticks],
        ticktext=[t for _, t in ticks],
        title_text="percentile",
    )
    return figure


def _fmt(value: object, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}" if value >= 100 else f"{value:,.3g}{unit}"
    return f"{value:,}{unit}" if isinstance(value, int) else html.escape(str(value))


def _summary_html(summary: LoadTestSummary) -> str:
    latency = summary.latency_ms
    cells = [
        ("requests", _fmt(summary.requests)),
        ("failures", _fmt(summary.failures)),
        ("requests/s", _fmt(summary.rps)),
        *[(name, _fmt(latency[name], " ms")) for name in ("p50", "p90", "p95", "p99", "p999", "max")],
    ]
    head = "".join(f"<th>{html.escape(k)}</th>" for k, _ in cells)
    body = "".join(f"<td>{v}</td>" for _, v in cells)
    verdict = "valid" if summary.valid else "INVALID"
    parts = [
        f"<table><tr>{head}</tr><tr>{body}</tr></table>",
        f"<p class='{verdict.lower()}'>Measurement: <b>{verdict}</b></p>",
    ]
    for problem in summary.problems:
        parts.append(f"<p class='invalid'>⚠ {html.escape(problem)}</p>")
    if summary.sla:
        sla = summary.sla
        state = "met" if sla.met else "MISSED"
        parts.append(f"<p>SLA <code>{html.escape(sla.expr)}</code>: <b>{state}</b></p>")
    if summary.errors:
        rows = "".join(
            f"<tr><td>{html.escape(e.kind)}</td><td>{html.escape(e.error)}</td><td>{e.count:,}</td></tr>"
            for e in summary.errors
        )
        parts.append(f"<table><tr><th>request</th><th>error</th><th>count</th></tr>{rows}</table>")
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
.invalid { color: #b00; } .valid { color: #070; }
"""


def render_report(
    summary: LoadTestSummary | dict[str, Any],
    rows: list[dict],
    distribution: Sequence[tuple[float, float]],
    shape: Shape,
) -> str:
    """report.html's text. ``summary``: the summary, or summary.json's data as the runner
    holds it, read here through the schema. ``distribution``: the latency distribution's
    (percentile, ms) points, which the run computes from its histograms."""
    summary = parse_loadtest_summary(summary)
    figures = [
        latency_figure(rows, shape),
        throughput_figure(rows, shape),
        resources_figure(rows, shape),
        internals_figure(rows, shape),
        distribution_figure(distribution),
    ]
    figures = [f for f in figures if f is not None]
    charts = "\n".join(
        f.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False}) for f in figures
    )
    config = html.escape(json.dumps(summary.config, indent=2))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale load test</title>
<style>{_STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>Load test of {html.escape(str(summary.config["host"]))}</h1>
{_summary_html(summary)}
{charts}
<details><summary>Configuration</summary><pre>{config}</pre></details>
</body></html>
"""


def write_report(
    path: str,
    summary: LoadTestSummary | dict[str, Any],
    rows: list[dict],
    distribution: Sequence[tuple[float, float]],
    shape: Shape,
) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_report(summary, rows, distribution, shape))
