"""The simulation report: load, pods, nodes, CPU and latency against the SLA on one
time axis, with the controllers' events marked, as the reference's figures show
them; and the comparison of policies. Self-contained: plotly.js is inlined once,
packed (``mlscale.report.plotly_packed``).

A long run is drawn at what the chart can show (``envelope``): its time is cut
into about a pixel's width each (``_BUCKETS``), and each line keeps, per bucket,
the highest value and, if it is half a pixel lower or more, the lowest, at the
ticks they happened: a one-second spike or dip in a day stays visible, and each
peak is drawn at its value. timeseries.csv keeps every tick.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mlscale.report import plotly_packed
from mlscale.schemas.simulation import PolicyComparison, SimulationEvent, SimulationSummary

# A run of the simulator (``mlscale.simulate.engine.Run``), passed in: a report renders
# an engine's results and never imports the engine, so it is not named as a type here.
Run = Any

MEDIAN = "#2ca02c"  # the reference's green
P95 = "#ff7f0e"  # the reference's orange
# The timeline's plot area is about 850 px wide (a 1,150 px page, less the legend):
# a bucket a pixel, two points a bucket at most.
_BUCKETS = 850
_ROW_PIXELS = 150  # the height of the smaller subplots
_INTEGER_COLUMNS = {
    "pods_desired",
    "pods_ready",
    "pods_pending",
    "pods_starting",
    "nodes",
    "nodes_provisioning",
    "nodes_billed",
}
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


def envelope(values: np.ndarray, buckets: int = _BUCKETS, *, log: bool = False) -> np.ndarray:
    """The ticks a chart of ``values`` draws. Short series: every tick. Long ones:
    per bucket of ``len / buckets`` ticks, where its lowest and its highest values
    are, in time order; only the highest where the two are within half a pixel of
    each other (a subplot is ~_ROW_PIXELS high; ``log``: on a log axis), so the
    peaks stay exact; and, where some ticks have no value (NaN: no pod serving),
    the first of them, a gap; the first and last ticks are kept. Then the points
    inside a stretch of equal values go: a line through the stretch's ends draws
    the same."""
    n = len(values)
    if n <= 2 * buckets:
        index = np.arange(n)
    else:
        step = math.ceil(n / buckets)
        padded = np.concatenate([values, np.full(-n % step, np.nan)]).reshape(-1, step)
        missing = np.isnan(padded)
        low = np.where(missing, np.inf, padded).argmin(axis=1)
        high = np.where(missing, -np.inf, padded).argmax(axis=1)
        rows = np.arange(len(padded))
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.log10(padded) if log else padded
            finite = scaled[np.isfinite(scaled)]
            half_pixel = (finite.max() - finite.min()) / (2 * _ROW_PIXELS) if len(finite) else 0.0
            both = (low != high) & ~(scaled[rows, high] - scaled[rows, low] <= half_pixel)
        base = rows * step
        pairs = np.stack(
            [base + np.where(both, np.minimum(low, high), high), base + np.maximum(low, high)], axis=1
        )
        keep = np.ones(pairs.shape, dtype=bool)
        keep[:, 1] = both
        # A bucket with ticks of no value (NaN: no pod serving) also gives the first of
        # them: a gap in the line, however short the outage.
        gaps = (base + missing.argmax(axis=1))[missing.any(axis=1)]
        index = np.union1d(np.concatenate([pairs[keep], gaps[gaps < n]]), [0, n - 1])  # the whole run
    y = values[index]
    inside = np.zeros(len(index), dtype=bool)
    inside[1:-1] = (y[1:-1] == y[:-2]) & (y[1:-1] == y[2:])
    return index[~inside]


def _line(run, column: str, *, log: bool = False, **style) -> go.Scatter:
    """A column as a line: the envelope's ticks, x in minutes."""
    values = run.columns[column]
    index = envelope(values, log=log)
    # Typed arrays in the page, as small as the chart allows: 7 significant digits
    # are more than a pixel shows, and counts fit 16 bits (pods, nodes) or 32.
    y = values[index]
    if column in _INTEGER_COLUMNS:
        y = y.astype(np.int16 if len(y) == 0 or np.abs(y).max() < 2**15 else np.int32)
    else:
        y = y.astype(np.float32)
    return go.Scatter(x=(run.columns["time_s"][index] / 60).astype(np.float32), y=y, **style)


