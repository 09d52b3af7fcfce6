"""The simulation report: load, pods, nodes, CPU and latency against the SLA on one
time axis, with the controllers' events marked, as the reference's figures show
them; and the comparison of policies. Self-contained: plotly.js is inlined once.

Long runs are drawn at most ~4,000 points per line: each point is the maximum
(latency, pods, nodes) or the mean (load, CPU) of the seconds it stands for, so
spikes stay visible; timeseries.csv keeps every tick.
"""

from __future__ import annotations

import html
import json
import math
import warnings

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

MEDIAN = "#2ca02c"  # the reference's green
P95 = "#ff7f0e"  # the reference's orange
_MEAN_COLUMNS = {"load", "rps", "cpu_utilization", "node_cpu_utilization", "hpa_metric", "in_flight", "failed_rps"}
_MAX_POINTS = 4000
_EVENT_STYLE = {
    "hpa_scale": ("HPA scales", "#1f77b4", "triangle-up"),
    "manual_scale": ("replicas set by hand", "#1f77b4", "diamond"),
    "pods_pending": ("pods Pending", "#d62728", "x"),
    "pods_scheduled": ("Pending cleared", "#2ca02c", "x"),
    "node_requested": ("nodes requested", "#9467bd", "triangle-up"),
    "node_ready": ("node Ready", "#9467bd", "circle"),
    "scale_down": ("nodes scaled down", "#8c564b", "triangle-down"),
    "node_removed": ("node removed", "#8c564b", "circle-open"),
    "manual_nodes": ("pool resized by hand", "#9467bd", "diamond"),
    "load_fall": ("load falls", "#7f7f7f", "line-ns-open"),
    "sla_violation": ("SLA missed from", "#d62728", "line-ns-open"),
}


def _downsample(columns: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    ticks = len(columns["time_s"])
    step = max(1, math.ceil(ticks / _MAX_POINTS))
    if step == 1:
        return columns, 1
    usable = ticks - ticks % step
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets (no pod serving) stay NaN
        for name, values in columns.items():
            head = values[:usable].reshape(-1, step)
            if name == "time_s":
                out[name] = head[:, 0]
            elif name in _MEAN_COLUMNS:
                out[name] = np.nanmean(head, axis=1)
            else:
                out[name] = np.nanmax(head, axis=1)
    return out, step


def _list(values: np.ndarray) -> list:
    return [None if (isinstance(v, float) and math.isnan(v)) else v for v in values.tolist()]


def timeline_figure(run, summary: dict) -> go.Figure:
    columns, step = _downsample(run.columns)
    x = columns["time_s"] / 60
    settings = run.settings
    figure = make_subplots(
        rows=6, cols=1, shared_xaxes=True, vertical_spacing=0.025,
        row_heights=[0.09, 0.17, 0.19, 0.15, 0.17, 0.23],
        subplot_titles=("events", "load", "pods", "nodes", "CPU", "latency"),
    )  # fmt: skip
    unit = "users" if run.kind == "users" else "requests/s"
    figure.add_trace(go.Scatter(x=x, y=_list(columns["load"]), name=f"load ({unit})", line_color="#1f77b4",
                                line_shape="hv"), row=2, col=1)  # fmt: skip
    if run.kind == "users":
        figure.add_trace(go.Scatter(x=x, y=_list(columns["rps"]), name="served (requests/s)", line_dash="dot",
                                    line_color="#17becf", visible="legendonly"), row=2, col=1)  # fmt: skip
    for name, label, color, dash in (
        ("pods_desired", "desired (spec.replicas)", "#7f7f7f", "dash"),
        ("pods_ready", "ready", "#2ca02c", None),
        ("pods_starting", "starting", "#bcbd22", "dot"),
        ("pods_pending", "Pending (unschedulable)", "#d62728", None),
    ):
        figure.add_trace(go.Scatter(x=x, y=_list(columns[name]), name=label, line_color=color, line_dash=dash,
                                    line_shape="hv"), row=3, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=_list(columns["nodes"]), name="nodes Ready", line_color="#9467bd",
                                line_shape="hv"), row=4, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=_list(columns["nodes_billed"]), name="nodes billed", line_dash="dot",
                                line_color="#8c564b", line_shape="hv"), row=4, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=_list(columns["cpu_utilization"]), name="pod CPU (% of request)",
                                line_color="#ff7f0e"), row=5, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=_list(columns["hpa_metric"]), name="what the HPA saw",
                                line_color="#1f77b4", line_dash="dot", line_shape="hv"), row=5, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=_list(columns["node_cpu_utilization"]), name="node CPU (% allocatable)",
                                line_color="#8c564b", visible="legendonly"), row=5, col=1)  # fmt: skip
    hpa = settings.hpa if settings.manual is None else None
    if hpa is not None and hpa.metric == "cpu":
        figure.add_hline(y=hpa.target, line_dash="dash", line_color="#999", row=5, col=1)
    figure.add_trace(go.Scatter(x=x, y=_list(columns["p50_ms"]), name="median (ms)", line_color=MEDIAN),
                     row=6, col=1)  # fmt: skip
    figure.add_trace(go.Scatter(x=x, y=_list(columns["p95_ms"]), name="p95 (ms)", line_color=P95), row=6, col=1)
    if run.sla_column not in ("p50_ms", "p95_ms"):
        figure.add_trace(go.Scatter(x=x, y=_list(columns[run.sla_column]), name=run.sla_column.replace("_", " "),
                                    line_color="#d62728"), row=6, col=1)  # fmt: skip
    figure.add_hline(y=settings.sla.limit_ms, line_dash="dash", line_color="#d62728", row=6, col=1,
                     annotation_text=f"SLA {settings.sla.expr}", annotation_position="top left")  # fmt: skip
    _event_markers(figure, summary["events"])
    figure.update_yaxes(type="log", title_text="ms", row=6, col=1)
    figure.update_yaxes(rangemode="tozero", row=2, col=1)
    figure.update_yaxes(rangemode="tozero", row=3, col=1)
    figure.update_yaxes(rangemode="tozero", row=4, col=1)
    figure.update_yaxes(rangemode="tozero", title_text="%", row=5, col=1)
    figure.update_yaxes(showticklabels=False, row=1, col=1)
    figure.update_xaxes(title_text="minutes", row=6, col=1)
    note = f" (each point: {step} s)" if step > 1 else ""
    figure.update_layout(height=1150, title=f"Simulated cluster{note}", hovermode="x unified",
                         legend={"tracegroupgap": 4})  # fmt: skip
    return figure


