"""``mlscale simulate``: parse the options into typed settings and run the simulator."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import TYPE_CHECKING

import click

from mlscale.errors import ConfigurationError
from mlscale.loadtest.shapes import USERS, colon_pairs
from mlscale.loadtest.sla import parse_sla
from mlscale.simulate.settings import (
    CPU,
    INFLIGHT,
    Behavior,
    HpaSettings,
    ManualScaling,
    PodTemplate,
    SimSettings,
    Sla,
    apply_overrides,
    describe_settings,
    quantile_of,
    validate,
)

if TYPE_CHECKING:
    from mlscale.schemas.plan import Plan

_PRESET_HELP = (
    "Replay an experiment of the reference scenario: reference-manual, reference-hpa or "
    "reference-cluster-autoscaler (with --plan: your pod in the same experiment)."
)


def _read_plan(path: str) -> Plan:
    """The plan through its schema: a damaged one is a ConfigurationError naming the field."""
    from mlscale.schemas.plan import read_plan_file  # pydantic: off the CLI's start-up

    if not os.path.exists(path):
        raise ConfigurationError(f"Cannot read the plan {path}: No such file or directory.")
    return read_plan_file(path)


def _read_behavior(text: str):

    if text.strip().lower() == "default":
        return Behavior()
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigurationError(f"Cannot read the behavior file {text[1:]}: {exc.strerror}.") from None
    # PyYAML only for --behavior: off the CLI's start-up
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"--behavior is not JSON or YAML: {exc}".splitlines()[0]) from None
    if isinstance(data, dict) and "behavior" in data:  # a whole HPA spec, or its spec
        data = data["behavior"]
    if isinstance(data, dict) and "spec" in data:
        data = (data["spec"] or {}).get("behavior", {})
    return Behavior.from_k8s(data)


def _manual_steps(spec: str) -> tuple[tuple[float, int], ...]:

    def explain(part):
        return f"Cannot read {part!r} in --manual: write START_S:REPLICAS, comma-separated, e.g. 0:1,600:4,1200:8."

    steps = tuple((start, replicas) for start, replicas, _ in colon_pairs(spec, (float, int), explain))
    if not steps or any(r < 0 or s < 0 for s, r in steps):
        raise ConfigurationError("--manual needs START_S:REPLICAS steps with no negative value.")
    return tuple(sorted(steps))


def _sla(expr: str):

    parsed = parse_sla(expr)
    bound = next((b for b in parsed.bounds if b.metric != "error_rate"), None)
    if bound is None:
        raise ConfigurationError(
            "The simulator judges latency: give a percentile bound, e.g. --sla 'p95<1s'."
        )
    quantile_of(bound.metric)  # the simulator's percentiles: p50 ... p999
    return Sla(percentile=bound.metric, limit_ms=bound.limit)


def _base(options: dict, plan: Plan | None):
    """(settings, shape, model, name) from the preset or the profile."""
    # numpy, scipy and plotly: imported when the command runs, off `mlscale`'s start-up
    from mlscale.simulate.calibration import plan_kind, plan_think_time, pod_from_plan, reference_pod
    from mlscale.simulate.presets import build_preset
    from mlscale.simulate.profile import daily_shape, read_profile

    sources = [k for k in ("preset", "profile_file", "daily") if options[k] is not None]
    if len(sources) != 1:
        raise ConfigurationError("Give the load as one of --preset, --profile FILE or --daily PEAK.")
    if options["preset"] is not None:
        experiment = build_preset(options["preset"], plan)
        return experiment.settings, experiment.shape, experiment.model, experiment.name
    if options["profile_file"] is not None:
        shape = read_profile(options["profile_file"], options["duration"])
        name = options["profile_file"]
    else:
        shape = daily_shape(options["daily"], kind=options["daily_kind"])
        name = f"daily profile peaking at {options['daily']:g} {options['daily_kind']}"
    if plan is not None:
        if options["pod_cpu"] is not None:
            raise ConfigurationError(
                "--pod-cpu: the plan fixes the pod's CPU (it was measured at that size)."
            )
        model = pod_from_plan(plan)
        think = plan_think_time(plan) if plan_kind(plan) == USERS else 1.0
        sla = Sla(percentile=plan.sla.percentile or "p95", limit_ms=plan.sla.limit_ms or 1000.0)
    else:
        cores = (options["pod_cpu"] or 1000) / 1000
        model = reference_pod(cores=cores)
        think, sla = 1.0, Sla()
    pod = PodTemplate(
        cpu_request_m=max(1, round(model.cpu_cores * 1000)), memory_request_mib=round(model.memory_mib)
    )
    return SimSettings(think_time_s=think, pod=pod, sla=sla), shape, model, name


def _apply_options(settings, options: dict, plan: Plan | None = None):
    """Options given on the command line win over the preset's or the defaults; ``plan``
    gives ``--policy inflight`` its target when ``--inflight-target`` does not."""

    def given(key: str) -> bool:
        return options.get(key) is not None

    replace = dataclasses.replace
    pool, pod, metrics = settings.pool, settings.pod, settings.metrics
    pool_changes = {
        field: options[key]
        for key, field in (
            ("node_type", "machine_type"),
            ("min_nodes", "min_nodes"),
            ("max_nodes", "max_nodes"),
            ("nodes", "initial_nodes"),
            ("daemonset_cpu", "daemonset_cpu_m"),
            ("price_per_node_hour", "price_per_hour"),
            ("node_provision_time", "provision_s"),
        )
        if given(key)
    }
    if given("min_nodes") and not given("max_nodes"):
        pool_changes["max_nodes"] = max(options["min_nodes"], pool.max_nodes)
    if given("max_nodes") and not given("min_nodes"):
        pool_changes["min_nodes"] = min(options["max_nodes"], pool.min_nodes)
    pool = replace(pool, **pool_changes)
    pod_changes = {
        field: options[key]
        for key, field in (
            ("pod_memory", "memory_request_mib"),
            ("pod_start_time", "app_startup_s"),
            ("image_pull_time", "image_pull_cold_s"),
        )
        if given(key)
    }
    pod = replace(pod, **pod_changes)
    if given("metrics_resolution"):
        metrics = replace(metrics, resolution_s=options["metrics_resolution"])
    settings = replace(settings, pool=pool, pod=pod, metrics=metrics)
    if given("think_time"):
        settings = replace(settings, think_time_s=options["think_time"])
    if given("sla"):
        settings = replace(settings, sla=_sla(options["sla"]))
    if given("tick"):
        settings = replace(settings, tick_s=options["tick"])
    if given("replicas"):
        settings = replace(settings, initial_replicas=options["replicas"])
    policy = options.get("policy")
    hpa = settings.hpa or HpaSettings()
    hpa_changes = {
        field: options[key]
        for key, field in (
            ("min_pods", "min_replicas"),
            ("max_pods", "max_replicas"),
        )
        if given(key)
    }
    if given("cpu_percent"):
        hpa_changes.update(metric=CPU, target=options["cpu_percent"])
        policy = policy or "cpu"
    if given("inflight_target"):
        hpa_changes.update(metric=INFLIGHT, target=options["inflight_target"])
        policy = policy or "inflight"
    if policy == "inflight" and not given("inflight_target"):
        if plan is None:
            raise ConfigurationError(
                "--policy inflight needs --inflight-target (in-flight requests per pod), or a --plan "
                "to take it from."
            )
        # The number `mlscale k8s render --policy inflight` writes for the same plan: one
        # function computes both, so the simulated policy is the deployed one.
        from mlscale.simulate.inflight import plan_inflight_target  # numpy and scipy: off start-up

        hpa_changes.update(metric=INFLIGHT, target=plan_inflight_target(plan))
    if given("behavior"):
        hpa_changes["behavior"] = _read_behavior(options["behavior"])
    if given("max_pods") and not given("min_pods"):
        hpa_changes["min_replicas"] = min(hpa.min_replicas, options["max_pods"])
    hpa = replace(hpa, **hpa_changes)
    if policy == "manual" or given("manual"):
        if not given("manual"):
            raise ConfigurationError("--policy manual needs --manual START_S:REPLICAS,...")
        return replace(settings, hpa=None, manual=ManualScaling(replicas=_manual_steps(options["manual"])))
    if policy == "none":
        replicas = options["replicas"] or settings.start_replicas()
        return replace(settings, hpa=None, manual=ManualScaling(replicas=((0.0, replicas),)))
    if policy in ("cpu", "inflight") or hpa_changes or settings.manual is None:
        return replace(settings, hpa=hpa, manual=None)
    return settings


def _print_settings() -> None:

    for key, value, doc, source in describe_settings():
        click.echo(f"{key:<42} {value:<14} {doc}" + (f"  [{source}]" if source else ""))


def _minutes(seconds) -> str:
    return "–" if seconds is None else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


@click.command(context_settings={"max_content_width": 100})
@click.option("--preset", default=None, metavar="NAME", help=_PRESET_HELP)
@click.option(
    "--profile",
    "profile_file",
    default=None,
    metavar="FILE",
    help="A load profile CSV, as `mlscale loadtest --shape` reads: time_s and users "
    "(closed loop) or rps (open loop); each row holds until the next.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds in all, for a profile whose last row should hold longer (or has one row).",
)
@click.option(
    "--daily",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="PEAK",
    help="A synthetic 24 h profile: a cosine from a tenth of PEAK at 04:00 to PEAK at 16:00.",
)
@click.option(
    "--daily-kind",
    type=click.Choice(["rps", "users"]),
    default="rps",
    show_default=True,
    help="What --daily counts: requests/s (open loop) or users (closed loop).",
)
@click.option(
    "--plan",
    "plan_file",
    default=None,
    metavar="PLAN_JSON",
    help="A plan.json of `mlscale plan`: pods serve with its measured capacity and latency "
    "(default: a pod calibrated on the reference, ~10 users per core at p95 < 1 s).",
)
@click.option(
    "--think-time",
    type=click.FloatRange(min=0),
    default=None,
    help="Closed loop: seconds a user waits between requests (default: the plan's, or 1).",
)
@click.option(
    "--policy",
    type=click.Choice(["cpu", "inflight", "manual", "none"]),
    default=None,
    help="cpu: an HPA on CPU utilisation (default); inflight: an HPA on in-flight requests "
    "per pod (as KEDA does); manual: replica counts by time (--manual); none: fixed replicas.",
)
@click.option(
    "--cpu-percent",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="HPA target CPU utilisation, percent of requests (kubectl autoscale --cpu-percent) [80].",
)
@click.option(
    "--inflight-target",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="HPA target of in-flight requests per pod (External AverageValue). With --plan and "
    "--policy inflight it defaults to the plan's: the in-flight count of its pod at 80 % of its "
    "capacity at the SLA, the number `mlscale k8s render --policy inflight` writes.",
)
@click.option("--min-pods", type=click.IntRange(min=1), default=None, help="HPA minReplicas [1].")
@click.option("--max-pods", type=click.IntRange(min=1), default=None, help="HPA maxReplicas [10].")
@click.option(
    "--behavior",
    default=None,
    metavar="JSON|@FILE|default",
    help="HPA spec.behavior as JSON or YAML (inline, or @file), or 'default' for Kubernetes' "
    "defaults. Without it, the HPA is the one `kubectl autoscale` creates (no behavior).",
)
@click.option(
    "--manual",
    default=None,
    metavar="S:N,...",
    help="Manual replicas by time, e.g. 0:1,600:4,1200:8 (implies --policy manual).",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=None,
    help="Replicas at the start (default: what the HPA settles at for the first load), "
    "or the fixed count with --policy none.",
)
@click.option("--node-type", default=None, help="GKE machine type of the pool [e2-standard-4].")
@click.option("--min-nodes", type=click.IntRange(min=0), default=None, help="Pool minimum [3].")
@click.option(
    "--max-nodes",
    type=click.IntRange(min=1),
    default=None,
    help="Pool maximum [3]; above --min-nodes, the cluster autoscaler runs.",
)
@click.option(
    "--nodes",
    type=click.IntRange(min=0),
    default=None,
    help="Nodes at the start (default: the minimum, or enough for the starting pods).",
)
@click.option(
    "--daemonset-cpu",
    type=click.IntRange(min=0),
    default=None,
    help="Millicores the DaemonSets request on every node [100: GKE's kube-proxy].",
)
@click.option(
    "--pod-cpu",
    type=click.IntRange(min=1),
    default=None,
    help="Without --plan: the pod's CPU request in millicores [1000] (= limit).",
)
@click.option(
    "--pod-memory", type=click.IntRange(min=0), default=None, help="The pod's memory request, MiB [512]."
)
@click.option(
    "--price-per-node-hour",
    type=click.FloatRange(min=0),
    default=None,
    help="USD per node-hour (default: the us-central1 list price of the node type).",
)
@click.option(
    "--metrics-resolution",
    type=click.FloatRange(min=1),
    default=None,
    help="metrics-server --metric-resolution, seconds [30; GKE does not publish it].",
)
@click.option(
    "--node-provision-time",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds from the autoscaler's request to a Ready node [60; unpublished].",
)
@click.option(
    "--pod-start-time",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds from container start to serving (loading the model) [10; unpublished].",
)
@click.option(
    "--image-pull-time",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds to pull the image on a node without it [30; unpublished].",
)
@click.option("--sla", default=None, help="e.g. 'p95<1s' (default: the plan's, or p95<1s).")
@click.option(
    "--tick",
    type=click.FloatRange(min=0, min_open=True, max=15),
    default=None,
    help="Simulated seconds per step [1].",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.NAME=VALUE",
    help="Any other setting, e.g. --set hpa.tolerance=0.2 --set autoscaler.scale_down_unneeded_s=300; "
    "--list-settings lists them with their defaults and sources.",
)
@click.option(
    "--list-settings", is_flag=True, help="List every setting, its default and its source, and exit."
)
@click.option(
    "--compare",
    is_flag=True,
    help="Run several policies on the load (CPU 80 %, CPU 60 %, an in-flight target, CPU 70 % "
    "with a tuned behavior) and name the cheapest that meets the SLA.",
)
@click.option(
    "--allowed-violation",
    type=click.FloatRange(0, 100),
    default=1.0,
    show_default=True,
    help="With --compare: percent of the time a policy may miss the SLA and still meet it.",
)
@click.option(
    "--out",
    "out_dir",
    default="simulate-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for timeseries.csv, summary.json and report.html.",
)
def simulate(**options) -> None:
    """Replay a load profile against a simulated Deployment, HPA and cluster autoscaler.

    The rules are Kubernetes' own (HPA tolerance, unready and missing pods, the
    legacy and behavior paths; metrics-server's two samples; the cluster
    autoscaler's timers; GKE's allocatable), and each ready pod serves like the
    pod `mlscale plan` measured. Hours of simulated time take seconds. Writes
    timeseries.csv, summary.json and report.html to --out.
    """
    if options["list_settings"]:
        _print_settings()
        return
    # numpy, scipy and plotly: imported when the command runs, off `mlscale`'s start-up
    from mlscale.simulate.compare import compare, default_candidates
    from mlscale.simulate.engine import simulate as run_simulation
    from mlscale.simulate.results import summarize, write_outputs

    plan = _read_plan(options["plan_file"]) if options["plan_file"] else None
    settings, shape, model, name = _base(options, plan)
    settings = _apply_options(settings, options, plan)
    settings = apply_overrides(settings, options["overrides"])
    validate(settings)
    out_dir = options["out_dir"]
    started = time.perf_counter()
    if options["compare"]:
        candidates = default_candidates(settings.hpa or HpaSettings(), model, shape.kind, settings)
        result = compare(
            settings,
            shape,
            model,
            candidates,
            out_dir=out_dir,
            allowed_violation=options["allowed_violation"] / 100,
        )
        for row in result.policies:
            click.echo(
                f"  {row.name:<14} {'meets' if row.meets_sla else 'misses'} the SLA "
                f"({row.sla_violation_s:.0f} s over), {row.cost:.2f} USD, "
                f"{row.node_hours:.1f} node-hours"
            )
        click.echo(result.verdict)
        if result.best:
            click.echo(f"HPA values: {json.dumps(result.outcome(result.best).manifest)}")
        click.echo(f"Comparison: {out_dir}/compare.json, report: {out_dir}/report.html")
        return
    run = run_simulation(settings, shape, model, name=name)
    summary = summarize(run)
    if options["preset"]:
        # pydantic and the simulator: imported when the command runs, off `mlscale`'s start-up
        from mlscale.schemas.simulation import PresetInfo
        from mlscale.simulate.presets import PRESETS

        preset = PresetInfo(name=options["preset"], description=PRESETS[options["preset"]])
        summary = summary.model_copy(update={"preset": preset})
    elapsed = time.perf_counter() - started
    write_outputs(out_dir, run, summary)
    written = time.perf_counter() - started - elapsed
    click.echo(
        f"{name}: {_minutes(summary.duration_s)} simulated in {elapsed:.1f} s, "
        f"files written in {written:.1f} s"
    )
    click.echo(f"Pod: {model.source}")
    if settings.hpa is not None:
        hpa = settings.hpa
        on = f"{hpa.target:g} % CPU" if hpa.metric == CPU else f"{hpa.target:g} requests in flight per pod"
        click.echo(f"HPA: {hpa.min_replicas}-{hpa.max_replicas} pods at {on}")
    click.echo(
        f"SLA {summary.sla.expr} missed for {summary.sla_violation_s:.0f} s "
        f"({100 * (1 - summary.sla_met_share):.1f} %); {summary.node_hours:.2f} node-hours, "
        f"{summary.cost:.2f} USD; at most {summary.max_pods_pending} pod(s) Pending"
    )
    if summary.scale_up_delay_s is not None:
        click.echo(f"First node Ready {summary.scale_up_delay_s:.0f} s after pods went Pending")
    if summary.scale_down_s is not None:
        click.echo(
            f"Back to {settings.pool.min_nodes} nodes {_minutes(summary.scale_down_s)} after the load fell"
        )
    click.echo(f"Results: {out_dir}/timeseries.csv, {out_dir}/summary.json, {out_dir}/report.html")