def timeline_figure(run: Run, summary: SimulationSummary) -> go.Figure:
    settings = run.settings
    figure = make_subplots(
        rows=6,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.025,
        row_heights=[0.09, 0.17, 0.19, 0.15, 0.17, 0.23],
        subplot_titles=("events", "load", "pods", "nodes", "CPU", "latency"),
    )
    unit = "users" if run.kind == "users" else "requests/s"
    lines = [
        (2, _line(run, "load", name=f"load ({unit})", line_color="#1f77b4", line_shape="hv")),
        (
            3,
            _line(
                run,
                "pods_desired",
                name="desired (spec.replicas)",
                line_color="#7f7f7f",
                line_dash="dash",
                line_shape="hv",
            ),
        ),
        (3, _line(run, "pods_ready", name="ready", line_color="#2ca02c", line_shape="hv")),
        (
            3,
            _line(
                run, "pods_starting", name="starting", line_color="#bcbd22", line_dash="dot", line_shape="hv"
            ),
        ),
        (
            3,
            _line(run, "pods_pending", name="Pending (unschedulable)", line_color="#d62728", line_shape="hv"),
        ),
        (4, _line(run, "nodes", name="nodes Ready", line_color="#9467bd", line_shape="hv")),
        (
            4,
            _line(
                run,
                "nodes_billed",
                name="nodes billed",
                line_dash="dot",
                line_color="#8c564b",
                line_shape="hv",
            ),
        ),
        (5, _line(run, "cpu_utilization", name="pod CPU (% of request)", line_color="#ff7f0e")),
        (
            5,
            _line(
                run,
                "hpa_metric",
                name="what the HPA saw",
                line_color="#1f77b4",
                line_dash="dot",
                line_shape="hv",
            ),
        ),
        (
            5,
            _line(
                run,
                "node_cpu_utilization",
                name="node CPU (% allocatable)",
                line_color="#8c564b",
                visible="legendonly",
            ),
        ),
        (6, _line(run, "p50_ms", log=True, name="median (ms)", line_color=MEDIAN)),
        (6, _line(run, "p95_ms", log=True, name="p95 (ms)", line_color=P95)),
    ]
    if run.kind == "users":
        lines.insert(
            1,
            (
                2,
                _line(
                    run,
                    "rps",
                    name="served (requests/s)",
                    line_dash="dot",
                    line_color="#17becf",
                    visible="legendonly",
                ),
            ),
        )
    if run.sla_column not in ("p50_ms", "p95_ms"):
        lines.append(
            (
                6,
                _line(
                    run, run.sla_column, log=True, name=run.sla_column.replace("_", " "), line_color="#d62728"
                ),
            )
        )
    for row, line in lines:
        figure.add_trace(line, row=row, col=1)
    hpa = settings.hpa if settings.manual is None else None
    if hpa is not None and hpa.metric == "cpu":
        figure.add_hline(y=hpa.target, line_dash="dash", line_color="#999", row=5, col=1)
    figure.add_hline(
        y=settings.sla.limit_ms,
        line_dash="dash",
        line_color="#d62728",
        row=6,
        col=1,
        annotation_text=f"SLA {settings.sla.expr}",
        annotation_position="top left",
    )
    _event_markers(figure, summary.events)
    figure.update_yaxes(type="log", title_text="ms", row=6, col=1)
    figure.update_yaxes(rangemode="tozero", row=2, col=1)
    figure.update_yaxes(rangemode="tozero", row=3, col=1)
    figure.update_yaxes(rangemode="tozero", row=4, col=1)
    figure.update_yaxes(rangemode="tozero", title_text="%", row=5, col=1)
    figure.update_yaxes(showticklabels=False, row=1, col=1)
    figure.update_xaxes(title_text="minutes", row=6, col=1)
    figure.update_layout(
        height=1150,
        title=f"Simulated cluster{_resolution_note(run)}",
        hovermode="x unified",
        legend={"tracegroupgap": 4},
    )
    return figure


def _resolution_note(run) -> str:
    ticks = len(run.columns["time_s"])
    if ticks <= 2 * _BUCKETS:
        return ""
    seconds = math.ceil(ticks / _BUCKETS) * run.settings.tick_s
    return f" (lowest and highest of every {seconds:g} s; timeseries.csv has every tick)"


def _event_markers(figure: go.Figure, events: Sequence[SimulationEvent]) -> None:
    kinds = [k for k in _EVENT_STYLE if any(e.kind == k for e in events)]
    for row, kind in enumerate(kinds):
        label, color, symbol = _EVENT_STYLE[kind]
        chosen = [e for e in events if e.kind == kind]
        figure.add_trace(
            go.Scatter(
                x=[e.time_s / 60 for e in chosen],
                y=[row] * len(chosen),
                mode="markers",
                name=label,
                marker={"color": color, "symbol": symbol, "size": 9},
                text=[e.detail for e in chosen],
                hovertemplate="%{text}<extra>" + html.escape(label) + "</extra>",
            ),
            row=1,
            col=1,
        )
    # The few events that explain the story get a line through every chart.
    key = [e for e in events if e.kind in ("pods_pending", "node_ready", "load_fall", "scale_down")]
    if len(key) <= 30:
        for event in key:
            figure.add_vline(
                x=event.time_s / 60,
                line_dash="dot",
                line_width=1,
                line_color=_EVENT_STYLE[event.kind][1],
            )


