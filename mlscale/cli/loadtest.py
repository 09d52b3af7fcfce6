"""``mlscale loadtest``: load-test a scoring server with Locust."""

from __future__ import annotations

import sys

import click

from mlscale.cli.options import load_shape_options, protocol_option


@click.command()
@click.option(
    "--host",
    envvar="TARGET_HOST",
    required=True,
    metavar="URL",
    help="The server, e.g. http://127.0.0.1:5000. Env: TARGET_HOST.",
)
@protocol_option(
    "mlflow: POST /invocations with a dataframe_split body (or --format). v2: the "
    "Open Inference Protocol, POST /v2/models/NAME/infer with one input per column, as "
    "KServe and MLServer take it (mlscale serves both)."
)
@click.option(
    "--model-name",
    default=None,
    metavar="NAME",
    help="The model's name in the V2 path (--protocol v2): the server's --model-name. "
    "Default: the name mlscale serve gives the --from-signature model.",
)
@click.option(
    "--path",
    default=None,
    metavar="PATH",
    help="The scoring path. Default: /invocations, or /v2/models/NAME/infer with --protocol v2.",
)
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
    default=None,
    help="Body format of --protocol mlflow [split]; legacy-split is the MLflow 1.x bare "
    "split of the reference.",
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
    # heavy: the load-test runner imports pandas and the report's charts (0.8 s).
    from mlscale.loadtest.cli import run_from_options

    sys.exit(run_from_options(options))
