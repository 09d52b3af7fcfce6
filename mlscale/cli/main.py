"""The ``mlscale`` command."""

from __future__ import annotations

import math
import os
import sys

import click

from mlscale import __version__
from mlscale.cli.build_image import build_image
from mlscale.cli.images import images
from mlscale.cli.k8s import k8s
from mlscale.cli.options import ByteSize, load_shape_options
from mlscale.cli.simulate import simulate
from mlscale.cli.stack import stack
from mlscale.errors import MlscaleError
from mlscale.logs import configure_logging


class _Group(click.Group):
    """Turns mlscale's own errors into a one-line message and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MlscaleError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"max_content_width": 100})
@click.version_option(__version__, prog_name="mlscale")
def main() -> None:
    """Serve MLflow models fast, load-test them, and size their Kubernetes deployment."""


@main.command()
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default="sqlite:///mlflow.db",
    show_default=True,
    help="MLflow tracking and registry store. The default is an embedded SQLite store in the "
    "working folder, which `mlflow ui` run there shows. Env: MLFLOW_TRACKING_URI.",
)
@click.option(
    "--name", "model_name", default="wine-quality", show_default=True, help="Registered model name."
)
@click.option("--experiment", default="wine-quality", show_default=True, help="Experiment name.")
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A wine-quality CSV with a 'quality' column (default: the copy shipped with mlscale).",
)
def train(tracking_uri: str, model_name: str, experiment: str, data: str | None) -> None:
    """Train and register the reference scenario's model.

    XGBRegressor(max_depth=10, min_child_weight=1, random_state=42) on the UCI white
    wine quality data, split 70/30 with random_state=1, logged with its params,
    metrics (rmse, mae, r2), signature and input example. The last line of output is
    the registered model URI, models:/<name>/<version>.
    """
    from mlscale.examples.wine import TrainSettings
    from mlscale.examples.wine import train as run_training

    settings = TrainSettings(
        tracking_uri=tracking_uri, model_name=model_name, experiment=experiment, data=data
    )
    click.echo(f"Training on {data or 'the bundled wine-quality data'}; tracking: {tracking_uri}", err=True)
    result = run_training(settings)
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    click.echo(f"Run {result.run_id}: {metrics}", err=True)
    click.echo(result.model_uri)


_ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


@main.command(context_settings={"help_option_names": ["--help"]})
@click.option(
    "-m",
    "--model-uri",
    required=True,
    metavar="URI",
    help="The model: models:/name/version, models:/name@alias, runs:/id/path, "
    "a local folder, or an object-store URI.",
)
@click.option(
    "-h",
    "--host",
    envvar="MLFLOW_HOST",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on; 0.0.0.0 for every interface (containers). Env: MLFLOW_HOST.",
)
@click.option(
    "-p",
    "--port",
    envvar="MLFLOW_PORT",
    type=click.IntRange(0, 65535),
    default=5000,
    show_default=True,
    help="Port to listen on. Env: MLFLOW_PORT.",
)
@click.option(
    "-w",
    "--workers",
    envvar="MLFLOW_MODELS_WORKERS",
    type=click.IntRange(1, 512),
    default=1,
    show_default=True,
    help="Worker processes sharing the port; a worker that dies is replaced. Env: MLFLOW_MODELS_WORKERS.",
)
@click.option(
    "-t",
    "--timeout",
    envvar="MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=60,
    show_default=True,
    help="Seconds a request may take, body included; past it: 504 and its work is "
    "dropped. Env: MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.",
)
@click.option(
    "--env-manager",
    type=click.Choice(_ENV_MANAGERS),
    default=None,
    help="Where the model's Python packages come from. local (the default): this "
    "environment. uv, or virtualenv (venv and pip, as MLflow): a virtual environment "
    "built from the model's python_env.yaml and requirements.txt on a Python of its "
    "version found on this machine, cached in MLSCALE_ENV_CACHE (default "
    "~/.cache/mlscale/envs), and the server runs in it. conda is not supported.",
)
@click.option("--no-conda", is_flag=True, help="Same as --env-manager local.")
@click.option("--install-mlflow", is_flag=True, hidden=True)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    help="Registry used to resolve models:/ URIs. Env: MLFLOW_TRACKING_URI.",
)
@click.option(
    "--max-batch-size",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Most rows merged into one predict call.",
)
@click.option(
    "--max-batch-wait-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="How long a batch may wait for more requests. 0 never delays a request: "
    "batches form from requests that arrive while the model is busy.",
)
@click.option(
    "--max-queue",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Requests queued per worker before new ones get 503 with Retry-After.",
)
@click.option(
    "--max-body-size",
    type=ByteSize(),
    default="100MB",
    show_default=True,
    help="Larger request bodies get 413.",
)
@click.option(
    "--no-native", is_flag=True, help="Always predict through pyfunc, even where a native fast path exists."
)
@click.option(
    "--accept-legacy-split",
    is_flag=True,
    help='Accept MLflow 1.x bare {"columns", "data"} bodies (MLflow 2+ rejects them).',
)
@click.option(
    "--drain-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds between SIGTERM and the end of accepting requests, with /ping "
    "answering 503, so a load balancer stops routing here first.",
)
@click.option(
    "--graceful-timeout",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds in-flight requests get to finish once draining starts.",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
@click.option(
    "--auth-token",
    envvar="MLSCALE_AUTH_TOKEN",
    default=None,
    metavar="TOKEN",
    help="Require 'Authorization: Bearer TOKEN' on /invocations and /version (401 "
    "otherwise); /ping, /health and /metrics stay open for probes and Prometheus. "
    "Prefer the environment variable: a flag shows in the process list. "
    "Env: MLSCALE_AUTH_TOKEN.",
)
def serve(**options) -> None:
    """Serve an MLflow model over HTTP: a drop-in for `mlflow models serve`.

    The same endpoints (/invocations, /ping, /health, /version), request formats,
    schema enforcement and error JSON as MLflow's scoring server, and the same flags
    and environment variables; plus /metrics for Prometheus, micro-batching, a native
    fast path for XGBoost, LightGBM and scikit-learn, and bounded overload.
    """
    from mlscale.serving.batcher import BatchSettings
    from mlscale.serving.server import serve as run_server
    from mlscale.serving.settings import ServeSettings

    env_manager = options["env_manager"]
    if env_manager == "conda":
        raise click.UsageError(
            "--env-manager conda is not supported: mlscale builds the model's environment from "
            "its python_env.yaml with uv or virtualenv. Use --env-manager uv or virtualenv, or "
            "install the model's requirements here and use --env-manager local."
        )
    if options["no_conda"] and env_manager not in (None, "local"):
        raise click.UsageError(f"--no-conda means --env-manager local, not {env_manager}.")
    if options["tracking_uri"]:
        os.environ["MLFLOW_TRACKING_URI"] = options["tracking_uri"]
    if env_manager in ("uv", "virtualenv"):
        from mlscale.model.environment import exec_server, prepare_environment

        # Build the model's environment (or find it cached), then become, in the same
        # process, this command run by its Python with --env-manager local.
        python = prepare_environment(
            options["model_uri"], env_manager, say=lambda text: click.echo(text, err=True)
        )
        exec_server(python, sys.argv)
    configure_logging(options["log_level"])
    settings = ServeSettings(
        model_uri=options["model_uri"],
        host=options["host"],
        port=options["port"],
        workers=options["workers"],
        timeout_s=options["timeout"],
        max_body_bytes=options["max_body_size"],
        batch=BatchSettings(
            max_batch_rows=options["max_batch_size"],
            max_wait_s=options["max_batch_wait_ms"] / 1000,
            max_queue=options["max_queue"],
        ),
        native=not options["no_native"],
        accept_legacy_split=options["accept_legacy_split"],
        drain_delay_s=options["drain_delay"],
        graceful_timeout_s=options["graceful_timeout"],
        log_level=options["log_level"],
        auth_token=options["auth_token"] or None,  # an empty variable means no token
    )
    sys.exit(run_server(settings))


@main.command()
@click.option(
    "--host",
    envvar="TARGET_HOST",
    required=True,
    metavar="URL",
    help="The server, e.g. http://127.0.0.1:5000. Env: TARGET_HOST.",
)
@click.option("--path", default="/invocations", show_default=True, help="The scoring path.")
@load_shape_options
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Locust worker processes under a Locust master (0: one process). Use one "
    "per free core when one generator process saturates.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV or parquet of request rows (default: the wine data, target dropped).",
)
@click.option(
    "--from-signature",
    "signature_of",
    default=None,
    metavar="MODEL_URI",
    help="Generate random rows that fit this model's signature instead of --data.",
)
@click.option("--rows-per-request", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--mix", default=None, metavar="ROWS:WEIGHT,…", help="A weighted mix of request sizes, e.g. 1:90,100:10."
)
@click.option(
    "--format",
    "body_format",
    type=click.Choice(["split", "records", "csv", "legacy-split"]),
    default="split",
    show_default=True,
    help="Body format; legacy-split is the MLflow 1.x bare split of the reference.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Open loop: requests outstanding per generator before new ones are dropped.",
)
@click.option(
    "--sla",
    default=None,
    metavar="EXPR",
    help="e.g. 'p95<1000ms' or 'p99<=0.5s,errors<1%'; exit status 1 when missed.",
)
@click.option(
    "--server-pid",
    type=int,
    default=None,
    help="Process to measure CPU and memory of (found from the port when local).",
)
@click.option(
    "--out",
    "out_dir",
    default="loadtest-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the results and report.",
)
@click.option("--web-ui", is_flag=True, help="Keep Locust's web UI on http://127.0.0.1:8089.")
@click.option(
    "--auth-token",
    envvar="MLSCALE_AUTH_TOKEN",
    default=None,
    metavar="TOKEN",
    help="Send 'Authorization: Bearer TOKEN' (a server started with --auth-token). "
    "Env: MLSCALE_AUTH_TOKEN, which keeps it out of the process list.",
)
def loadtest(**options) -> None:
    """Load-test a scoring server with Locust: exact percentiles and the charts people read.

    Closed loop (--users, with think time, like the reference) or open loop (--rate);
    constant, ramp, steps, spike or a profile file. Writes summary.json, timeseries.csv
    and report.html to --out.
    """
    from mlscale.loadtest.cli import run_from_options

    sys.exit(run_from_options(options))


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


@main.command()
@click.option(
    "-m",
    "--model-uri",
    default=None,
    metavar="URI",
    help="Plan starts its own mlscale servers of each pod size for this model.",
)
@click.option("--url", default=None, help="Or measure a running server as it is (one size).")
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
    from mlscale.capacity.planner import (
        PlanSettings,
        check_plan,
        check_sizing,
        read_plan,
        run_plan,
        write_plan,
    )
    from mlscale.capacity.pods import parse_pod_specs, quota_supported
    from mlscale.errors import ConfigurationError
    from mlscale.loadtest.sla import parse_sla

    if (options["target_users"] is None) == (options["target_rps"] is None):
        raise click.UsageError("Give --target-users (closed loop) or --target-rps (open loop).")
    kind = "users" if options["target_users"] is not None else "rps"
    quick = options["quick"]
    earlier = read_plan(options["from_plan"]) if options["from_plan"] else None
    if earlier is not None:
        if options["model_uri"] or options["url"]:
            raise click.UsageError("--from-plan measures nothing: drop -m/--url.")
        if earlier["load_model"]["kind"] != kind:
            raise click.UsageError(
                f"{options['from_plan']} measured {earlier['load_model']['kind']}: give "
                f"--target-{earlier['load_model']['kind']} to re-size from it."
            )
        load_model = earlier["load_model"]
        options.update(
            sla=earlier["sla"]["expr"],
            think_time=load_model["think_time_s"],
            rows_per_request=load_model.get("rows_per_request", 1),
            mix=load_model.get("mix"),
            quick=earlier["quick"],
        )
        quick = earlier["quick"]
    try:
        settings = PlanSettings(
            sla=parse_sla(options["sla"]),
            kind=kind,
            target=options["target_users"] or options["target_rps"],
            out_dir=options["out_dir"],
            pods=tuple(parse_pod_specs(options["cpus"], options["workers_per_pod"])),
            model_uri=options["model_uri"],
            url=options["url"].rstrip("/") if options["url"] else None,
            think_time_s=options["think_time"],
            step_s=4.0 if quick else 20.0,
            data=options["data"],
            signature_of=options["model_uri"] if options["from_signature"] else None,
            rows_per_request=options["rows_per_request"],
            mix=options["mix"],
            start_load=options["start_load"],
            precision=0.25 if quick else 0.1,
            max_steps=12 if quick else 16,
            node_type=options["node_type"],
            daemonset_cpu_m=options["daemonset_cpu"],
            price_per_node_hour=options["price_per_node_hour"],
            quick=quick,
        )
        # Every flag checked before the first measurement: a bad size or node type found
        # after the others were measured would cost all of them.
        if earlier is not None:
            check_sizing(settings, ())
        else:
            check_plan(settings, available_cores=os.cpu_count() or 1, quota=quota_supported())
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    if earlier is not None:
        result = write_plan(settings, earlier["measurements"])
    else:
        result = run_plan(settings, say=lambda text: click.echo(text, err=True))
    click.echo(_model_line(result["model"]))
    if result["sizing"]:
        click.echo(result["sizing"]["sentence"])
    elif result.get("sizing_error") and any(m["max_load"] for m in result["measurements"]):
        # Measured, but the sizing failed (a pod bigger than the node once its memory
        # was measured): an error, with the measurements kept for --from-plan.
        raise click.ClickException(
            f"No sizing: {result['sizing_error']} The measurements are in "
            f"{options['out_dir']}/plan.json: re-size with --from-plan."
        )
    else:
        click.echo("No pod size met the SLA at any load measured.")
    click.echo(f"Plan: {options['out_dir']}/plan.json, report: {options['out_dir']}/plan.html")


def _model_line(model: dict) -> str:
    """The capacity model's check, one line: what a reader needs to trust the plan."""
    error = model.get("holdout_error")
    if error is None:
        return f"Model: {model.get('note', 'not fitted')}."
    if model.get("holdout") == "step":
        what = f"the {model['holdout_cpu']:g}-CPU capacity read without its nearest load step"
    else:
        what = f"{model['holdout_cpu']:g} CPU predicted from the other sizes"
    return (
        f"Model check: {what}: {model['holdout_predicted_load']:.0f} against "
        f"{model['holdout_measured_load']:.0f} measured, {error * 100:.1f} % hold-out error."
    )


