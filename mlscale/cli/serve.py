"""``mlscale serve``: the drop-in for ``mlflow models serve``."""

from __future__ import annotations

import os
import sys

import click

from mlscale.cli.options import ByteSize
from mlscale.logs import configure_logging

_ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


@click.command(context_settings={"help_option_names": ["--help"]})
@click.option(
    "-m",
    "--model-uri",
    required=True,
    metavar="URI",
    help="The model: models:/name/version, models:/name@alias, runs:/id/path, "
    "a local folder, or an object-store URI.",
)
@click.option(
    "--model-name",
    envvar="MLSCALE_MODEL_NAME",
    default=None,
    metavar="NAME",
    help="The model's name in the Open Inference Protocol (V2) paths, /v2/models/NAME/...; "
    "other names get 404. KServe passes it in a ServingRuntime's args (--model-name={{.Name}}). Default: the "
    "registered model's name for models:/NAME/..., else the last component of the URI "
    "(a folder's name, the path of runs:/ID/PATH). Env: MLSCALE_MODEL_NAME.",
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
    help="Require 'Authorization: Bearer TOKEN' on /invocations, /version and V2 infer and "
    "metadata (401 otherwise); /ping, /health, /v2/health/* and /metrics stay open for probes "
    "and Prometheus. "
    "Prefer the environment variable: a flag shows in the process list. "
    "Env: MLSCALE_AUTH_TOKEN.",
)
def serve(**options) -> None:
    """Serve an MLflow model over HTTP: a drop-in for `mlflow models serve`.

    The same endpoints (/invocations, /ping, /health, /version), request formats,
    schema enforcement and error JSON as MLflow's scoring server, and the same flags
    and environment variables; plus /metrics for Prometheus, micro-batching, a native
    fast path for XGBoost, LightGBM and scikit-learn, and bounded overload.

    \b
    Also the Open Inference Protocol (V2, as KServe and MLServer), over the same batching:
      POST /v2/models/NAME/infer                 JSON tensors in and out
      GET  /v2/models/NAME                       inputs and outputs, from the signature
      GET  /v2/models/NAME/ready, /v2/health/ready, /v2/health/live, /v2
    NAME is --model-name; /v2/models/NAME/versions/N/... also works for models:/NAME/N.
    A column signature takes one input per column (shape [n] or [n, 1], strings as
    BYTES), as MLServer's MLflow runtime does.
    """
    # heavy: the server stack (uvicorn, numpy, orjson: about 0.1 s) stays off the
    # start-up of every other command.
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
        # heavy (0.15 s) and only for --env-manager uv/virtualenv.
        from mlscale.model.envbuild import prepare_environment
        from mlscale.model.environment import exec_server

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
        model_name=options["model_name"] or None,
    )
    sys.exit(run_server(settings))
