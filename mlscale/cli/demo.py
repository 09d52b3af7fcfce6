"""``mlscale demo``: the reference scenario on this machine, end to end."""

from __future__ import annotations

import click

from mlscale.interrupts import signals_unwind, stop_descendants


@click.command()
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
    # heavy: the demo imports every engine it runs (planner, simulator, reports).
    from mlscale.demo import DemoSettings, run_demo

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
