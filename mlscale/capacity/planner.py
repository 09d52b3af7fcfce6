"""``mlscale plan``: measure the capacity of each pod size at the SLA, fit, size.

For each pod size, a model server is started with that much CPU (see
``pods``), and the load is searched (``search``) with short load tests pinned
to the other cores; each step is a real ``mlscale loadtest``. The maxima feed
the throughput model (``models``) and the sizing (``sizing``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from mlscale.capacity.models import (
    QuotaThroughput,
    SizeMeasurement,
    fit_capacity,
    holdout_check,
    holdout_error,
)
from mlscale.capacity.pods import Pod, PodSpec, check_measurable, cores_for, quota_supported
from mlscale.capacity.search import Step, expected_rate, find_max_load, min_requests, stable, step_duration
from mlscale.capacity.sizing import NODE_TYPES, check_node, pod_memory_mib, size
from mlscale.errors import ConfigurationError
from mlscale.loadtest.runner import LoadTestResult, LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.loadtest.sla import Sla
from mlscale.report.plan import write_plan_report
from mlscale.schemas.plan import (
    AtLimit,
    CapacityFit,
    LoadModel,
    Measurement,
    Plan,
    PlanFileError,
    PlanSizing,
    PlanSla,
    PlanStep,
    read_plan_file,
    write_plan_file,
)


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
    # High enough never to be what stops a search: a saturated generator or a missed
    # SLA does (a 1-CPU pod of the reference model carries about 8,000 users).
    ceiling: float = 200_000.0
    max_steps: int = 14
    node_type: str = "e2-standard-4"
    daemonset_cpu_m: int = 100
    price_per_node_hour: float | None = None
    quick: bool = False
    # The scoring protocol the load tests speak: its path and body format.
    protocol: str = "mlflow"
    path: str = "/invocations"
    body_format: str = "split"


def _measure_fn(
    settings: PlanSettings,
    url: str,
    cores: tuple[int, ...] | None,
    log: list[PlanStep],
    say: Callable[[str], None],
    size_label: str,
    pod_cpu: float | None,
) -> Callable[[float], Step]:
    """One step of the search: a load test at one load, re-run longer when its throughput
    is not steady or it holds too few requests for the SLA's percentile.

    ``pod_cpu``: the CPU of a pod plan started itself, to read the server's CPU use as a
    share of it (None for --url: that server's CPU is not the pod's)."""
    sla = settings.sla
    percentile = sla.percentile or "p95"
    needed = min_requests(_QUANTILES.get(percentile, 0.95))
    longest_s = settings.step_s * 4

    def run(load: float, duration_s: float) -> LoadTestResult:
        out = os.path.join(settings.out_dir, "steps", size_label, f"{len(log):02d}")
        return run_loadtest(
            LoadTestSettings(
                host=url,
                path=settings.path,
                body_format=settings.body_format,
                shape=constant(settings.kind, load, duration_s),
                out_dir=out,
                think_time_s=settings.think_time_s,
                think="random",
                spawn_rate=max(load, 10.0),
                sla=sla,
                cpu_affinity=cores,
                report=False,
                data=settings.data,
                # One Locust worker per generator core (Locust's own master and workers):
                # one process drives one core at most.
                workers=len(cores) if cores and len(cores) > 1 else 0,
                signature_of=settings.signature_of,
                rows_per_request=settings.rows_per_request,
                mix=settings.mix,
            )
        )

    def measure(load: float) -> Step:
        # A light load cannot hold enough requests in a short step: its step is longer
        # from the start (users send at most one request per think time).
        most_rate: float | None
        if settings.kind == "rps":
            most_rate = load
        else:
            most_rate = load / settings.think_time_s if settings.think_time_s > 0 else None
        earlier = [(float(s.load), s.rps) for s in log]
        duration_s = step_duration(
            settings.step_s, needed, expected_rate(load, earlier, most_rate), longest_s
        )
        result = run(load, duration_s)
        steady = _steady_rates(result.rows)
        summary = result.summary
        unsteady = not stable(steady) and not settings.quick
        few = summary.requests < needed
        again_s = settings.step_s * 2 if unsteady else 0.0
        if few:
            again_s = max(again_s, step_duration(duration_s, needed, summary.rps, longest_s))
        if again_s > duration_s:
            why = (
                "throughput not steady yet"
                if unsteady
                else f"{summary.requests} requests, fewer than the {needed} a {percentile} needs"
            )
            say(f"  {load:g} {settings.kind}: {why}; measuring again for {again_s:.0f} s")
            result = run(load, again_s)
            steady = _steady_rates(result.rows)
            summary = result.summary
        step = Step(
            load,
            summary.latency_ms[percentile],
            summary.error_rate,
            meets=summary.sla is not None and summary.sla.met,
            valid=summary.valid,
        )
        cpu_cores, rss_peak = _server_use(result.rows)
        log.append(
            PlanStep(
                load=load,
                rps=summary.rps,
                latency_ms=step.latency_ms,
                mean_ms=summary.latency_ms.get("mean"),
                p50_ms=summary.latency_ms.get("p50"),
                error_rate=step.error_rate,
                meets=step.meets,
                valid=step.valid,
                stable=stable(steady),
                requests=summary.requests,
                min_requests=needed,
                enough_requests=summary.requests >= needed,
                duration_s=summary.duration_s,
                server_cpu=cpu_cores,
                server_cpu_share=cpu_cores / pod_cpu if pod_cpu and cpu_cores is not None else None,
                server_rss_mb_peak=rss_peak,
            )
        )
        value = "–" if step.latency_ms is None else f"{step.latency_ms:.1f} ms"
        left = (settings.max_steps - len(log)) * (settings.step_s + 4)
        verdict = "meets" if step.meets else "misses"
        say(
            f"  {load:g} {settings.kind}: {percentile} {value}, {summary.rps:.0f} req/s, "
            f"{verdict} the SLA  [step {len(log)}, at most ~{left:.0f} s left for this size]"
        )
        if not step.valid:
            say(f"  not a valid measurement: {'; '.join(summary.problems)}")
        if summary.requests < needed:
            say(
                f"  only {summary.requests} requests even in {summary.duration_s:.0f} s: this "
                f"{percentile} is rough (a {percentile} needs {needed}); flagged in plan.json"
            )
        return step

    return measure


def _server_use(rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    """The server's mean CPU (cores) while the load held, and its peak resident memory (MB);
    None where they were not measured (a remote server)."""
    held = [r for r in rows if r.get("users") is not None or r.get("target_rps") is not None][1:]
    cpu = [r["server_cpu"] for r in held if r.get("server_cpu") is not None]
    rss = [r["server_rss_mb"] for r in rows if r.get("server_rss_mb") is not None]
    return (sum(cpu) / len(cpu) if cpu else None), (max(rss) if rss else None)


def _far_below(limit_ms: float | None) -> Callable[[Step], bool] | None:
    """Steps whose percentile is under a tenth of the limit: far from capacity, where
    the search may grow four-fold (latency stays flat until close to capacity)."""
    if limit_ms is None:
        return None
    return lambda step: step.latency_ms is not None and step.latency_ms < limit_ms / 10


def _limit_ms(sla: Sla) -> float | None:
    percentile = sla.percentile
    return next((b.limit for b in sla.bounds if b.metric == percentile), None)


def _bracket(measurement: Measurement) -> tuple[PlanStep | None, PlanStep | None]:
    """The step at the capacity found, and the lightest valid step above it that missed."""
    steps = measurement.steps
    best = next((s for s in steps if s.load == measurement.max_load and s.meets), None)
    floor = best.load if best else 0
    above = [s for s in steps if s.valid and not s.meets and s.load > floor]
    return best, min(above, key=lambda s: s.load, default=None)


def _at_limit(best: PlanStep | None, failed: PlanStep | None, limit_ms: float | None) -> AtLimit | None:
    """Where the percentile crosses the limit, between the last load that met the SLA
    and the first that missed it (linear in between): the capacity the model predicts,
    free of where the search's steps happened to fall."""
    if not (best and failed and limit_ms) or failed.latency_ms is None or best.latency_ms is None:
        return None
    low, high = best.latency_ms, failed.latency_ms
    if not low < limit_ms <= high or best.mean_ms is None or failed.mean_ms is None:
        return None  # the miss was on errors, or the latencies are not in order
    share = (limit_ms - low) / (high - low)

    def between(a: float, b: float) -> float:
        return a + share * (b - a)

    return AtLimit(
        load=between(best.load, failed.load),
        rps=between(best.rps, failed.rps),
        mean_ms=between(best.mean_ms, failed.mean_ms),
    )


