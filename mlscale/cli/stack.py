"""``mlscale stack``: the local overlay in containers (podman): up, status, loadtest, down."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mlscale.cli.options import load_shape_options
from mlscale.containers.engine import find_engine

_NAME = click.option(
    "--name",
    default="mlscale",
    show_default=True,
    metavar="NAME",
    help="The stack: the prefix of its pods, volumes and secrets, and its network.",
)


def _say(line: str) -> None:
    click.echo(line, err=True)


@click.group(context_settings={"max_content_width": 100})
def stack() -> None:
    """The local overlay under podman: Postgres, the tracking server, the model server,
    a Locust master and two workers, from the same manifests as a cluster.

    `up` renders deploy/overlays/local with `kubectl kustomize` and plays it with
    `podman kube play` (Services become DNS names on the stack's network; the HPA,
    PodDisruptionBudget and NetworkPolicies are reported as not applied). Only the
    model server, the tracking UI and the Locust UI are published, on 127.0.0.1.
    """


@stack.command()
@_NAME
@click.option(
    "--from",
    "source",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="A kustomize folder to run instead of deploy/overlays/local, such as one "
    "`mlscale k8s render --overlay local` wrote.",
)
@click.option(
    "--server-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Host port of the model server on 127.0.0.1 (default: a free one).",
)
@click.option(
    "--tracking-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Host port of the tracking server and its UI (default: a free one).",
)
@click.option(
    "--locust-port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Host port of the Locust web UI (default: a free one).",
)
@click.option(
    "--build/--no-build",
    default=True,
    show_default=True,
    help="Build the images that are missing or out of date first (as `mlscale images "
    "build`); --no-build runs the mlscale/*:VERSION images as they are.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=900,
    show_default=True,
    help="Seconds for the pods to pass their probes (image builds not counted).",
)
def up(
    name: str,
    source: str | None,
    server_port: int,
    tracking_port: int,
    locust_port: int,
    build: bool,
    timeout: float,
) -> None:
    """Bring the stack up and wait until its pods pass their probes.

    The Postgres password is generated now into a podman secret (never a file). A
    model server whose model is not registered yet restarts until it is: register it
    with `mlscale train --tracking-uri` on the tracking URL printed at the end.
    """
    # The stack's modules (yaml, the manifest translation: 60 ms) load only when a
    # stack command runs, not at every `mlscale` start.
    from mlscale.containers.stack import UpSettings
    from mlscale.containers.stack import up as bring_up

    started = time.monotonic()
    settings = UpSettings(
        name=name,
        source=Path(source) if source else None,
        build=build,
        timeout_s=timeout,
        ports=(("model-server", server_port), ("tracking-ui", tracking_port), ("locust-ui", locust_port)),
    )
    state = bring_up(find_engine(), settings, say=_say)
    click.echo(f"Stack {name} up in {time.monotonic() - started:.0f} s.")
    _print_state(state)


@stack.command()
@_NAME
def status(name: str) -> None:
    """The stack's pods, whether they pass their probes, and its URLs. Exit status 1
    when it is not up."""
    from mlscale.containers.stack import require_podman, state  # 60 ms: off start-up

    engine = find_engine()
    require_podman(engine)
    current = state(engine, name)
    if not current.pods:
        click.echo(f"Stack {name} is not up.")
        sys.exit(1)
    _print_state(current)


@stack.command()
@_NAME
@click.option(
    "--keep-data",
    is_flag=True,
    help="Keep the Postgres and artifact volumes (and the secret their database was "
    "made with), so that the next `up` finds the runs and models again.",
)
def down(name: str, keep_data: bool) -> None:
    """Stop and remove everything the stack made: pods, network, volumes, secrets."""
    from mlscale.containers.stack import down as take_down  # 60 ms: off start-up

    started = time.monotonic()
    removed = take_down(find_engine(), name, keep_data=keep_data, say=_say)
    if not removed:
        click.echo(f"Stack {name} was not up: nothing to remove.")
        return
    kept = " (data volumes kept)" if keep_data else ""
    click.echo(
        f"Stack {name} down in {time.monotonic() - started:.0f} s: removed {len(removed)} objects{kept}."
    )


@stack.command()
@_NAME
@load_shape_options
@click.option(
    "--data",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="CSV or parquet of request rows (default: the wine data, target dropped).",
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
    help="Request body format.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Open loop: requests outstanding per worker before new ones are dropped.",
)
@click.option(
    "--sla",
    default=None,
    metavar="EXPR",
    help="e.g. 'p95<1000ms' or 'p99<=0.5s,errors<1%'; exit status 1 when missed.",
)
@click.option(
    "--out",
    "out_dir",
    default="stack-loadtest-output",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder on this machine for the results and report.",
)
def loadtest(name: str, **options) -> None:
    """Run a load test from the stack's Locust master and workers against its model server.

    The same options and results as `mlscale loadtest` (summary.json with exact
    HDR percentiles, timeseries.csv, report.html), with the server container's CPU
    and memory from the engine. The run's configuration becomes the Locust pods'
    ConfigMap (deploy/components/loadtest-config) and they are played again on it;
    the test starts through the master's web API, as its Start button does.
    """
    # heavy: the load-test runner and its report (pandas, plotly: 0.8 s).
    from mlscale.containers.stack_loadtest import run, target
    from mlscale.loadtest.cli import LiveLine, report_result, settings_from_options
    from mlscale.loadtest.records import Progress

    engine = find_engine()
    _plan, locust = target(engine, name, say=lambda line: None)
    settings = settings_from_options(
        {
            **options,
            "host": locust.target,
            "path": "/invocations",
            "workers": len(locust.workers),
            "signature_of": None,
            "server_pid": None,
            "web_ui": False,
            "auth_token": None,
        }
    )
    click.echo(
        f"Load test of {locust.target} from stack {name}'s Locust pods "
        f"({len(locust.workers)} workers): {settings.shape.duration_s:.0f} s, results in "
        f"{settings.out_dir}/",
        err=True,
    )
    live: list[LiveLine] = []  # made at the first progress line: the run's own clock

    def progress(line: Progress) -> None:
        if not live:
            live.append(LiveLine(settings))
        live[0](line)

    try:
        result = run(engine, name, settings, say=_say, on_progress=progress)
    finally:
        for line in live:
            line.close()
    sys.exit(report_result(result))


def _print_state(state) -> None:
    from mlscale.containers.stack import WHAT  # loaded by the command already; off start-up

    click.echo(f"{'pod':<36} {'workload':<28} {'state':<9} {'ready':<6} restarts")
    for pod in state.pods:
        ready = "-" if pod.ready is None else ("yes" if pod.ready else "no")
        click.echo(f"{pod.name:<36} {pod.workload:<28} {pod.state:<9} {ready:<6} {pod.restarts}")
    for what, label in WHAT.items():
        url = state.url(what)
        if url:
            click.echo(f"{label + ':':<14} {url}")
    tracking = state.url("tracking-ui")
    if tracking:
        click.echo(f"Register a model: mlscale train --tracking-uri {tracking}")
