"""``mlscale plan``: measure the capacity of each pod size at the SLA, fit, size.

For each pod size, a model server is started with that much CPU (see
``pods``), and the load is searched (``search``) with short load tests pinned
to the other cores; each step is a real ``mlscale loadtest``. The maxima feed
the throughput model (``models``) and the sizing (``sizing``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

from mlscale.capacity.models import fit_usl, holdout_error
from mlscale.capacity.pods import Pod, PodSpec, cores_for
from mlscale.capacity.search import Step, find_max_load, stable
from mlscale.capacity.sizing import size
from mlscale.errors import ConfigurationError
from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.loadtest.sla import Sla


@dataclass(frozen=True, kw_only=True)
class PlanSettings:
    sla: Sla
    kind: str  # "users" (closed loop with think time) or "rps" (open loop)
    target: float
    out_dir: str
    pods: tuple[PodSpec, ...]
    model_uri: str | None = None  # plan starts its own servers...
    url: str | None = None  # ...or measures a running one (one size: as it is)
    think_time_s: float = 1.0
    # Request rows: a data file (default: the wine data), or rows fitting a model's signature.
    data: str | None = None
    signature_of: str | None = None
    step_s: float = 20.0
    precision: float = 0.1
    start_load: float = 4.0
    ceiling: float = 5000.0
    max_steps: int = 14
    node_type: str = "e2-standard-4"
    daemonset_cpu_m: int = 100
    price_per_node_hour: float | None = None
    quick: bool = False


def _measure_fn(settings: PlanSettings, url: str, cores: tuple[int, ...] | None, log: list, say):
    sla = settings.sla
    percentile = sla.percentile or "p95"

    def run(load: float, duration_s: float):
        out = os.path.join(settings.out_dir, "steps", f"{len(log):02d}")
        return run_loadtest(LoadTestSettings(
            host=url, shape=constant(settings.kind, load, duration_s), out_dir=out,
            think_time_s=settings.think_time_s, think="random", spawn_rate=max(load, 10.0),
            sla=sla, cpu_affinity=cores, report=False, data=settings.data,
            signature_of=settings.signature_of,
        ))  # fmt: skip

    def measure(load: float) -> Step:
        result = run(load, settings.step_s)
        steady = _steady_rates(result.rows)
        if not stable(steady) and not settings.quick:
            say(f"  {load:g} {settings.kind}: throughput not steady yet; measuring twice as long")
            result = run(load, settings.step_s * 2)
            steady = _steady_rates(result.rows)
        summary = result.summary
        step = Step(load, summary["latency_ms"][percentile], summary["error_rate"],
                    meets=summary["sla"]["met"], valid=summary["valid"])  # fmt: skip
        log.append({"load": load, "rps": summary["rps"], "latency_ms": step.latency_ms,
                    "error_rate": step.error_rate, "meets": step.meets, "valid": step.valid,
                    "stable": stable(steady), "requests": summary["requests"]})
        value = "–" if step.latency_ms is None else f"{step.latency_ms:.1f} ms"
        left = (settings.max_steps - len(log)) * (settings.step_s + 4)
        verdict = "meets" if step.meets else "misses"
        say(f"  {load:g} {settings.kind}: {percentile} {value}, {summary['rps']:.0f} req/s, "
            f"{verdict} the SLA  [step {len(log)}, at most ~{left:.0f} s left for this size]")  # fmt: skip
        if not step.valid:
            say(f"  not a valid measurement: {'; '.join(summary['problems'])}")
        return step

    return measure


def _steady_rates(rows: list[dict]) -> list[float]:
    """Requests per second while the load held: without the first (users starting)
    and the seconds after the shape ended."""
    held = [r for r in rows if r.get("users") is not None or r.get("target_rps") is not None]
    return [float(r["rps"]) for r in held[1:]]


def run_plan(settings: PlanSettings, say: Callable[[str], None] = print) -> dict:
    if (settings.model_uri is None) == (settings.url is None):
        raise ConfigurationError("Give a model URI (plan starts servers) or --url, not both.")
    os.makedirs(settings.out_dir, exist_ok=True)
    measurements = []
    for index, spec in enumerate(settings.pods, 1):
        say(f"[{index}/{len(settings.pods)}] pod of {spec.label}")
        generator_cores = None
        if settings.model_uri:
            server_cores = cores_for(spec)
            generator_cores = tuple(c for c in range(os.cpu_count() or 1) if c not in server_cores)
        pod = Pod(settings.model_uri, spec) if settings.model_uri else nullcontext()
        log: list[dict] = []
        with pod as running:
            url = running.url if settings.model_uri else settings.url
            result = find_max_load(
                _measure_fn(settings, url, generator_cores, log, say),
                start=settings.start_load, ceiling=settings.ceiling,
                precision=settings.precision, max_steps=settings.max_steps,
            )  # fmt: skip
        best = next((s for s in log if s["load"] == result.max_load and s["meets"]), None)
        measurements.append({
            "cpu": spec.cpu, "workers": spec.workers,
            "max_users": result.max_load if settings.kind == "users" else None,
            "max_load": result.max_load,
            "max_rps": best["rps"] if best else 0.0,
            "p95_ms_at_max": best["latency_ms"] if best else None,
            "stopped_by": result.stopped_by,
            "steps": log,
        })  # fmt: skip
        note = {
            "converged": "",
            "ceiling": " (at least: the search's ceiling)",
            "invalid": " (at least: the next step was not a valid measurement, see above)",
            "max_steps": " (at least: the search ran out of steps)",
            "floor": " (none: even the smallest load misses the SLA)",
        }[result.stopped_by]
        say(f"  capacity: {result.max_load} {settings.kind} at {settings.sla.expr}{note}")
    plan = _assemble(settings, measurements)
    with open(os.path.join(settings.out_dir, "plan.json"), "w") as handle:
        json.dump(plan, handle, indent=2)
    from mlscale.report.plan import write_plan_report

    write_plan_report(os.path.join(settings.out_dir, "plan.html"), plan)
    return plan


def _assemble(settings: PlanSettings, measurements: list[dict]) -> dict:
    usable = [m for m in measurements if m["max_load"]]
    model: dict = {"holdout_error": None}
    if usable:
        cores = [m["cpu"] for m in usable]
        rps = [m["max_rps"] for m in usable]
        model.update(fit_usl(cores, rps).to_dict())
        if len(usable) >= 3:
            middle = len(usable) // 2
            model["holdout_error"] = holdout_error(cores, rps, middle)
            model["holdout_cpu"] = cores[middle]
    # Size with the pod that serves the most per core.
    best = max(usable, key=lambda m: m["max_load"] / m["cpu"], default=None)
    sizing = None
    if best is not None:
        sizing = size(
            target=settings.target, target_kind=settings.kind, capacity_per_pod=best["max_load"],
            cpu_per_pod=best["cpu"], workers_per_pod=best["workers"],
            sla_text=settings.sla.expr, node_type=settings.node_type,
            daemonset_cpu_m=settings.daemonset_cpu_m,
            price_per_node_hour=settings.price_per_node_hour,
        ).to_dict()  # fmt: skip
    return {
        "sla": {
            "expr": settings.sla.expr,
            "percentile": settings.sla.percentile,
            "limit_ms": next((b.limit for b in settings.sla.bounds if b.metric != "error_rate"), None),
        },
        "load_model": {"kind": settings.kind, "think_time_s": settings.think_time_s},
        "quick": settings.quick,
        "measurements": measurements,
        "model": model,
        "sizing": sizing,
    }