def _steady_rates(rows: list[dict[str, Any]]) -> list[float]:
    """Requests per second while the load held: without the first (users starting)
    and the seconds after the shape ended."""
    held = [r for r in rows if r.get("users") is not None or r.get("target_rps") is not None]
    return [float(r["rps"]) for r in held[1:]]


def check_plan(settings: PlanSettings, *, available_cores: int, quota: bool) -> None:
    """Everything a plan can get wrong that is known before it measures, checked before
    the first step: a size this machine cannot run, or a node type no pod fits, must not
    cost the measurements of the other sizes. ConfigurationError naming the flag."""
    if (settings.model_uri is None) == (settings.url is None):
        raise ConfigurationError(
            "Give a model URI (-m: plan starts its servers) or --url (a running server), not both."
        )
    if settings.url and len(settings.pods) > 1:
        raise ConfigurationError(
            f"--url measures the running server as it is, so it takes one size, not {len(settings.pods)}: "
            "give the --cpus and --workers-per-pod that describe that server, or give -m and "
            "let plan start a server of each size."
        )
    if not (math.isfinite(settings.think_time_s) and settings.think_time_s >= 0):
        raise ConfigurationError(f"--think-time must be 0 or more seconds, not {settings.think_time_s!r}.")
    if not (math.isfinite(settings.start_load) and 1 <= settings.start_load <= settings.ceiling):
        raise ConfigurationError(
            f"--start-load must be from 1 to {settings.ceiling:g}, not {settings.start_load!r}."
        )
    if settings.model_uri:
        for spec in settings.pods:
            check_measurable(spec, available=available_cores, quota=quota)
    check_sizing(settings, settings.pods)