@main.command()
@click.option(
    "--out",
    "out_dir",
    default="demo-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder for the store, reports and logs.",
)
@click.option(
    "--rows", type=click.IntRange(1, 1000), default=5, show_default=True, help="Rows of wine data to score."
)
@click.option(
    "--quick", is_flag=True, help="Every step shortened (about 2 minutes in all; wider error bars)."
)
def demo(out_dir: str, rows: int, quick: bool) -> None:
    """Run the reference scenario on this machine, end to end.

    Train and register the wine-quality model in an embedded SQLite store; serve it
    and score a few rows; a stepped load test like the reference's; a capacity plan
    for p95 < 1 s on a pod-sized server; the Kubernetes overlay rendered from the
    plan and validated; the reference's HPA and cluster-autoscaler experiments
    replayed in the simulator; mlscale against `mlflow models serve`. Ends with
    OUT/index.html, which links every report. About 4 minutes on 2 cores (--quick:
    about 2). Running it again adds a model version; nothing needs deleting first.
    """
    from mlscale.demo import DemoSettings, run_demo
    from mlscale.interrupts import signals_unwind, stop_descendants

    # Ctrl-C and SIGTERM both unwind through the demo's clean-up: every server,
    # load generator and pod it started is stopped before it exits.
    with signals_unwind() as caught:
        try:
            run_demo(DemoSettings(out_dir=out_dir, rows=rows, quick=quick))
        except KeyboardInterrupt:
            stop_descendants()  # any child a step had not yet put under its own clean-up
            click.echo(
                f"mlscale demo: stopped by {caught.name}; the processes it started have been stopped.",
                err=True,
            )
            raise SystemExit(caught.exit_status) from None


# Command groups with modules of their own.
main.add_command(k8s)
main.add_command(simulate)
main.add_command(images)
main.add_command(build_image)
main.add_command(stack)

if __name__ == "__main__":  # pragma: no cover
    main()