def _event_markers(figure: go.Figure, events: list[dict]) -> None:
    kinds = [k for k in _EVENT_STYLE if any(e["kind"] == k for e in events)]
    for row, kind in enumerate(kinds):
        label, color, symbol = _EVENT_STYLE[kind]
        chosen = [e for e in events if e["kind"] == kind]
        figure.add_trace(go.Scatter(
            x=[e["time_s"] / 60 for e in chosen], y=[row] * len(chosen), mode="markers", name=label,
            marker={"color": color, "symbol": symbol, "size": 9}, text=[e["detail"] for e in chosen],
            hovertemplate="%{text}<extra>" + html.escape(label) + "</extra>",
        ), row=1, col=1)  # fmt: skip
    # The few events that explain the story get a line through every chart.
    key = [e for e in events if e["kind"] in ("pods_pending", "node_ready", "load_fall", "scale_down")]
    if len(key) <= 30:
        for event in key:
            figure.add_vline(x=event["time_s"] / 60, line_dash="dot", line_width=1,
                             line_color=_EVENT_STYLE[event["kind"]][1])  # fmt: skip


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _summary_html(summary: dict) -> str:
    duration = summary["duration_s"]
    cells = [
        ("SLA", html.escape(summary["sla"]["expr"])),
        ("time over the SLA", (f"{_fmt(summary['sla_violation_s'], ' s', 0)} "
                               f"({100 * (1 - summary['sla_met_share']):.1f} %)")),
        ("node-hours", _fmt(summary["node_hours"], "", 2)),
        ("cost", f"{summary['cost']:.2f} USD at {summary['price_per_node_hour']:g}/node-hour"),
        ("most pods Pending", _fmt(summary["max_pods_pending"])),
        ("most pods ready / nodes", f"{summary['max_pods_ready']} / {summary['max_nodes']}"),
        ("first node Ready after pods went Pending", _fmt(summary["scale_up_delay_s"], " s", 0)),
        ("back to the minimum nodes after the load fell", _minutes(summary["scale_down_s"])),
        ("failed requests", _fmt(summary["failed_requests"], "", 0)),
        ("simulated", _minutes(duration)),
    ]  # fmt: skip
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in cells)
    return f"<table class='summary'>{rows}</table>"


