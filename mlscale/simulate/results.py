"""From a run's columns to the numbers people compare: SLA seconds, node-hours,
cost, the delays the reference measured by hand; and the files.

- ``timeseries.csv``: one row per tick (``engine.COLUMNS``).
- ``summary.json``: the totals, the measured delays and the events.
- ``report.html``: written by ``mlscale.report.simulate``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mlscale.report.simulate import write_simulation_report
from mlscale.schemas.simulation import (
    SimulatedCluster,
    SimulatedSla,
    SimulationEvent,
    SimulationSummary,
)
from mlscale.simulate.cluster import NodeShape
from mlscale.simulate.engine import Run
from mlscale.simulate.profile import load_fall_s
from mlscale.simulate.settings import HpaSettings, SimSettings


def sla_violations(run: Run) -> np.ndarray:
    """Ticks that miss the SLA: the percentile over the limit, or load with no pod to serve it."""
    latency = run.columns[run.sla_column]
    load = run.columns["load"]
    with np.errstate(invalid="ignore"):
        missed: np.ndarray = (load > 0) & ((latency > run.settings.sla.limit_ms) | np.isnan(latency))
    return missed


def _intervals(mask: np.ndarray, tick_s: float) -> list[tuple[float, float]]:
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [(float(a * tick_s), float(b * tick_s)) for a, b in zip(starts, ends, strict=False)]


def scale_up_delay_s(run: Run) -> float | None:
    """From the first pod going Pending to the first node Ready after it (the
    reference: about a minute)."""
    pending = next((e["time_s"] for e in run.events if e["kind"] == "pods_pending"), None)
    if pending is None:
        return None
    ready = next(
        (e["time_s"] for e in run.events if e["kind"] == "node_ready" and e["time_s"] >= pending), None
    )
    return None if ready is None else ready - pending


def scale_down_s(run: Run) -> tuple[float | None, float | None]:
    """(when the load fell, how long until the nodes were back at the pool's minimum):
    the reference's "back to three nodes in about 15 minutes"."""
    dt = run.settings.tick_s
    fall = load_fall_s(run.columns["load"], dt)
    if fall is None:
        return None, None
    billed = run.columns["nodes_billed"]
    start = round(fall / dt)
    minimum = run.settings.pool.min_nodes
    if start >= len(billed) or (billed[start:].max() <= minimum and billed[start] <= minimum):
        return fall, None  # never above the minimum after the fall: nothing to measure
    back = np.flatnonzero(billed[start:] <= minimum)
    return fall, (float(back[0] * dt) if len(back) else None)


def summarize(run: Run) -> SimulationSummary:
    """The run's totals, delays and events: summary.json's content."""
    settings, columns = run.settings, run.columns
    dt = settings.tick_s
    violations = sla_violations(run)
    node_hours = float(columns["nodes_billed"].sum() * dt / 3600)
    price = settings.pool.hourly_price
    fall, down = scale_down_s(run)
    events = list(run.events)
    if fall is not None:
        events.append({"time_s": fall, "kind": "load_fall", "detail": "the load fell below half its peak"})
    for start, end in _intervals(violations, dt):
        events.append(
            {
                "time_s": start,
                "kind": "sla_violation",
                "detail": f"{settings.sla.expr} missed for {end - start:.0f} s",
            }
        )
    events.sort(key=lambda e: e["time_s"])
    latency = columns[run.sla_column]
    served = columns["rps"]
    hpa = settings.hpa if settings.manual is None else None
    return SimulationSummary(
        name=run.name,
        duration_s=float(len(columns["time_s"]) * dt),
        tick_s=dt,
        load_kind=run.kind,
        sla=SimulatedSla(
            expr=settings.sla.expr, percentile=settings.sla.percentile, limit_ms=settings.sla.limit_ms
        ),
        sla_violation_s=float(violations.sum() * dt),
        sla_met_share=float(1 - violations.mean()) if len(violations) else 1.0,
        node_hours=node_hours,
        price_per_node_hour=price,
        cost=node_hours * price,
        pod_hours=float(columns["pods_ready"].sum() * dt / 3600),
        max_pods_pending=int(columns["pods_pending"].max()),
        max_pods_ready=int(columns["pods_ready"].max()),
        max_nodes=int(columns["nodes"].max()),
        requests=float(served.sum() * dt),
        failed_requests=float(columns["failed_rps"].sum() * dt),
        worst_latency_ms=_finite_max(latency),
        first_pending_s=next((e["time_s"] for e in run.events if e["kind"] == "pods_pending"), None),
        scale_up_delay_s=scale_up_delay_s(run),
        load_fall_s=fall,
        scale_down_s=down,
        policy=_policy(settings, hpa),
        cluster=SimulatedCluster(
            machine_type=settings.pool.machine_type,
            min_nodes=settings.pool.min_nodes,
            max_nodes=settings.pool.max_nodes,
            pods_per_node=_pods_per_node(settings),
            cluster_autoscaler=settings.autoscaler_enabled,
        ),
        pod=run.model.to_dict()
        | {
            "cpu_request_m": settings.pod.cpu_request_m,
            "memory_request_mib": settings.pod.memory_request_mib,
        },
        events=tuple(SimulationEvent.model_validate(e) for e in events),
    )


def _finite_max(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if len(finite) else None


def _pods_per_node(settings: SimSettings) -> int:
    return NodeShape.of(settings.pool, settings.pod).pods_fit


def _policy(settings: SimSettings, hpa: HpaSettings | None) -> dict[str, Any]:
    if settings.manual is not None:
        return {
            "kind": "manual",
            "replicas": [list(step) for step in settings.manual.replicas],
            "nodes": [list(step) for step in settings.manual.nodes],
        }
    if hpa is None:
        return {"kind": "none", "replicas": settings.start_replicas()}
    return {
        "kind": "hpa",
        "metric": hpa.metric,
        "target": hpa.target,
        "legacy": hpa.behavior is None,
        "manifest": hpa.manifest(),
    }


def write_timeseries(path: str, run: Run) -> None:
    """One row per tick; counts as integers, the rest to 6 significant digits, empty
    where there is no value (no pod serving).

    Each row is one %-format of a row template: a quarter of the time a
    DataFrame's to_csv takes (it formats every value through Python calls of its
    own), without importing pandas, and the same text to the byte."""
    names = list(run.columns)
    template = ",".join("%d" if name in _INTEGER_COLUMNS else "%.6g" for name in names) + "\n"
    values = [
        run.columns[name].astype(np.int64).tolist()
        if name in _INTEGER_COLUMNS
        else run.columns[name].tolist()
        for name in names
    ]
    # NaN prints as "nan": emptied. time_s comes first and is never NaN, so every
    # NaN field follows a comma.
    body = "".join([template % row for row in zip(*values, strict=False)]).replace(",nan", ",")
    with open(path, "w", newline="") as handle:
        handle.write(",".join(names) + "\n")
        handle.write(body)


_INTEGER_COLUMNS = (
    "pods_desired",
    "pods_ready",
    "pods_pending",
    "pods_starting",
    "nodes",
    "nodes_provisioning",
    "nodes_billed",
)


def write_outputs(
    out_dir: str, run: Run, summary: SimulationSummary | None = None, *, report: bool = True
) -> SimulationSummary:
    """timeseries.csv, summary.json (through its schema) and report.html in ``out_dir``;
    returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    summary = summary or summarize(run)
    write_timeseries(os.path.join(out_dir, "timeseries.csv"), run)
    with open(os.path.join(out_dir, "summary.json"), "w") as handle:
        handle.write(summary.to_json())
    if report:
        write_simulation_report(os.path.join(out_dir, "report.html"), run, summary)
    return summary