def check_sizing(settings: PlanSettings, pods: Sequence[PodSpec]) -> None:
    """The target, price, node type and DaemonSets, and that each of ``pods`` (sizes with
    ``cpu`` and ``workers``) fits a node with the memory it would get unmeasured."""
    flag = f"--target-{settings.kind}"
    if not (math.isfinite(settings.target) and settings.target > 0):
        raise ConfigurationError(f"{flag} must be a positive number, not {settings.target!r}.")
    price = settings.price_per_node_hour
    if price is not None and not (math.isfinite(price) and price > 0):
        raise ConfigurationError(f"--price-per-node-hour must be a positive number, not {price!r}.")
    if settings.daemonset_cpu_m < 0:
        raise ConfigurationError(
            f"--daemonset-cpu must be 0 or more millicores, not {settings.daemonset_cpu_m}."
        )
    if settings.node_type not in NODE_TYPES:
        raise ConfigurationError(
            f"--node-type {settings.node_type!r} is unknown; known: {', '.join(NODE_TYPES)}."
        )
    for spec in pods:
        check_node(
            settings.node_type,
            cpu_per_pod=spec.cpu,
            memory_per_pod_mib=pod_memory_mib(None, spec.workers)[0],
            daemonset_cpu_m=settings.daemonset_cpu_m,
        )


def run_plan(settings: PlanSettings, say: Callable[[str], None] = print) -> Plan:
    """Measure every pod size, then fit and size; writes plan.json and plan.html.

    When a size fails (or Ctrl-C) after others were measured, plan.json is still
    written with what was measured, no sizing, and the reason; then the error goes on."""
    check_plan(settings, available_cores=os.cpu_count() or 1, quota=quota_supported())
    os.makedirs(settings.out_dir, exist_ok=True)
    measurements: list[Measurement] = []
    try:
        _measure_sizes(settings, say, measurements)
    except BaseException as exc:
        if measurements:
            reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0]
            try:
                write_plan(
                    settings,
                    measurements,
                    stopped=f"the plan stopped after "
                    f"{len(measurements)} of {len(settings.pods)} sizes: {reason}",
                )
                say(
                    f"What was measured is in {settings.out_dir}/plan.json (no sizing): re-size "
                    "from it with --from-plan."
                )
            except Exception:
                pass
        raise
    return write_plan(settings, measurements)


def write_plan(
    settings: PlanSettings, measurements: Sequence[Measurement], stopped: str | None = None
) -> Plan:
    """Fit and size from measurements (new, or an earlier plan's) and write the plan:
    plan.json through its schema, and plan.html.

    ``stopped``: why the measuring ended early; the plan then has no sizing."""
    os.makedirs(settings.out_dir, exist_ok=True)
    plan = _assemble(settings, measurements)
    if stopped:
        plan = plan.model_copy(update={"sizing": None, "sizing_error": stopped, "incomplete": True})
    write_plan_file(os.path.join(settings.out_dir, "plan.json"), plan)
    write_plan_report(os.path.join(settings.out_dir, "plan.html"), plan, _throughput_curve(plan))
    return plan


def _throughput_curve(plan: Plan) -> list[tuple[float, float]]:
    """The fitted throughput at 50 sizes up to twice the largest measured (or the
    largest predicted): the report draws it, and must not fit anything itself."""
    points = [m.cpu for m in plan.measurements if m.max_load]
    if plan.model.lam is None or not points:
        return []
    law = QuotaThroughput.from_fit(plan.model)
    predicted = [p.cpu for p in plan.model.predicted or ()]
    top = max(max(points) * 2, max(predicted, default=0))
    return [(top * i / 50, law.throughput(top * i / 50)) for i in range(1, 51)]


