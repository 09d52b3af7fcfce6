"""``mlscale stack loadtest``: a load test run by the stack's Locust master and workers.

The run's configuration (the shape, the user's behaviour, the request bodies
inline) is what ``mlscale loadtest`` writes for its own Locust processes; here it
becomes the ConfigMap of deploy/components/loadtest-config, and the Locust pods
are played again on it, exactly as ``kubectl apply`` would roll them on a
cluster. The test is started through the master's web API (``POST /swarm``,
what its Start button does); the master writes its merged HDR histograms when
the shape ends; meanwhile the server's and the generators' containers are
sampled from the engine. The summary, time series and report are then
``mlscale loadtest``'s own (:func:`mlscale.loadtest.runner.collect`), written
on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mlscale.containers import stack
from mlscale.containers.engine import Engine
from mlscale.containers.readiness import wait_ready
from mlscale.containers.stats import EngineMonitor, busiest_share
from mlscale.containers.translate import PodPlan, StackPlan
from mlscale.errors import ConfigurationError, ContainerError
from mlscale.loadtest import RESULTS_FILE
from mlscale.loadtest.records import Progress
from mlscale.loadtest.runner import LoadTestResult, LoadTestSettings, collect, locust_config, request_pool

#: Where the master writes its results in its container: the component's "out".
RESULTS_DIR = "/tmp/mlscale-loadtest"
#: Kubernetes holds a ConfigMap to 1 MiB.
MAX_CONFIG_BYTES = 1_000_000
# Locust needs a moment after the shape to drain and write its results.
_GRACE_S = 90.0
_WORKERS_WAIT_S = 120.0
# A generator container busier than this share of its CPU limit was the bottleneck.
_GENERATOR_LIMIT = 0.9


@dataclass(frozen=True)
class LocustPods:
    """The stack's load generator, as its manifests run it."""

    master: PodPlan
    workers: tuple[PodPlan, ...]
    target: str  # the master's TARGET_HOST: http://mlscale-server:8080


def locust_pods(plan: StackPlan) -> LocustPods:
    """The Locust master and workers of ``plan``, told apart by their ``locust``
    command's ``--master`` or ``--worker``."""
    masters, workers = [], []
    for pod in plan.pods:
        commands = [c.command for c in pod.containers]
        if any(c and c[0].rsplit("/", 1)[-1] == "locust" and "--master" in c for c in commands):
            masters.append(pod)
        elif any(c and c[0].rsplit("/", 1)[-1] == "locust" and "--worker" in c for c in commands):
            workers.append(pod)
    if len(masters) != 1 or not workers:
        raise ConfigurationError(
            f"the stack has {len(masters)} Locust master(s) and {len(workers)} "
            "worker(s); a load test needs one master and a worker"
        )
    target = _env(masters[0], "TARGET_HOST")
    if not target:
        raise ConfigurationError(f"{masters[0].workload} sets no TARGET_HOST: nothing to load")
    return LocustPods(masters[0], tuple(workers), target)


def pods_behind(plan: StackPlan, url: str) -> list[PodPlan]:
    """The pods a URL inside the stack reaches: those aliased by its host name."""
    host = urlparse(url).hostname
    return [pod for pod in plan.pods if host in pod.aliases]


def _env(pod: PodPlan, name: str) -> str | None:
    for document in pod.documents:
        if document.get("kind") == "Pod":
            for container in document["spec"]["containers"]:
                for var in container.get("env") or []:
                    if var["name"] == name and "value" in var:
                        return var["value"]
    return None


def target(engine: Engine, name: str, *, say: stack.Say) -> tuple[StackPlan, LocustPods]:
    """The running stack's plan (as its manifests render now) and its Locust pods."""
    current = stack.state(engine, name, probe=False)
    if not current.pods:
        raise ContainerError(f"stack {name} is not up: `mlscale stack up` first")
    source = stack.stack_source(engine, name)
    ports = {what: port for pod in current.pods for what, port in pod.published}
    plan = stack.plan_stack(
        engine,
        stack.UpSettings(name=name, source=source, build=False),
        say=say,
        host_ports=ports,
        running=stack.running_images(engine, name),
    )
    return plan, locust_pods(plan)


