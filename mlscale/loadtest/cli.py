"""``mlscale loadtest``: flags to settings, a live line while it runs, the verdict after."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from mlscale.errors import ConfigurationError
from mlscale.loadtest import shapes
from mlscale.loadtest.bodies import PROTOCOL_FORMATS, v2_infer_path
from mlscale.loadtest.records import Progress
from mlscale.loadtest.runner import LoadTestResult, LoadTestSettings, check_host, run_loadtest
from mlscale.loadtest.sla import parse_sla
from mlscale.protocol.names import default_model_name

# The command's options as click passes them: flag name -> value, of each flag's own type.
Options = dict[str, Any]


def shape_from_options(options: Options) -> shapes.Shape:
    users, rate = options["users"], options["rate"]
    if users is not None and rate is not None:
        raise ConfigurationError("Give --users (closed loop) or --rate (open loop), not both.")
    kind = shapes.RPS if (rate is not None or options["rate_steps"]) else shapes.USERS
    chosen = [n for n in ("steps", "spike", "shape_file") if options[n]]
    if len(chosen) > 1:
        raise ConfigurationError("Give one of --steps, --spike and --shape.")
    duration = options["duration"]
    if options["steps"]:
        return shapes.steps(kind, options["steps"])
    if options["shape_file"]:
        return shapes.read_profile(options["shape_file"], duration)
    base = rate if kind == shapes.RPS else users
    if options["spike"]:
        try:
            base_v, peak, at, width = (float(x) for x in options["spike"].split(":"))
        except ValueError:
            raise ConfigurationError("--spike takes BASE:PEAK:AT:WIDTH, e.g. 10:50:20:10.") from None
        return shapes.spike(kind, base_v, peak, duration or 60.0, at, width)
    if base is None:
        raise ConfigurationError("Say how much load: --users N, --rate RPS, --steps, --spike or --shape.")
    if options["ramp_to"] is not None:
        return shapes.ramp(kind, base, options["ramp_to"], duration or 60.0)
    return shapes.constant(kind, base, duration or 30.0)


def protocol_path_and_format(options: Options) -> tuple[str, str]:
    """The scoring path and body format that --protocol, --model-name, --path and
    --format ask for together."""
    protocol, name = options.get("protocol") or "mlflow", options.get("model_name")
    body_format = options.get("body_format")
    if protocol == "v2":
        if body_format:
            raise ConfigurationError(
                f"--format {body_format} is an MLflow body; --protocol v2 sends V2 infer requests."
            )
        if options.get("path"):
            return options["path"], PROTOCOL_FORMATS["v2"]
        if not name and options.get("signature_of"):
            name = default_model_name(options["signature_of"])
        if not name:
            raise ConfigurationError(
                "--protocol v2 needs the model's name for /v2/models/NAME/infer: give --model-name "
                "(the server's --model-name), or --from-signature MODEL_URI to take its default."
            )
        return v2_infer_path(name), PROTOCOL_FORMATS["v2"]
    if name:
        raise ConfigurationError("--model-name names the model in V2 paths: use it with --protocol v2.")
    return options.get("path") or "/invocations", body_format or PROTOCOL_FORMATS["mlflow"]


def settings_from_options(options: Options) -> LoadTestSettings:
    if options["data"] and options["signature_of"]:
        raise ConfigurationError("Give --data or --from-signature, not both.")
    path, body_format = protocol_path_and_format(options)
    return LoadTestSettings(
        host=check_host(options["host"]),
        path=path,
        shape=shape_from_options(options),
        out_dir=options["out_dir"],
        spawn_rate=options["spawn_rate"],
        think_time_s=options["think_time"],
        think="random" if options["random_think"] else "constant",
        arrival=options["arrival"],
        workers=options["workers"],
        data=options["data"],
        signature_of=options["signature_of"],
        rows_per_request=options["rows_per_request"],
        mix=options["mix"],
        body_format=body_format,
        max_in_flight=options["max_in_flight"],
        sla=parse_sla(options["sla"]) if options["sla"] else None,
        server_pid=options["server_pid"],
        web_ui=options["web_ui"],
        auth_token=options["auth_token"] or None,  # an empty variable means no token
    )


class LiveLine:
    """One status line, rewritten each second on a terminal, appended otherwise."""

    def __init__(self, settings: LoadTestSettings) -> None:
        self.settings = settings
        self.started = time.monotonic()
        self.tty = sys.stderr.isatty()

    def __call__(self, progress: Progress) -> None:
        elapsed = time.monotonic() - self.started
        total = self.settings.shape.duration_s
        load = (
            f"{progress['users']} users"
            if self.settings.mode == "closed"
            else f"target {self.settings.shape.value_at(elapsed) or 0:.0f} rps"
        )
        p95 = progress.get("p95_ms")
        line = (
            f"{elapsed:5.0f}/{total:.0f} s  {load}  {progress['requests']} req/s  "
            f"p95 {'–' if p95 is None else f'{p95:.1f} ms'}  "
            f"errors {progress['failures']}/s"
        )
        if self.tty:
            click.echo("\r" + line.ljust(78), nl=False, err=True)
        else:
            click.echo(line, err=True)

    def close(self) -> None:
        if self.tty:
            click.echo("", err=True)


def run_from_options(options: Options) -> int:
    settings = settings_from_options(options)
    mode = "open loop" if settings.mode == "open" else "closed loop"
    click.echo(
        f"Load test of {settings.host}{settings.path}: {mode}, "
        f"{settings.shape.duration_s:.0f} s, results in {settings.out_dir}/",
        err=True,
    )
    live = LiveLine(settings)
    try:
        result = run_loadtest(settings, on_progress=live)
    finally:
        live.close()
    return report_result(result)


def report_result(result: LoadTestResult) -> int:
    """The run's verdict on the terminal; the exit status (1: the SLA was missed)."""
    summary = result.summary
    latency = summary.latency_ms

    def fmt(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f} ms"

    click.echo(
        f"{summary.requests} requests, {summary.failures} failed, "
        f"{summary.rps:.1f} req/s; p50 {fmt(latency['p50'])}, p95 {fmt(latency['p95'])}, "
        f"p99 {fmt(latency['p99'])}, max {fmt(latency['max'])}"
    )
    for error in summary.errors[:5]:
        click.echo(f"  {error.count} × {error.error} ({error.kind})")
    for problem in summary.problems:
        click.echo(f"INVALID: {problem}", err=True)
    click.echo(f"Report: {result.out_dir}/report.html")
    if summary.sla is not None:
        verdict = "met" if summary.sla.met else "MISSED"
        click.echo(f"SLA {summary.sla.expr}: {verdict}")
        return 0 if summary.sla.met else 1
    return 0
