"""``mlscale plan``: measure each pod size at an SLA and size the cluster from it."""

from __future__ import annotations

import math

import click

from mlscale.cli.options import protocol_option
from mlscale.errors import ConfigurationError


class _PositiveNumber(click.ParamType):
    """A finite number above 0 (or from 0 with ``zero``): float() also reads "nan", "inf"
    and "1e400", which no target, price or load can be."""

    name = "NUMBER"

    def __init__(self, *, zero: bool = False) -> None:
        self.zero = zero

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number.", param, ctx)
        if not math.isfinite(number) or number < 0 or (number == 0 and not self.zero):
            self.fail(
                f"{value!r}: give a finite number {'of 0 or more' if self.zero else 'above 0'}.", param, ctx
            )
        return number


@click.command()
@click.option(
    "-m",
    "--model-uri",
    default=None,
    metavar="URI",
    help="Plan starts its own mlscale servers of each pod size for this model.",
)
@click.option("--url", default=None, help="Or measure a running server as it is (one size).")
@protocol_option(
    "The endpoint the load tests drive: MLflow's /invocations, or the Open Inference "
    "Protocol's /v2/models/NAME/infer (KServe's), under the same SLA."
)
@click.option(
    "--model-name",
    default=None,
    metavar="NAME",
    help="With --url and --protocol v2: the server's model name in the V2 path.",
)
@click.option("--sla", default="p95<1s", show_default=True, help="e.g. 'p95<1s,errors<1%'.")
@click.option(
    "--target-users",
    type=_PositiveNumber(),
    default=None,
    help="Size for this many concurrent users (closed loop, --think-time).",
)
@click.option(
    "--target-rps", type=_PositiveNumber(), default=None, help="Size for this arrival rate (open loop)."
)
@click.option(
    "--think-time",
    type=_PositiveNumber(zero=True),
    default=1.0,
    show_default=True,
    help="Seconds each user waits between requests (random, mean this).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Request rows, CSV or parquet (default: the wine data).",
)
@click.option(
    "--from-signature",
    is_flag=True,
    help="Generate request rows from the model's signature instead of --data.",
)
@click.option(
    "--rows-per-request",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Rows in each request (batch scoring: 100 or 1000).",
)
@click.option(
    "--mix",
    default=None,
    metavar="ROWS:WEIGHT,…",
    help="A mix of request sizes, as in loadtest, e.g. 1:90,100:10.",
)
@click.option(
    "--cpus",
    default="1",
    show_default=True,
    help="CPU per pod to measure, e.g. 0.5,1 (500m works too; fractions need cgroups).",
)
@click.option(
    "--workers-per-pod",
    default="1",
    show_default=True,
    help="Server worker processes per pod to measure, e.g. 1,2.",
)
@click.option(
    "--node-type",
    default="e2-standard-4",
    show_default=True,
    help="GKE machine type of the node pool (e2-, n2-, c3-standard-N).",
)
@click.option(
    "--daemonset-cpu",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Millicores the DaemonSets request on every node (GKE's kube-proxy: 100).",
)
@click.option("--price-per-node-hour", type=_PositiveNumber(), default=None, help="For a monthly cost.")
@click.option(
    "--start-load",
    type=_PositiveNumber(),
    default=4,
    show_default=True,
    help="The search's first load (users or requests/s); it doubles from there (four-fold "
    "while the percentile is under a tenth of the limit).",
)
@click.option("--quick", is_flag=True, help="Short steps and a coarse search: minutes, wider error bars.")
@click.option(
    "--from-plan",
    "from_plan",
    type=click.Path(dir_okay=False),
    default=None,
    help="Re-size from an earlier plan.json's measurements (a new target, node type "
    "or price) without measuring again; its SLA and load model are kept.",
)
@click.option(
    "--out",
    "out_dir",
    default="plan-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for plan.json, plan.html and steps/.",
)
def plan(**options) -> None:
    """Find the capacity of each pod size at an SLA and size the cluster from it.

    Grows the load geometrically until the SLA fails, then bisects, for each pod size;
    fits throughput against CPU; and sizes pods, nodes and the HPA for the target.
    Writes plan.json and plan.html.
    """
    # heavy: the planner imports the load-test runner, pandas and the report (0.7 s);
    # only `plan` needs them, and `mlscale --help` must not pay for them.
    from mlscale.capacity.planner import read_plan, run_plan, write_plan
    from mlscale.capacity.settings import (
        PlanRequest,
        check_plan_settings,
        model_check_line,
        plan_settings,
        resized_from,
    )

    if (options["target_users"] is None) == (options["target_rps"] is None):
        raise click.UsageError("Give --target-users (closed loop) or --target-rps (open loop).")
    kind = "users" if options["target_users"] is not None else "rps"
    request = PlanRequest(
        sla=options["sla"],
        kind=kind,
        target=options["target_users"] or options["target_rps"],
        out_dir=options["out_dir"],
        cpus=options["cpus"],
        workers_per_pod=options["workers_per_pod"],
        model_uri=options["model_uri"],
        url=options["url"],
        think_time_s=options["think_time"],
        data=options["data"],
        from_signature=options["from_signature"],
        rows_per_request=options["rows_per_request"],
        mix=options["mix"],
        start_load=options["start_load"],
        node_type=options["node_type"],
        daemonset_cpu_m=options["daemonset_cpu"],
        price_per_node_hour=options["price_per_node_hour"],
        quick=options["quick"],
        protocol=options["protocol"],
        model_name=options["model_name"],
    )
    earlier = read_plan(options["from_plan"]) if options["from_plan"] else None
    if earlier is not None:
        if options["model_uri"] or options["url"]:
            raise click.UsageError("--from-plan measures nothing: drop -m/--url.")
        if earlier.load_model.kind != kind:
            raise click.UsageError(
                f"{options['from_plan']} measured {earlier.load_model.kind}: give "
                f"--target-{earlier.load_model.kind} to re-size from it."
            )
        request = resized_from(request, earlier)
    try:
        settings = plan_settings(request)
        check_plan_settings(settings, resizing=earlier is not None)
    except ConfigurationError as exc:
        # Not the group's exit status 1: a value that fails these checks is a wrong flag,
        # answered like click's own usage errors (status 2, with the usage line).
        raise click.UsageError(str(exc)) from None
    if earlier is not None:
        result = write_plan(settings, earlier.measurements)
    else:
        result = run_plan(settings, say=lambda text: click.echo(text, err=True))
    click.echo(model_check_line(result.model))
    if result.sizing:
        click.echo(result.sizing.sentence)
    elif result.sizing_error and any(m.max_load for m in result.measurements):
        # Measured, but the sizing failed (a pod bigger than the node once its memory
        # was measured): an error, with the measurements kept for --from-plan.
        raise click.ClickException(
            f"No sizing: {result.sizing_error} The measurements are in "
            f"{options['out_dir']}/plan.json: re-size with --from-plan."
        )
    else:
        click.echo("No pod size met the SLA at any load measured.")
    click.echo(f"Plan: {options['out_dir']}/plan.json, report: {options['out_dir']}/plan.html")
