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

from mlscale.capacity.models import SizeMeasurement, fit_capacity, holdout_check, holdout_error
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
    tracking_uri: str | None = None  # the registry behind a models:/ URI (default: env)
    think_time_s: float = 1.0
    # Request rows: a data file (default: the wine data), or rows fitting a model's signature.
    data: str | None = None
    signature_of: str | None = None
    rows_per_request: int = 1
    mix: str | None = None
    step_s: float = 20.0
    precision: float = 0.1
    start_load: float = 4.0
    ceiling: float = 5000.0
    max_steps: int = 14
    node_type: str = "e2-standard-4"
    daemonset_cpu_m: int = 100
    price_per_node_hour: float | None = None
    quick: bool = False


def _measure_fn(
    settings: PlanSettings, url: str, cores: tuple[int, ...] | None, log: list, say, size_label: str
):  # fmt: skip
    sla = settings.sla
    percentile = sla.percentile or "p95"

    def run(load: float, duration_s: float):
        out = os.path.join(settings.out_dir, "steps", size_label, f"{len(log):02d}")
        return run_loadtest(LoadTestSettings(
            host=url, shape=constant(settings.kind, load, duration_s), out_dir=out,
            think_time_s=settings.think_time_s, think="random", spawn_rate=max(load, 10.0),
            sla=sla, cpu_affinity=cores, report=False, data=settings.data,
            signature_of=settings.signature_of, rows_per_request=settings.rows_per_request,
            mix=settings.mix,
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
                    "mean_ms": summary["latency_ms"].get("mean"), "p50_ms": summary["latency_ms"].get("p50"),
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


def _limit_ms(sla) -> float | None:
    percentile = sla.percentile
    return next((b.limit for b in sla.bounds if b.metric == percentile), None)


def _bracket(measurement: dict) -> tuple[dict | None, dict | None]:
    """The step at the capacity found, and the lightest valid step above it that missed."""
    steps = measurement["steps"]
    best = next((s for s in steps if s["load"] == measurement["max_load"] and s["meets"]), None)
    above = [s for s in steps if s["valid"] and not s["meets"] and s["load"] > (best or {"load": 0})["load"]]
    return best, min(above, key=lambda s: s["load"], default=None)


def _at_limit(best: dict | None, failed: dict | None, limit_ms: float | None) -> dict | None:
    """Where the percentile crosses the limit, between the last load that met the SLA
    and the first that missed it (linear in between): the capacity the model predicts,
    free of where the search's steps happened to fall."""
    if not (best and failed and limit_ms) or failed["latency_ms"] is None:
        return None
    low, high = best["latency_ms"], failed["latency_ms"]
    if not low < limit_ms <= high or best["mean_ms"] is None or failed["mean_ms"] is None:
        return None  # the miss was on errors, or the latencies are not in order
    share = (limit_ms - low) / (high - low)

    def between(key: str) -> float:
        return best[key] + share * (failed[key] - best[key])

    return {"load": between("load"), "rps": between("rps"), "mean_ms": between("mean_ms")}


def _steady_rates(rows: list[dict]) -> list[float]:
    """Requests per second while the load held: without the first (users starting)
    and the seconds after the shape ended."""
    held = [r for r in rows if r.get("users") is not None or r.get("target_rps") is not None]
    return [float(r["rps"]) for r in held[1:]]


def run_plan(settings: PlanSettings, say: Callable[[str], None] = print) -> dict:
    """Measure every pod size, then fit and size; writes plan.json and plan.html."""
    if (settings.model_uri is None) == (settings.url is None):
        raise ConfigurationError("Give a model URI (plan starts servers) or --url, not both.")
    os.makedirs(settings.out_dir, exist_ok=True)
    return write_plan(settings, _measure_sizes(settings, say))


def write_plan(settings: PlanSettings, measurements: list[dict]) -> dict:
    """Fit and size from measurements (new, or an earlier plan's) and write the plan."""
    os.makedirs(settings.out_dir, exist_ok=True)
    plan = _assemble(settings, measurements)
    with open(os.path.join(settings.out_dir, "plan.json"), "w") as handle:
        json.dump(plan, handle, indent=2)
    from mlscale.report.plan import write_plan_report

    write_plan_report(os.path.join(settings.out_dir, "plan.html"), plan)
    return plan


def _measure_sizes(settings: PlanSettings, say: Callable[[str], None]) -> list[dict]:
    measurements = []
    for index, spec in enumerate(settings.pods, 1):
        say(f"[{index}/{len(settings.pods)}] pod of {spec.label}")
        generator_cores = None
        if settings.model_uri:
            server_cores = cores_for(spec)
            generator_cores = tuple(c for c in range(os.cpu_count() or 1) if c not in server_cores)
        env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri} if settings.tracking_uri else None
        pod = Pod(settings.model_uri, spec, env=env) if settings.model_uri else nullcontext()
        log: list[dict] = []
        with pod as running:
            url = running.url if settings.model_uri else settings.url
            result = find_max_load(
                _measure_fn(settings, url, generator_cores, log, say,
                            f"cpu{spec.cpu:g}-w{spec.workers}"),
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
            "mean_ms_at_max": best["mean_ms"] if best else None,
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
    return measurements


def read_plan(path: str) -> dict:
    """An earlier plan.json, checked enough to re-size from it."""
    try:
        with open(path, encoding="utf-8") as handle:
            plan = json.load(handle)
        plan["sla"]["expr"], plan["load_model"]["kind"]
        for m in plan["measurements"]:
            m["cpu"], m["workers"], m["max_load"], m["steps"]
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the plan {path}: {exc.strerror}.") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{path} is not a plan written by `mlscale plan` ({type(exc).__name__}: {exc}); "
            "run `mlscale plan` to make one."
        ) from None
    return plan


_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999, "max": 0.9999}
# CPU sizes the model predicts beyond what was measured (pods larger than this machine).
_PREDICTED_CPUS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _fit(settings: PlanSettings, measurements: list[dict]) -> dict:
    """The capacity model through the sizes whose search converged, and its hold-out check.

    A size stopped by the search's ceiling, its step budget or a saturated generator has
    only a lower bound on its capacity, which would bend the fit: it is shown, not fitted.
    """
    percentile = settings.sla.percentile or "p95"
    limit = _limit_ms(settings.sla)
    model: dict = {"holdout_error": None, "fitted_cpus": []}
    for m in measurements:
        m["at_limit"] = _at_limit(*_bracket(m), limit) if limit else None
    converged = [m for m in measurements if m["stopped_by"] == "converged" and m["at_limit"]]
    if not converged or limit is None:
        model["note"] = "no size's search converged on a latency percentile: nothing to fit"
        return model
    sizes = [
        SizeMeasurement(
            cpu=m["cpu"], workers=m["workers"], max_load=m["at_limit"]["load"],
            max_rps=m["at_limit"]["rps"], percentile_ms=limit, mean_ms=m["at_limit"]["mean_ms"],
            lightest_ms=min(s["latency_ms"] for s in m["steps"] if s["latency_ms"] is not None),
        )
        for m in sorted(converged, key=lambda m: m["cpu"])
    ]  # fmt: skip
    options = dict(kind=settings.kind, quantile=_QUANTILES.get(percentile, 0.95), limit_ms=limit,
                   think_time_s=settings.think_time_s)  # fmt: skip
    fitted = fit_capacity(sizes, **options)
    model.update(fitted.to_dict())
    model["fitted_cpus"] = [s.cpu for s in sizes]
    model["predicted"] = [
        {"cpu": cpu, "max_rps": fitted.max_rps(cpu), "max_load": fitted.max_load(cpu)}
        for cpu in sorted(set(_PREDICTED_CPUS) | {s.cpu for s in sizes})
    ]
    if len(sizes) >= 3:
        # The middle size, fitted from the smaller and the larger: an interpolation,
        # which is what the model is used for between measured sizes.
        middle = len(sizes) // 2
        predicted, error = holdout_check(sizes, middle, **options)
        model.update(
            holdout_cpu=sizes[middle].cpu, holdout_predicted_load=predicted,
            holdout_measured_load=sizes[middle].max_load, holdout_error=error,
            holdout_throughput_error=holdout_error(
                [s.cpu for s in sizes], [s.max_rps for s in sizes], middle
            ),
        )  # fmt: skip
    else:
        model["note"] = "a hold-out check needs three sizes whose search converged"
    return model


def _assemble(settings: PlanSettings, measurements: list[dict]) -> dict:
    usable = [m for m in measurements if m["max_load"]]
    model = _fit(settings, measurements)
    # Size with the pod that serves the most per core.
    best = max(usable, key=lambda m: m["max_load"] / m["cpu"], default=None)
    sizing = None
    if best is not None:
        sizing = size(
            target=settings.target, target_kind=settings.kind, capacity_per_pod=best["max_load"],
            cpu_per_pod=best["cpu"], workers_per_pod=best["workers"],
            sla_text=settings.sla.describe(), node_type=settings.node_type,
            daemonset_cpu_m=settings.daemonset_cpu_m,
            price_per_node_hour=settings.price_per_node_hour,
        ).to_dict()  # fmt: skip
    return {
        "sla": {
            "expr": settings.sla.expr,
            "percentile": settings.sla.percentile,
            "limit_ms": next((b.limit for b in settings.sla.bounds if b.metric != "error_rate"), None),
        },
        "load_model": {"kind": settings.kind, "think_time_s": settings.think_time_s,
                       "rows_per_request": settings.rows_per_request, "mix": settings.mix},
        "quick": settings.quick,
        "measurements": measurements,
        "model": model,
        "sizing": sizing,
    }
