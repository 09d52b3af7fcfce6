"""``mlscale demo``: the reference scenario's whole story on one machine.

Each step is what a user would run, in a folder of its own (``demo-output/``
by default): train and register the reference model in an embedded SQLite
store; serve it and score a few rows; a stepped load test like the
reference's; a capacity plan for p95 < 1 s on a pod-sized server; the
Kubernetes overlay rendered from that plan and validated; the reference's HPA
and cluster-autoscaler experiments replayed in the simulator with the plan's
pods; and mlscale against ``mlflow models serve`` on the same model. It ends
with ``index.html``, which links every report and shows the headline numbers.

Every process it starts is stopped again, on success, failure or Ctrl-C;
servers take free ports, so a busy port is not a problem; a second run adds a
model version and overwrites the reports, with nothing to delete first.
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

from mlscale.capacity.planner import PlanSettings, run_plan
from mlscale.capacity.pods import PodSpec, quota_supported
from mlscale.demo_compare import DemoError, compare_servers, mlflow_server, mlscale_server
from mlscale.examples.wine import TARGET, load_wine
from mlscale.k8s.render import render_plan
from mlscale.k8s.validate import validate_dir
from mlscale.loadtest.cli import LiveLine
from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import steps
from mlscale.loadtest.sla import parse_sla
from mlscale.report.index import DemoResults, LoadTestHeadline, OverlayCheck, simulation_text, write_index
from mlscale.schemas.loadtest import LoadTestSummary
from mlscale.schemas.plan import Plan
from mlscale.schemas.simulation import SimulationSummary
from mlscale.serving.process import ServeProcess
from mlscale.simulate.presets import run_preset

__all__ = ["DemoError", "DemoSettings", "run_demo"]


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    out_dir: str = "demo-output"
    rows: int = 5
    quick: bool = False  # every step shortened: under 3 minutes in all
    startup_timeout_s: float = 120.0
    think_time_s: float = 1.0
    # The reference's question: how many cores for 120 users at p95 < 1 s?
    plan_target_users: float = 120.0
    plan_sla: str = "p95<1s"

    @property
    def load_steps(self) -> str:
        """The reference's rising load, shortened: seconds:users per phase."""
        return "3:10,3:50,3:100" if self.quick else "10:10,10:50,10:100"

    @property
    def compare_s(self) -> float:
        return 3.0 if self.quick else 10.0


STEPS = 8


def _say(number: int, name: str, text: str) -> None:
    print(f"\n== {number}/{STEPS} {name}: {text}", flush=True)


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