def _fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _summary_html(summary: SimulationSummary) -> str:
    duration = summary.duration_s
    cells = [
        ("SLA", html.escape(summary.sla.expr)),
        (
            "time over the SLA",
            (f"{_fmt(summary.sla_violation_s, ' s', 0)} ({100 * (1 - summary.sla_met_share):.1f} %)"),
        ),
        ("node-hours", _fmt(summary.node_hours, "", 2)),
        ("cost", f"{summary.cost:.2f} USD at {summary.price_per_node_hour:g}/node-hour"),
        ("most pods Pending", _fmt(summary.max_pods_pending)),
        ("most pods ready / nodes", f"{summary.max_pods_ready} / {summary.max_nodes}"),
        ("first node Ready after pods went Pending", _fmt(summary.scale_up_delay_s, " s", 0)),
        ("back to the minimum nodes after the load fell", _minutes(summary.scale_down_s)),
        ("failed requests", _fmt(summary.failed_requests, "", 0)),
        ("simulated", _minutes(duration)),
    ]
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


def render_simulation(run: Run, summary: SimulationSummary) -> str:
    chart = plotly_packed.chart(timeline_figure(run, summary), "timeline")
    title = (summary.preset.name if summary.preset else "") or summary.name or "simulation"
    description = summary.preset.description if summary.preset else ""
    policy = html.escape(json.dumps(summary.policy, indent=2))
    pod = summary.pod
    cluster = summary.cluster
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale simulate: {html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>Simulated autoscaling: {html.escape(title)}</h1>
<p>{html.escape(description)}</p>
{_summary_html(summary)}
<p>Pod: {html.escape(pod["source"])}; M/M/{pod["servers"]}, {pod["capacity_rps"]:.1f} requests/s at most,
{pod["cpu_request_m"]}m CPU. Cluster: {cluster.min_nodes}–{cluster.max_nodes}
{html.escape(cluster.machine_type)} nodes, {cluster.pods_per_node} pods per new node.</p>
{chart}
<details><summary>Policy (the manifest's values)</summary><pre>{policy}</pre></details>
<details><summary>Events ({len(summary.events)})</summary><pre>{html.escape(_events_text(summary.events))}</pre></details>
{plotly_packed.library()}
</body></html>
"""


def _events_text(events: Sequence[SimulationEvent]) -> str:
    return "\n".join(f"{e.time_s:>9.0f} s  {e.kind:<15} {e.detail}" for e in events)


def write_simulation_report(path: str, run: Run, summary: SimulationSummary) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_simulation(run, summary))


def comparison_figure(runs: Sequence[Run]) -> go.Figure:
    figure = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.05,
        subplot_titles=("load", "pods ready", "p95 (ms)"),
    )
    first = True
    for run in runs:
        if first:
            figure.add_trace(
                _line(run, "load", name="load", line_color="#1f77b4", line_shape="hv"), row=1, col=1
            )
            figure.add_hline(
                y=run.settings.sla.limit_ms, line_dash="dash", line_color="#d62728", row=3, col=1
            )
            first = False
        figure.add_trace(
            _line(run, "pods_ready", name=f"{run.name}: pods", line_shape="hv", legendgroup=run.name),
            row=2,
            col=1,
        )
        figure.add_trace(
            _line(run, run.sla_column, log=True, name=f"{run.name}: latency", legendgroup=run.name),
            row=3,
            col=1,
        )
    figure.update_yaxes(type="log", row=3, col=1)
    figure.update_xaxes(title_text="minutes", row=3, col=1)
    figure.update_layout(height=800, title="Policies side by side", hovermode="x unified")
    return figure


def render_comparison(result: PolicyComparison, runs: Sequence[Run]) -> str:
    rows = []
    for row in result.policies:
        css = "best" if row.name == result.best else ("" if row.meets_sla else "miss")
        manifest = html.escape(json.dumps(row.manifest))
        rows.append(
            f"<tr class='{css}'><td><a href='{html.escape(row.name)}/report.html'>{html.escape(row.name)}</a>"
            f"</td><td>{html.escape(row.description)}</td><td>{'yes' if row.meets_sla else 'no'}</td>"
            f"<td>{row.sla_violation_s:.0f}</td><td>{row.cost:.2f}</td><td>{row.node_hours:.1f}</td>"
            f"<td>{row.max_pods_pending}</td><td><code>{manifest}</code></td></tr>"
        )
    chart = plotly_packed.chart(comparison_figure(runs), "comparison")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mlscale simulate --compare</title>
<style>{_STYLE}</style></head>
<body><h1>Autoscaling policies at {html.escape(result.sla)}</h1>
<p style="font-size: 1.2em"><b>{html.escape(result.verdict)}</b></p>
<table><tr><th>policy</th><th></th><th>meets the SLA</th><th>s over</th><th>cost (USD)</th><th>node-hours</th>
<th>most Pending</th><th>HPA manifest values</th></tr>{"".join(rows)}</table>
{chart}
{plotly_packed.library()}
</body></html>
"""


def write_comparison_report(path: str, result: PolicyComparison, runs: Sequence[Run]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render_comparison(result, runs))