def _measure_sizes(
    settings: PlanSettings, say: Callable[[str], None], measurements: list[Measurement]
) -> None:
    """Appends to ``measurements`` as each size finishes, so a failure keeps the others."""
    for index, spec in enumerate(settings.pods, 1):
        say(f"[{index}/{len(settings.pods)}] pod of {spec.label}")
        generator_cores = None
        if settings.model_uri:
            server_cores = cores_for(spec)
            generator_cores = tuple(c for c in range(os.cpu_count() or 1) if c not in server_cores)
        env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri} if settings.tracking_uri else None
        pod: AbstractContextManager[Pod | None] = (
            Pod(settings.model_uri, spec, env=env) if settings.model_uri else nullcontext()
        )
        log: list[PlanStep] = []
        with pod as running:
            url = running.url if running is not None else settings.url
            assert url is not None  # check_plan: a model URI or a URL
            result = find_max_load(
                _measure_fn(
                    settings,
                    url,
                    generator_cores,
                    log,
                    say,
                    f"cpu{spec.cpu:g}-w{spec.workers}",
                    spec.cpu if settings.model_uri else None,
                ),
                start=settings.start_load,
                ceiling=settings.ceiling,
                precision=settings.precision,
                max_steps=settings.max_steps,
                far_below=_far_below(_limit_ms(settings.sla)),
            )
        best = next((s for s in log if s.load == result.max_load and s.meets), None)
        peaks = [s.server_rss_mb_peak for s in log if s.server_rss_mb_peak is not None]
        thin = [s.load for s in log if not s.enough_requests]
        measurements.append(
            Measurement(
                cpu=spec.cpu,
                workers=spec.workers,
                max_users=result.max_load if settings.kind == "users" else None,
                max_load=result.max_load,
                max_rps=best.rps if best else 0.0,
                p95_ms_at_max=best.latency_ms if best else None,
                mean_ms_at_max=best.mean_ms if best else None,
                stopped_by=result.stopped_by,
                peak_rss_mb=max(peaks) if peaks else None,
                few_requests_at=tuple(thin),
                steps=tuple(log),
            )
        )
        note = {
            "converged": "",
            "ceiling": " (at least: the search's ceiling)",
            "invalid": " (at least: the next step was not a valid measurement, see above)",
            "max_steps": " (at least: the search ran out of steps)",
            "floor": " (none: even the smallest load misses the SLA)",
        }[result.stopped_by]
        if thin:
            note += f"; steps at {', '.join(f'{x:g}' for x in thin)} held too few requests for the percentile"
        say(f"  capacity: {result.max_load} {settings.kind} at {settings.sla.expr}{note}")


def read_plan(path: str) -> Plan:
    """An earlier plan.json, to re-size from its measurements: through the schema, so a
    damaged plan is a ConfigurationError naming the field, never a traceback."""
    if not os.path.exists(path):
        raise PlanFileError(f"Cannot read the plan {path}: No such file or directory.")
    return read_plan_file(path)


_QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99, "p999": 0.999, "max": 0.9999}
# CPU sizes the model predicts beyond what was measured (pods larger than this machine).
_PREDICTED_CPUS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _fit(
    settings: PlanSettings, measurements: Sequence[Measurement]
) -> tuple[CapacityFit, list[Measurement]]:
    """The capacity model through the sizes whose search converged, and its hold-out check;
    and the measurements with where each crosses the limit (``at_limit``).

    A size stopped by the search's ceiling, its step budget or a saturated generator has
    only a lower bound on its capacity, which would bend the fit: it is shown, not fitted.
    """
    percentile = settings.sla.percentile or "p95"
    limit = _limit_ms(settings.sla)
    # Key order as plan.json has always had it: the hold-out error first.
    model: dict[str, Any] = {"holdout_error": None, "fitted_cpus": []}
    measurements = [
        m.model_copy(update={"at_limit": _at_limit(*_bracket(m), limit) if limit else None})
        for m in measurements
    ]
    converged = [m for m in measurements if m.stopped_by == "converged" and m.at_limit]
    if not converged or limit is None:
        model["note"] = "no size's search converged on a latency percentile: nothing to fit"
        return CapacityFit.model_validate(model), measurements
    sizes = [
        SizeMeasurement(
            cpu=m.cpu,
            workers=m.workers,
            max_load=m.at_limit.load,
            max_rps=m.at_limit.rps,
            percentile_ms=limit,
            mean_ms=m.at_limit.mean_ms,
            lightest_ms=min(s.latency_ms for s in m.steps if s.latency_ms is not None),
        )
        for m in sorted(converged, key=lambda m: m.cpu)
        if m.at_limit is not None
    ]
    quantile = _QUANTILES.get(percentile, 0.95)
    fitted = fit_capacity(
        sizes, kind=settings.kind, quantile=quantile, limit_ms=limit, think_time_s=settings.think_time_s
    )
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
        predicted, error = holdout_check(
            sizes,
            middle,
            kind=settings.kind,
            quantile=quantile,
            limit_ms=limit,
            think_time_s=settings.think_time_s,
        )
        model.update(
            holdout_cpu=sizes[middle].cpu,
            holdout_predicted_load=predicted,
            holdout_measured_load=sizes[middle].max_load,
            holdout_error=error,
            holdout_throughput_error=holdout_error(
                [s.cpu for s in sizes], [s.max_rps for s in sizes], middle
            ),
        )
    else:
        model.update(_step_holdout(max(converged, key=lambda m: m.cpu), limit))
    return CapacityFit.model_validate(model), measurements


