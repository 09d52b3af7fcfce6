"""``mlscale demo``: the loop on one machine, with an embedded default.

Each step runs the same ``mlscale`` command a user would type, in a folder of
its own (``demo-output/`` by default): train and register the reference model
in an embedded SQLite store, serve it, score a few rows, load-test it with
stepped users like the reference, stop the server.
Every process it starts is stopped again, on success, failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from mlscale.errors import MlscaleError
from mlscale.serving.process import ServeProcess


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    out_dir: str = "demo-output"
    rows: int = 5
    startup_timeout_s: float = 120.0
    # The reference's rising load, shortened: users per phase, 1 s think time.
    steps: str = "10:10,10:50,10:100"
    think_time_s: float = 1.0


def _steps_seconds(settings: DemoSettings) -> float:
    from mlscale.loadtest.shapes import steps

    return steps("users", settings.steps).duration_s


def _load_test(settings: DemoSettings, url: str, out_dir: str, server_pid: int) -> dict:
    from mlscale.loadtest.cli import LiveLine
    from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
    from mlscale.loadtest.shapes import steps

    load = LoadTestSettings(
        host=url, shape=steps("users", settings.steps), out_dir=os.path.join(out_dir, "loadtest"),
        think_time_s=settings.think_time_s, think="random", spawn_rate=50, server_pid=server_pid,
    )  # fmt: skip
    live = LiveLine(load)
    try:
        return run_loadtest(load, on_progress=live).summary
    finally:
        live.close()


class DemoError(MlscaleError):
    """A step of the demo failed; the message says which and why."""


def _say(step: str, text: str) -> None:
    print(f"\n== {step}: {text}", flush=True)


def _mlscale(*args: str) -> list[str]:
    return [sys.executable, "-m", "mlscale", *args]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def run_demo(settings: DemoSettings) -> None:
    from mlscale.examples.wine import TARGET, load_wine

    out_dir = os.path.abspath(settings.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tracking_uri = "sqlite:///mlflow.db"  # relative: the store lives in out_dir
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    started = time.monotonic()

    _say("1/4 train", f"the reference XGBoost model, registered in {out_dir}/mlflow.db (~15 s)")
    trained = subprocess.run(
        _mlscale("train", "--tracking-uri", tracking_uri), cwd=out_dir, env=env,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    if trained.returncode != 0 or not trained.stdout.strip():
        raise DemoError("training failed (see the messages above)")
    model_uri = trained.stdout.strip().splitlines()[-1]
    print(f"registered {model_uri}")

    _say("2/4 serve", f"{model_uri} on 127.0.0.1, a free port (~5 s to load)")
    log_path = os.path.join(out_dir, "serve.log")
    server = ServeProcess(["-m", model_uri], env=env, cwd=out_dir)
    try:
        if not server.ready(settings.startup_timeout_s):
            raise DemoError(f"the server did not become ready:\n{server.output[-2000:]}")
        url = server.url
        print(f"ready at {url}; server log: {log_path}")

        _say("3/4 score", f"{settings.rows} rows of the wine data, one request")
        wine = load_wine().head(settings.rows)
        features = wine.drop(columns=[TARGET]).astype(float)
        body = {"dataframe_split": {"columns": list(features.columns),
                                    "data": features.values.tolist()}}  # fmt: skip
        print(f"curl -X POST {url}/invocations -H 'Content-Type: application/json' "
              f"-d '{json.dumps(body)[:90]}...'")  # fmt: skip
        status, answer = _http("POST", f"{url}/invocations", body)
        if status != 200:
            raise DemoError(f"scoring answered {status}: {answer[:300]!r}")
        predictions = json.loads(answer)["predictions"]
        print(f"{'alcohol':>8} {'pH':>5} {'quality':>8} {'predicted':>10}")
        for (_, row), predicted in zip(wine.iterrows(), predictions):
            print(f"{row['alcohol']:>8.1f} {row['pH']:>5.2f} {row[TARGET]:>8.0f} {predicted:>10.3f}")
        metrics = _http("GET", f"{url}/metrics")[1].decode()
        served = [line for line in metrics.splitlines()
                  if line.startswith("mlscale_requests_total") and "invocations" in line]  # fmt: skip
        print("metrics: " + "; ".join(served))

        _say("4/4 load", f"stepped load test like the reference's: {settings.steps} "
             f"users with {settings.think_time_s:g} s think time (~{_steps_seconds(settings):.0f} s)")
        summary = _load_test(settings, url, out_dir, server.pid)
    finally:
        code = server.stop()
        with open(log_path, "w") as log:
            log.write(server.output + "\n")
    if code != 0:
        raise DemoError(f"the server exited with status {code} after SIGTERM (log: {log_path})")
    latency = summary["latency_ms"]
    print(f"load test: {summary['requests']} requests, {summary['failures']} failed, "
          f"p50 {latency['p50']} ms, p95 {latency['p95']} ms; "
          f"report: {settings.out_dir}/loadtest/report.html")  # fmt: skip
    print(f"\nserver stopped cleanly. Done in {time.monotonic() - started:.0f} s. "
          f"Browse the runs: cd {settings.out_dir} && mlflow ui")  # fmt: skip