def run(
    engine: Engine,
    name: str,
    settings: LoadTestSettings,
    *,
    say: stack.Say,
    on_progress: Callable[[Progress], None] | None = None,
) -> LoadTestResult:
    """Run ``settings`` from the stack's Locust pods; the results go to
    ``settings.out_dir`` on this machine."""
    stack.require_podman(engine)
    current = stack.state(engine, name, probe=False)
    locust_url = current.url("locust-ui")
    if locust_url is None:
        raise ContainerError(f"stack {name} publishes no Locust UI: `mlscale stack up` again")
    server_url = current.url("model-server")
    if server_url and not _answers(f"{server_url}/ping"):
        tracking = current.url("tracking-ui")
        raise ContainerError(
            f"the model server at {server_url} is not ready: register its model first "
            f"(mlscale train --tracking-uri {tracking}), then wait for `mlscale stack status "
            f"--name {name}` to show it ready"
        )
    config = locust_config(settings, out=RESULTS_DIR, pool=request_pool(settings), summarize=True)
    size = len(json.dumps(config))
    if size > MAX_CONFIG_BYTES:
        raise ConfigurationError(
            f"the run's request bodies take {size / 1e6:.1f} MB, more than a ConfigMap holds "
            "(1 MiB): fewer --rows-per-request, or a smaller --mix"
        )
    ports = {what: port for pod in current.pods for what, port in pod.published}
    source = stack.stack_source(engine, name)
    plan = stack.plan_stack(
        engine,
        stack.UpSettings(name=name, source=source, build=False),
        say=say,
        run_config=config,
        host_ports=ports,
        running=stack.running_images(engine, name),
    )
    locust = locust_pods(plan)
    if len(locust.workers) != settings.workers:
        raise ConfigurationError(
            f"the settings count {settings.workers} workers; the stack runs {len(locust.workers)}"
        )
    started = time.monotonic()
    say(
        f"Locust pods: playing {locust.master.name} and {len(locust.workers)} workers on the "
        "run's configuration (ConfigMap locust-loadtest)"
    )
    replaced = [
        pod
        for pod in stack.stack_pods(engine, name)
        if pod["Name"] in {p.name for p in (locust.master, *locust.workers)}
    ]
    for pod in (locust.master, *locust.workers):
        stack.play(engine, plan, pod, replace=True)
    stack.remove_configmap_volumes(engine, replaced)  # the previous run's, now unused
    wait_ready(
        engine, plan, [locust.master, *locust.workers], started=started, deadline=started + 300, say=say
    )
    _wait_workers(locust_url, len(locust.workers))

    servers = [c.engine_name for pod in pods_behind(plan, locust.target) for c in pod.containers]
    generators = [c.engine_name for pod in (locust.master, *locust.workers) for c in pod.containers]
    limits = {c.engine_name: c.cpu_limit for pod in (locust.master, *locust.workers) for c in pod.containers}
    monitor = EngineMonitor(
        engine, servers, generators, metrics_url=f"{server_url}/metrics" if server_url else None
    ).start()
    master = locust.master.containers[0].engine_name
    try:
        _swarm(locust_url)
        killed = _follow(locust_url, settings.shape.duration_s + _GRACE_S, on_progress)
        _wait_for_results(engine, master, deadline=time.monotonic() + 60)
    finally:
        samples = monitor.stop()
    out = os.path.abspath(settings.out_dir)
    os.makedirs(out, exist_ok=True)
    results = engine.run("exec", master, "cat", f"{RESULTS_DIR}/{RESULTS_FILE}", timeout=60)
    Path(out, RESULTS_FILE).write_text(results.stdout)
    log_path = os.path.join(out, "locust.log")
    logs = engine.run("logs", master, check=False)
    Path(log_path).write_text(logs.stdout + logs.stderr)
    # The configuration as the pods read it, less the bodies (they are kept inline).
    bodies = sum(len(kind["bodies"]) for kind in config["pool"]["kinds"])
    shown = {**config, "pool": f"({bodies} request bodies, inline)"}
    Path(out, "locust_config.json").write_text(json.dumps(shown, indent=2))

    raw = json.loads(results.stdout)
    problems = []
    busiest = busiest_share(
        monitor.generator_cores, limits, start=raw["start"] or 0, end=raw["end"] or time.time()
    )
    if busiest is not None and busiest[1] > _GENERATOR_LIMIT:
        limit = limits.get(busiest[0])
        problems.append(
            f"load generator container {busiest[0]} used {busiest[1] * 100:.0f} % of its CPU "
            f"limit ({limit or 1:g} core): it was the bottleneck, not the server. Run fewer "
            "users, or more workers (replicas of the locust-worker Deployment)"
        )
    notes = [
        f"server CPU and memory: {engine.name} stats of {', '.join(servers)} (the "
        "container's cgroup: CPU time per second, memory in use less page cache)",
        f"run from stack {name}'s Locust pods: {locust.master.name} and "
        f"{', '.join(p.name for p in locust.workers)}",
    ]
    return collect(settings, out, samples, killed=killed, log_path=log_path, problems=problems, notes=notes)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _get(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.loads(answer.read())


def _wait_workers(locust_url: str, count: int) -> None:
    """Poll the master until ``count`` workers have connected."""
    deadline = time.monotonic() + _WORKERS_WAIT_S
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = _get(f"{locust_url}/stats/requests").get("worker_count")
        except (urllib.error.URLError, OSError, ValueError):
            seen = None
        if seen == count:
            return
        time.sleep(0.5)
    raise ContainerError(
        f"only {seen} of {count} Locust workers connected to the master in {_WORKERS_WAIT_S:.0f} s"
    )


def _swarm(locust_url: str) -> None:
    """Start the test: with the configured shape, the master runs it (the user count
    and spawn rate of the form are the shape's to decide)."""
    body = urllib.parse.urlencode({"user_count": 1, "spawn_rate": 1}).encode()
    with urllib.request.urlopen(f"{locust_url}/swarm", data=body, timeout=10) as answer:
        reply = json.loads(answer.read())
    if not reply.get("success"):
        raise ContainerError(f"the Locust master did not start the test: {reply.get('message')}")


def _follow(locust_url: str, limit_s: float, on_progress: Callable[[Progress], None] | None) -> bool:
    """Poll the master once a second until its test stops; True when it had to be
    stopped at ``limit_s``."""
    deadline = time.monotonic() + limit_s
    running = False
    while time.monotonic() < deadline:
        try:
            stats = _get(f"{locust_url}/stats/requests")
        except (urllib.error.URLError, OSError, ValueError):
            stats = {}
        state = stats.get("state")
        if state in ("spawning", "running"):
            running = True
            if on_progress is not None:
                percentiles = stats.get("current_response_time_percentiles") or {}
                on_progress(
                    {
                        "users": stats.get("user_count", 0),
                        "requests": round(stats.get("current_rps") or 0),
                        "failures": round(stats.get("current_fail_per_sec") or 0),
                        "p95_ms": percentiles.get("response_time_percentile_0.95"),
                    }
                )
        elif running and state in ("stopped", "ready"):
            return False
        time.sleep(1.0 - (time.time() % 1.0))
    with contextlib.suppress(urllib.error.URLError, OSError):
        urllib.request.urlopen(f"{locust_url}/stop", timeout=10).close()
    return True


def _wait_for_results(engine: Engine, master: str, *, deadline: float) -> None:
    while time.monotonic() < deadline:
        done = engine.run("exec", master, "test", "-s", f"{RESULTS_DIR}/{RESULTS_FILE}", check=False)
        if done.returncode == 0:
            return
        time.sleep(0.5)
    logs = engine.run("logs", "--tail", "15", master, check=False)
    raise ContainerError(
        f"the Locust master wrote no results in {RESULTS_DIR}; its last log "
        f"lines:\n{(logs.stdout + logs.stderr)[-2000:]}"
    )