def _step_holdout(measurement: Measurement, limit_ms: float) -> dict[str, Any]:
    """With fewer than three sizes, the hold-out is a load step: the capacity is read
    again without the step it rests on (the last load that met the SLA), from the
    next lighter one, and compared with the capacity read from all the steps."""
    best, failed = _bracket(measurement)
    if best is None or measurement.at_limit is None:
        return {"note": "a hold-out check needs a second load that met the SLA below the capacity"}
    lighter = [s for s in measurement.steps if s.valid and s.meets and s.load < best.load]
    if not lighter:
        return {"note": "a hold-out check needs a second load that met the SLA below the capacity"}
    without = _at_limit(max(lighter, key=lambda s: s.load), failed, limit_ms)
    if without is None:
        return {"note": "the capacity cannot be read without its nearest step"}
    measured = measurement.at_limit.load
    return {
        "holdout": "step",
        "holdout_cpu": measurement.cpu,
        "holdout_step_load": best.load,
        "holdout_predicted_load": without.load,
        "holdout_measured_load": measured,
        "holdout_error": abs(without.load - measured) / measured,
    }


def _assemble(settings: PlanSettings, measurements: Sequence[Measurement]) -> Plan:
    """The plan of ``measurements``: fitted and sized."""
    model, measurements = _fit(settings, measurements)
    usable = [m for m in measurements if m.max_load]
    # Size with the pod that serves the most per core.
    best = max(usable, key=lambda m: (m.max_load or 0) / m.cpu, default=None)
    sizing: PlanSizing | None = None
    sizing_error = None
    if best is None:
        sizing_error = "no pod size met the SLA at any load measured"
    else:
        # The pod's CPU share at each load it was measured at (plans before it was
        # recorded, and --url, have none: the HPA target falls back to 80 %).
        cpu_by_load = [
            (float(s.load), s.server_cpu_share)
            for s in best.steps
            if s.valid and s.server_cpu_share is not None
        ]
        try:
            sizing = PlanSizing.model_validate(
                size(
                    target=settings.target,
                    target_kind=settings.kind,
                    capacity_per_pod=best.max_load or 0,
                    cpu_per_pod=best.cpu,
                    workers_per_pod=best.workers,
                    sla_text=settings.sla.describe(),
                    node_type=settings.node_type,
                    peak_rss_mb=best.peak_rss_mb,
                    cpu_by_load=cpu_by_load,
                    daemonset_cpu_m=settings.daemonset_cpu_m,
                    price_per_node_hour=settings.price_per_node_hour,
                ).to_dict()
            )
        except ConfigurationError as exc:
            # The measurements are worth keeping: plan.json says why there is no sizing.
            sizing_error = str(exc)
    return Plan(
        sla=PlanSla(
            expr=settings.sla.expr,
            percentile=settings.sla.percentile,
            limit_ms=next((b.limit for b in settings.sla.bounds if b.metric != "error_rate"), None),
        ),
        load_model=LoadModel(
            kind="users" if settings.kind == "users" else "rps",
            think_time_s=settings.think_time_s,
            rows_per_request=settings.rows_per_request,
            mix=settings.mix,
            protocol="v2" if settings.protocol == "v2" else "mlflow",
        ),
        quick=settings.quick,
        measurements=tuple(measurements),
        model=model,
        sizing=sizing,
        sizing_error=sizing_error,
    )
