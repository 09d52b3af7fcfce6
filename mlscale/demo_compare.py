"""mlscale against ``mlflow models serve`` on one model, a few seconds each.

The demo's short version of ``benchmarks/serve_bench.py``: the same closed-loop
load (16 users, no think time, one-row requests) against each server in turn,
the server pinned to one core and the load generator to another, so that the
ratio of their throughputs is read in one run on one machine. When the load
generator is the bottleneck (mlscale can outrun one Locust core), the ratio is
reported as a lower bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from mlscale.errors import MlscaleError
from mlscale.examples.wine import FEATURES
from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.processes import free_port, start_group, stop_group
from mlscale.serving.process import ServeProcess


class DemoError(MlscaleError):
    """A step of the demo failed; the message says which and why.

    Defined here, in the lower of the demo's two modules: ``demo`` imports this one
    (and re-exports the error), never the reverse."""


USERS = 16
ROW = [7.0, 0.27, 0.36, 20.7, 0.045, 45.0, 170.0, 1.001, 3.0, 0.45, 8.8]


def _cores() -> tuple[list[str], tuple[int, ...] | None]:
    """taskset prefix for the server, and the generator's cores (None: unpinned)."""
    if (os.cpu_count() or 1) < 2:
        return [], None
    return ["taskset", "-c", "0"], tuple(range(1, os.cpu_count() or 2))


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _warm_up(url: str, requests: int = 50) -> None:
    """A server's first requests pay for lazy imports and first calls (mlflow's take
    hundreds of milliseconds): sent before, not counted."""
    body = (
        f'{{"dataframe_split": {{"columns": {json.dumps(FEATURES)}, "data": [{json.dumps(ROW)}]}}}}'
    ).encode()
    for _ in range(requests):
        request = urllib.request.Request(
            f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()


def _measure(url: str, out_dir: str, seconds: float, generator: tuple[int, ...] | None) -> dict:

    _warm_up(url)
    result = run_loadtest(
        LoadTestSettings(
            host=url,
            shape=constant("users", USERS, seconds),
            out_dir=out_dir,
            think_time_s=0.0,
            spawn_rate=USERS,
            cpu_affinity=generator,
            report=False,
        )
    )
    summary = result.summary
    return {
        "rps": summary.rps,
        "p50_ms": summary.latency_ms["p50"],
        "p99_ms": summary.latency_ms["p99"],
        "failures": summary.failures,
        "valid": summary.valid,
        "problems": list(summary.problems),
    }


def _mlflow_server(model_uri: str, env: dict, prefix: list[str], log_path: str):
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    # mlflow launches uvicorn by name: this environment's must come first on PATH.
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    env.pop("MLFLOW_MODELS_WORKERS", None)
    log = open(log_path, "wb")
    process = start_group(
        [
            *prefix,
            os.path.join(bin_dir, "mlflow"),
            "models",
            "serve",
            "-m",
            model_uri,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "--env-manager",
            "local",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    log.close()
    return process, f"http://127.0.0.1:{port}"


@contextmanager
def mlflow_server(model_uri: str, out_dir: str, env: dict) -> Iterator[tuple[subprocess.Popen, str]]:
    """``mlflow models serve`` on the server's core, starting (it takes ~20 s); its
    whole group is stopped on leaving the block."""
    os.makedirs(out_dir, exist_ok=True)
    prefix, _ = _cores()
    process, url = _mlflow_server(model_uri, env, prefix, os.path.join(out_dir, "mlflow.log"))
    try:
        yield process, url
    finally:
        stop_group(process, grace_s=15)  # mlflow serves from a child of its launcher


@contextmanager
def mlscale_server(model_uri: str, env: dict) -> Iterator[ServeProcess]:
    """``mlscale serve`` on the server's core, starting; stopped on leaving the block."""
    prefix, _ = _cores()
    server = ServeProcess(["-m", model_uri], prefix=prefix, env=env)
    try:
        yield server
    finally:
        server.stop()


def _wait_mlflow(mlflow: tuple[subprocess.Popen, str], out_dir: str) -> None:
    process, url = mlflow
    if not _wait_ready(url, process, 180):
        raise DemoError(f"mlflow models serve did not start; log: {out_dir}/mlflow.log")


def compare_servers(
    model_uri: str,
    out_dir: str,
    *,
    env: dict,
    seconds: float,
    mlscale: ServeProcess | None = None,
    mlflow: tuple[subprocess.Popen, str] | None = None,
) -> dict:
    """``mlscale``, ``mlflow``: servers of :func:`mlscale_server` and
    :func:`mlflow_server` already started (the demo starts them while its other
    steps run, as their start is most of this step); without them, each is started
    in turn. Each is stopped once measured."""
    os.makedirs(out_dir, exist_ok=True)
    _, generator = _cores()
    results: dict = {"users": USERS, "seconds": seconds}
    if mlflow is not None:
        # Started on the server's core: finished starting before mlscale is measured there.
        _wait_mlflow(mlflow, out_dir)

    with ExitStack() as stack:
        if mlscale is None:
            mlscale = stack.enter_context(mlscale_server(model_uri, env))
        try:
            if not mlscale.ready(120):
                raise DemoError(f"mlscale serve did not start:\n{mlscale.output[-1500:]}")
            results["mlscale"] = _measure(mlscale.url, os.path.join(out_dir, "mlscale"), seconds, generator)
        finally:
            mlscale.stop()  # not to share the core with mlflow's measurement
    print(
        f"mlscale serve:       {results['mlscale']['rps']:8.0f} req/s, p50 {results['mlscale']['p50_ms']} ms",
        flush=True,
    )

    with ExitStack() as stack:
        if mlflow is None:
            mlflow = stack.enter_context(mlflow_server(model_uri, out_dir, env))
            _wait_mlflow(mlflow, out_dir)
        results["mlflow"] = _measure(mlflow[1], os.path.join(out_dir, "mlflow"), seconds, generator)
    print(
        f"mlflow models serve: {results['mlflow']['rps']:8.0f} req/s, p50 {results['mlflow']['p50_ms']} ms",
        flush=True,
    )

    results["speedup"] = results["mlscale"]["rps"] / max(results["mlflow"]["rps"], 1e-9)
    # A saturated generator held mlscale back: the true ratio is higher.
    results["lower_bound"] = not results["mlscale"]["valid"]
    bound = "at least " if results["lower_bound"] else ""
    print(
        f"speed-up: {bound}{results['speedup']:.1f}x"
        + (
            " (the load generator was the limit; `make bench` measures with wrk)"
            if results["lower_bound"]
            else ""
        )
    )
    return results