def _train(out_dir: str, env: dict) -> str:
    trained = subprocess.run(
        [sys.executable, "-m", "mlscale", "train", "--tracking-uri", env["MLFLOW_TRACKING_URI"]],
        cwd=out_dir,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    if trained.returncode != 0 or not trained.stdout.strip():
        raise DemoError("training failed (see the messages above)")
    return trained.stdout.strip().splitlines()[-1]


def _score(settings: DemoSettings, url: str) -> None:

    wine = load_wine().head(settings.rows)
    features = wine.drop(columns=[TARGET]).astype(float)
    body = {"dataframe_split": {"columns": list(features.columns), "data": features.values.tolist()}}
    print(
        f"curl -X POST {url}/invocations -H 'Content-Type: application/json' -d '{json.dumps(body)[:90]}...'"
    )
    status, answer = _http("POST", f"{url}/invocations", body)
    if status != 200:
        raise DemoError(f"scoring answered {status}: {answer[:300]!r}")
    predictions = json.loads(answer)["predictions"]
    print(f"{'alcohol':>8} {'pH':>5} {'quality':>8} {'predicted':>10}")
    for (_, row), predicted in zip(wine.iterrows(), predictions, strict=False):
        print(f"{row['alcohol']:>8.1f} {row['pH']:>5.2f} {row[TARGET]:>8.0f} {predicted:>10.3f}")
    metrics = _http("GET", f"{url}/metrics")[1].decode()
    served = [
        line
        for line in metrics.splitlines()
        if line.startswith("mlscale_requests_total") and "invocations" in line
    ]
    print("metrics: " + "; ".join(served))


def _load_test(settings: DemoSettings, url: str, out_dir: str, server_pid: int) -> LoadTestSummary:

    load = LoadTestSettings(
        host=url,
        shape=steps("users", settings.load_steps),
        out_dir=os.path.join(out_dir, "loadtest"),
        think_time_s=settings.think_time_s,
        think="random",
        spawn_rate=50,
        server_pid=server_pid,
    )
    live = LiveLine(load)
    try:
        return run_loadtest(load, on_progress=live).summary
    finally:
        live.close()


def _plan(settings: DemoSettings, model_uri: str, out_dir: str) -> Plan:

    # A quarter of a core (a CPU quota, as the kubelet sets a limit) keeps the pod's
    # capacity within what one load-generator core can measure; where cgroups cannot
    # be written, a whole core.
    cpu = 0.25 if quota_supported() else 1.0
    plan = PlanSettings(
        sla=parse_sla(settings.plan_sla),
        kind="users",
        target=settings.plan_target_users,
        out_dir=os.path.join(out_dir, "plan"),
        pods=(PodSpec(cpu),),
        model_uri=model_uri,
        think_time_s=settings.think_time_s,
        step_s=3.0 if settings.quick else 10.0,
        # Quick: from 256 users (a quarter core carries about 400 at 1 s think time)
        # to a bracket a third wide, three or four steps of the minute this step takes;
        # the pod's start-up under its quota is most of the rest.
        precision=0.34 if settings.quick else 0.1,
        start_load=256 if settings.quick else 64,
        max_steps=10,
        quick=settings.quick,
        tracking_uri=f"sqlite:///{os.path.join(out_dir, 'mlflow.db')}",
    )
    return run_plan(plan, say=lambda text: print(text, flush=True))


def _kubernetes(plan: Plan, out_dir: str) -> OverlayCheck:

    overlay = render_plan(plan, os.path.join(out_dir, "k8s"))
    report = validate_dir(overlay)
    print(report.text())
    print(f"overlay: {overlay} (on a cluster: kubectl apply -k {overlay})")
    return OverlayCheck(
        dir=overlay,
        ok=report.ok,
        objects=len(report.objects),
        problems=tuple(str(p) for p in report.problems),
    )


def _simulate(plan: Plan, out_dir: str, shown: str) -> dict[str, SimulationSummary]:

    results = {}
    for preset in ("reference-hpa", "reference-cluster-autoscaler"):
        summary = run_preset(preset, os.path.join(out_dir, "simulate", preset), plan=plan)
        results[preset] = summary
        # The same words as index.html's, so the two never disagree.
        print(
            f"{preset}: {simulation_text(summary)}; "
            f"report: {os.path.join(shown, 'simulate', preset, 'report.html')}"
        )
    return results


def _compare(settings: DemoSettings, model_uri: str, out_dir: str, env: dict, mlscale, mlflow) -> dict:
    return compare_servers(
        model_uri,
        os.path.join(out_dir, "compare"),
        env=env,
        seconds=settings.compare_s,
        mlscale=mlscale,
        mlflow=mlflow,
    )


def run_demo(settings: DemoSettings) -> DemoResults:
    """Run every step; returns the headline numbers that index.html shows."""

    out_dir = os.path.abspath(settings.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    # An absolute store: the pods that plan starts run in other folders.
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{os.path.join(out_dir, 'mlflow.db')}"}
    started = time.monotonic()
    results = DemoResults(quick=settings.quick)

    _say(1, "train", f"the reference XGBoost model, registered in {settings.out_dir}/mlflow.db (~15 s)")
    model_uri = _train(out_dir, env)
    results.model_uri = model_uri
    print(f"registered {model_uri}")

    _say(2, "serve", f"{model_uri} on 127.0.0.1, a free port (~10 s to load)")
    log_path = os.path.join(out_dir, "serve.log")
    server = ServeProcess(["-m", model_uri], env=env, cwd=out_dir)
    try:
        if not server.ready(settings.startup_timeout_s):
            raise DemoError(f"the server did not become ready:\n{server.output[-2000:]}")
        print(f"ready at {server.url}; server log: {log_path}")

        _say(3, "score", f"{settings.rows} rows of the wine data, one request (~1 s)")
        _score(settings, server.url)

        seconds = steps("users", settings.load_steps).duration_s
        _say(
            4,
            "load",
            f"stepped load test like the reference's: {settings.load_steps} "
            f"(seconds:users) with {settings.think_time_s:g} s think time "
            f"(~{seconds + 6:.0f} s with Locust's start and the last answers)",
        )
        summary = _load_test(settings, server.url, out_dir, server.pid)
    finally:
        code = server.stop()
        with open(log_path, "w") as log:
            log.write(server.output + "\n")
    if code != 0:
        raise DemoError(f"the server exited with status {code} after SIGTERM (log: {log_path})")
    latency = summary.latency_ms
    results.loadtest = LoadTestHeadline(
        requests=summary.requests, failures=summary.failures, p50_ms=latency["p50"], p95_ms=latency["p95"]
    )
    print(
        f"load test: {summary.requests} requests, {summary.failures} failed, "
        f"p50 {latency['p50']} ms, p95 {latency['p95']} ms; "
        f"report: {settings.out_dir}/loadtest/report.html"
    )
    print("server stopped cleanly.")

    _say(
        5,
        "plan",
        f"{'quick ' if settings.quick else ''}capacity plan: "
        f"{settings.plan_target_users:g} users at {settings.plan_sla} on a pod-sized server "
        f"(~{'80 s, most of it the pod starting under its CPU quota' if settings.quick else '3 min'})",
    )
    plan = _plan(settings, model_uri, out_dir)
    if not plan.sizing:
        raise DemoError("the plan found no load that meets the SLA (see the steps above)")
    results.plan = plan
    print(plan.sizing.sentence)
    print(f"plan: {settings.out_dir}/plan/plan.json, report: {settings.out_dir}/plan/plan.html")

    # The two servers of step 8 take ~10 and ~20 s to start: they start now, on the
    # server's core, while the overlay is validated and the simulator runs; nothing
    # is measured meanwhile, so nothing is disturbed.
    compare_dir = os.path.join(out_dir, "compare")
    with mlflow_server(model_uri, compare_dir, env) as mlflow, mlscale_server(model_uri, env) as mlscale:
        _say(6, "kubernetes", "render the overlay from the plan and validate it (~5 s)")
        results.k8s = _kubernetes(plan, out_dir)
        if not results.k8s.ok:
            raise DemoError("the rendered overlay did not validate (problems above)")

        _say(
            7,
            "simulate",
            "the reference's HPA and cluster-autoscaler experiments, with the plan's pods (~15 s)",
        )
        results.simulate = _simulate(plan, out_dir, settings.out_dir)

        _say(
            8,
            "compare",
            f"mlscale against `mlflow models serve` on the same model, "
            f"{settings.compare_s:g} s each; both started with step 6 "
            f"(~{settings.compare_s * 2 + 15:.0f} s)",
        )
        results.compare = _compare(settings, model_uri, out_dir, env, mlscale, mlflow)

    results.seconds = seconds = time.monotonic() - started
    index = write_index(out_dir, results)
    print(
        f"\nDone in {seconds:.0f} s. Everything: "
        f"{os.path.join(settings.out_dir, os.path.basename(index))}  "
        f"(runs: cd {settings.out_dir} && mlflow ui)"
    )
    return results