def _minutes(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:,.0f} s ({seconds / 60:.1f} min)"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
.best { background: #e8f5e9; } .miss { color: #b00; }
"""


def render_simulation(run, summary: dict) -> str:
    chart = timeline_figure(run, summary).to_html(full_html=False, include_plotlyjs=False,
                                                   config={"displaylogo": False})  # fmt: skip
    title = summary.get("preset", {}).get("name") or summary.get("name") or "simulation"
    description = summary.get("preset", {}).get("description", "")
    policy = html.escape(json.dumps(summary["policy"], indent=2))
    pod = summary["pod"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale simulate: {html.escape(title)}</title>
<style>{_STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>Simulated autoscaling: {html.escape(title)}</h1>
<p>{html.escape(description)}</p>
{_summary_html(summary)}
<p>Pod: {html.escape(pod['source'])}; M/M/{pod['servers']}, {pod['capacity_rps']:.1f} requests/s at most,
{pod['cpu_request_m']}m CPU. Cluster: {summary['cluster']['min_nodes']}–{summary['cluster']['max_nodes']}
{html.escape(summary['cluster']['machine_type'])} nodes, {summary['cluster']['pods_per_node']} pods per new node.</p>
{chart}
<details><summary>Policy (the manifest's values)</summary><pre>{policy}</pre></details>
<details><summary>Events ({len(summary['events'])})</summary><pre>{html.escape(_events_text(summary['events']))}</pre></details>
</body></html>
"""


def _events_text(events: list[dict]) -> str:
    return "\n".join(f"{e['time_s']:>9.0f} s  {e['kind']:<15} {e['detail']}" for e in events)


def write_simulation_report(path: str, run, summary: dict) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_simulation(run, summary))


def comparison_figure(runs) -> go.Figure:
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                           subplot_titles=("load", "pods ready", "p95 (ms)"))  # fmt: skip
    first = True
    for run in runs:
        columns, _ = _downsample(run.columns)
        x = columns["time_s"] / 60
        if first:
            figure.add_trace(go.Scatter(x=x, y=_list(columns["load"]), name="load", line_color="#1f77b4",
                                        line_shape="hv"), row=1, col=1)  # fmt: skip
            figure.add_hline(y=run.settings.sla.limit_ms, line_dash="dash", line_color="#d62728", row=3, col=1)
            first = False
        figure.add_trace(go.Scatter(x=x, y=_list(columns["pods_ready"]), name=f"{run.name}: pods",
                                    line_shape="hv", legendgroup=run.name), row=2, col=1)  # fmt: skip
        figure.add_trace(go.Scatter(x=x, y=_list(columns[run.sla_column]), name=f"{run.name}: latency",
                                    legendgroup=run.name), row=3, col=1)  # fmt: skip
    figure.update_yaxes(type="log", row=3, col=1)
    figure.update_xaxes(title_text="minutes", row=3, col=1)
    figure.update_layout(height=800, title="Policies side by side", hovermode="x unified")
    return figure


def render_comparison(result: dict, runs) -> str:
    rows = []
    for row in result["policies"]:
        css = "best" if row["name"] == result["best"] else ("" if row["meets_sla"] else "miss")
        manifest = html.escape(json.dumps(row["manifest"]))
        rows.append(
            f"<tr class='{css}'><td><a href='{html.escape(row['name'])}/report.html'>{html.escape(row['name'])}</a>"
            f"</td><td>{html.escape(row['description'])}</td><td>{'yes' if row['meets_sla'] else 'no'}</td>"
            f"<td>{row['sla_violation_s']:.0f}</td><td>{row['cost']:.2f}</td><td>{row['node_hours']:.1f}</td>"
            f"<td>{row['max_pods_pending']}</td><td><code>{manifest}</code></td></tr>"
        )
    chart = comparison_figure(runs).to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale simulate --compare</title>
<style>{_STYLE}</style>
<script>{get_plotlyjs()}</script></head>
<body><h1>Autoscaling policies at {html.escape(result['sla'])}</h1>
<p style="font-size: 1.2em"><b>{html.escape(result['verdict'])}</b></p>
<table><tr><th>policy</th><th></th><th>meets the SLA</th><th>s over</th><th>cost (USD)</th><th>node-hours</th>
<th>most Pending</th><th>HPA manifest values</th></tr>{''.join(rows)}</table>
{chart}
</body></html>
"""


def write_comparison_report(path: str, result: dict, runs) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_comparison(result, runs))
