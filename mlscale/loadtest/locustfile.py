"""The locustfile mlscale ships: scoring requests, closed or open loop, exact histograms.

Run by Locust, never imported by mlscale. Its configuration is a JSON file
named by ``MLSCALE_LOADTEST_CONFIG`` (``mlscale loadtest`` writes it, and
``mlscale stack loadtest`` mounts it into the Locust containers as a
ConfigMap); without one it runs the reference scenario's closed loop on the
bundled wine data against ``--host`` or ``TARGET_HOST``, so the same file runs
unchanged in a Locust master/worker deployment on Kubernetes. A master started
with a configuration runs its shape each time a test is started (from the web
UI or ``POST /swarm``) and writes that test's results to the configured folder.

Every process records latencies in per-second HDR histograms (see
``mlscale.loadtest.histograms``). Workers send their closed seconds to the
master once a second and everything on stop; the master (or the single local
process) merges them, prints one progress line a second, and writes the merged
results when the test stops. When the shape is over, the users are stopped
first and the generators get a moment to send their last seconds, because
Locust's own quit does not wait for workers' last messages.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field

import gevent
from locust import LoadTestShape, User, events, task
from locust.runners import MasterRunner, WorkerRunner

from mlscale.loadtest import CONFIG_ENV, PROGRESS_PREFIX, RESULTS_FILE
from mlscale.loadtest.client import Connection, ConnectionPool, Target, build_request
from mlscale.loadtest.histograms import Recorder, Store, new_histogram, values_at_percentiles
from mlscale.loadtest.records import LocustConfig, LocustResults, PoolRecord, Progress
from mlscale.loadtest.shapes import Shape


def _load_config() -> LocustConfig:
    path = os.environ.get(CONFIG_ENV)
    if path:
        with open(path) as handle:
            config: LocustConfig = json.load(handle)
        # The bodies: a file beside the configuration (`mlscale loadtest`), or inline
        # (one file, as in a Kubernetes ConfigMap), or else the reference's wine rows.
        if "pool" not in config and config.get("bodies"):
            with open(config["bodies"]) as handle:
                config["pool"] = json.load(handle)
        if "pool" not in config:
            config["pool"] = _reference_pool()
        return config
    # No configuration: the reference scenario's user, one wine row per request,
    # one second between requests, for as long as Locust is told to run.
    return {
        "mode": "closed",
        "think_time_s": 1.0,
        "think": "constant",
        "path": "/invocations",
        "pool": _reference_pool(),
    }


def _reference_pool() -> PoolRecord:
    # Only without a configured pool; the bodies module brings pandas (about 0.3 s) into
    # every Locust process otherwise.
    from mlscale.loadtest.bodies import build_pool, load_frame, parse_mix

    return build_pool(load_frame(), parse_mix(None), "split").to_dict()


CONFIG = _load_config()
POOL = CONFIG["pool"]
PATH = CONFIG.get("path", "/invocations")
HEADERS = {"Content-Type": POOL["content_type"]}
# A server started with --auth-token: the same variable here (from the environment,
# never from the config file, which is kept with the results).
if os.environ.get("MLSCALE_AUTH_TOKEN"):
    HEADERS["Authorization"] = f"Bearer {os.environ['MLSCALE_AUTH_TOKEN']}"
KINDS = [kind["name"] for kind in POOL["kinds"]]
WEIGHTS = [kind["weight"] for kind in POOL["kinds"]]
BODIES = {kind["name"]: [b.encode() for b in kind["bodies"]] for kind in POOL["kinds"]}
_SHAPE_RECORD = CONFIG.get("shape")
SHAPE = Shape.from_dict(_SHAPE_RECORD) if _SHAPE_RECORD else None
LATE_S = CONFIG.get("late_threshold_s", 0.01)

recorder = Recorder()
store = Store()


@dataclass
class _TestState:
    """The running test's times, workers and warnings, for its results file."""

    start: float | None = None
    end: float | None = None
    workers: list[tuple[int, int | None]] = field(default_factory=list)
    cpu_warnings: int = 0


_state = _TestState()
# Once the shape is over, users are stopped and the generators get this long to
# send their last seconds before Locust quits. Locust's own quit does not wait
# for workers' last messages, so this is what makes the results complete.
_DRAIN_S = 2.5


class Requests:
    """Every request body of the pool as a whole HTTP request for one target,
    written once: a request costs the generator one ``sendall`` of it."""

    def __init__(self, host: str) -> None:
        self.target = Target.from_url(host)
        self.by_kind = {
            kind: [build_request(self.target, PATH, body, HEADERS) for body in bodies]
            for kind, bodies in BODIES.items()
        }

    def pick(self) -> tuple[str, bytes]:
        kind = random.choices(KINDS, WEIGHTS)[0] if len(KINDS) > 1 else KINDS[0]
        return kind, random.choice(self.by_kind[kind])


_prepared: dict[str, Requests] = {}


def _requests(host: str | None) -> Requests:
    if not host:
        raise ValueError("no target: give --host or TARGET_HOST")
    if host not in _prepared:
        _prepared[host] = Requests(host)
    return _prepared[host]


def _describe(status: int, error: object) -> str:
    if status:
        return f"HTTP {status}"
    return type(error).__name__ if error is not None else "no response"


def _send(
    user: ScoringUser | ArrivalUser, connection: Connection | ConnectionPool, intended: float | None = None
) -> None:
    """One request; latency from ``intended`` (open loop) or from the send (closed)."""
    kind, request = user.requests.pick()
    started = time.perf_counter()
    answer = None
    try:
        answer = connection.send(request)
        status, error = answer.status, None
    except Exception as exc:  # refused, reset, timed out, unparseable: counted, never raised
        status, error = 0, exc
    done = time.perf_counter()
    second = int(time.time())
    ok = error is None and 200 <= status < 400
    if ok:
        if intended is None:
            recorder.success(second, kind, done - started)
        else:
            recorder.success(second, kind, done - intended, done - started)
    else:
        recorder.failure(second, kind, _describe(status, error))
    # Locust's own statistics too, for its web UI's tables and charts (they cost the
    # generator almost nothing: measured within noise at 64 and at 10,000 users).
    user.environment.events.request.fire(
        request_type="POST",
        name=kind,
        response_time=(done - (intended or started)) * 1000,
        response_length=len(answer.body) if answer else 0,
        context={},
        response=None,
        exception=None if ok else (error or _describe(status, error)),
    )


class ScoringUser(User):
    """Closed loop: send, wait for the answer, think, repeat (the reference's user).

    Each user has its own keep-alive connection, as a FastHttpUser does.
    """

    abstract = CONFIG["mode"] != "closed"
    host = os.environ.get("TARGET_HOST")

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.requests = _requests(self.host)
        self.connection = Connection(self.requests.target)

    def wait_time(self) -> float:
        think = CONFIG.get("think_time_s", 1.0)
        # "random": uniform on [0, 2T], the same mean, so users do not march in lockstep.
        return random.uniform(0, 2 * think) if CONFIG.get("think") == "random" else think

    def on_start(self) -> None:
        # A user starts at a random point of its think time, as if it had been running
        # all along. Users that fire their first request the moment they spawn send a
        # burst (N requests at once for N users spawned in one second) whose queue
        # lands in the percentiles of a short step.
        gevent.sleep(random.uniform(0, CONFIG.get("think_time_s", 1.0)))

    def on_stop(self) -> None:
        self.connection.close()

    @task
    def score(self) -> None:
        _send(self, self.connection)


class ArrivalUser(User):
    """Open loop: dispatch requests at scheduled times, whether or not answers came back.

    Each dispatcher sends its share of the target rate; every request runs in a
    greenlet of its own and its latency counts from its scheduled time, so a
    server that stalls shows in the percentiles (no coordinated omission).
    """

    abstract = CONFIG["mode"] != "open"
    host = os.environ.get("TARGET_HOST")

    def __init__(self, environment) -> None:
        super().__init__(environment)
        self.requests = _requests(self.host)
        self.connections = ConnectionPool(self.requests.target)

    def on_stop(self) -> None:
        self.connections.close()

    def wait_time(self) -> float:
        return 0.0

    @task
    def dispatch(self) -> None:
        dispatchers = max(1, CONFIG.get("dispatchers", 1))
        poisson = CONFIG.get("arrival", "poisson") == "poisson"
        limit = CONFIG.get("max_in_flight", 1000)
        in_flight = [0]
        start = _state.start or time.time()
        offset = time.perf_counter() - (time.time() - start)  # perf_counter at test start
        scheduled = time.perf_counter()

        def run(intended: float) -> None:
            try:
                _send(self, self.connections, intended)
            finally:
                in_flight[0] -= 1

        while True:
            elapsed = time.perf_counter() - offset
            rate = (SHAPE.value_at(elapsed) if SHAPE else CONFIG.get("rps", 1.0)) or 0.0
            if rate <= 0:
                gevent.sleep(0.05)
                scheduled = time.perf_counter()
                continue
            per_dispatcher = rate / dispatchers
            scheduled += random.expovariate(per_dispatcher) if poisson else 1 / per_dispatcher
            delay = scheduled - time.perf_counter()
            if delay > 0:
                gevent.sleep(delay)
            elif -delay > LATE_S:
                recorder.late(int(time.time()))
            if in_flight[0] >= limit:
                recorder.dropped(int(time.time()))
                continue
            in_flight[0] += 1
            gevent.spawn(run, scheduled)


if SHAPE is not None:
    _CONFIGURED_SHAPE: Shape = SHAPE  # not None here, for the class below

    class ConfiguredShape(LoadTestShape):
        """Users (closed loop) or dispatchers (open loop) over the configured shape."""

        shape = _CONFIGURED_SHAPE

        def tick(self) -> tuple[int, float] | None:
            elapsed = self.get_run_time()
            value = self.shape.value_at(elapsed)
            if value is None:
                if _state.end is None:
                    _state.end = time.time()
                if elapsed < self.shape.duration_s + _DRAIN_S:
                    return 0, 10_000  # stop the users; their last seconds are still coming
                return None
            if CONFIG["mode"] == "open":
                dispatchers = max(1, CONFIG.get("dispatchers", 1))
                return dispatchers, dispatchers
            return round(value), CONFIG.get("spawn_rate", 10.0)


def _flush(runner, everything: bool = False) -> None:
    windows = recorder.drain(None if everything else int(time.time()))
    if not windows:
        return
    if isinstance(runner, WorkerRunner):
        # Locust annotates the data as a dict; any value msgpack encodes travels (a list here).
        runner.send_message("mlscale_windows", windows)  # type: ignore[arg-type]
    else:
        store.add(windows)


def _flusher(environment) -> None:
    while True:
        gevent.sleep(1.0 - (time.time() % 1.0))
        _flush(environment.runner)
        if not isinstance(environment.runner, WorkerRunner):
            _progress(environment)


def _progress(environment) -> None:
    """One machine-readable line a second, for mlscale's live view.

    A master reports the second before last: its workers send each second's
    windows at the turn of the second, the same moment this runs, so the last
    second's have not arrived yet (reporting it showed 0 requests).
    """
    runner = environment.runner
    second = int(time.time()) - (2 if isinstance(runner, MasterRunner) else 1)
    window = store.windows.get(second)
    merged, failures = new_histogram(), 0
    if window is not None:
        for histogram in window.latency.values():
            merged.add(histogram)
        failures = sum(window.failures.values())
    workers = runner.worker_count if isinstance(runner, MasterRunner) else None
    _state.workers.append((second, workers))
    line: Progress = {
        "second": second,
        "users": runner.user_count,
        "requests": merged.get_total_count(),
        "failures": failures,
        # Only the p95, computed in one pass: this runs on the generator's event loop.
        "p95_ms": values_at_percentiles(merged, [95.0])[0] / 1000 if merged.get_total_count() else None,
        "workers": workers,
    }
    print(PROGRESS_PREFIX + json.dumps(line), file=sys.stdout, flush=True)


@events.init.add_listener
def _on_init(environment, **_kwargs) -> None:
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message(
            "mlscale_windows", lambda environment, msg, **_: store.add(msg.data)
        )
    gevent.spawn(_flusher, environment)


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    # A master in a deployment runs one test after another (each started from its
    # web UI or API): each test's results are its own.
    if not isinstance(environment.runner, WorkerRunner):
        store.windows.clear()
        _state.start, _state.end, _state.workers, _state.cpu_warnings = time.time(), None, [], 0


@events.cpu_warning.add_listener
def _on_cpu_warning(environment, cpu_usage, **_kwargs) -> None:
    _state.cpu_warnings += 1


@events.test_stop.add_listener
def _on_test_stop(environment, **_kwargs) -> None:
    _flush(environment.runner, everything=True)
    if isinstance(environment.runner, WorkerRunner):
        return
    _state.end = _state.end or time.time()
    out = CONFIG.get("out")
    if not out:
        return
    results: LocustResults = {
        "start": _state.start,
        "end": _state.end,
        "windows": store.encode(),
        "workers": _state.workers,
        "cpu_warnings": _state.cpu_warnings,
        "expected_workers": getattr(environment.parsed_options, "expect_workers", None),
    }
    # Written whole, then renamed: a reader polling for the file never sees half of it.
    os.makedirs(out, exist_ok=True)
    partial = os.path.join(out, RESULTS_FILE + ".partial")
    with open(partial, "w") as handle:
        json.dump(results, handle)
    os.replace(partial, os.path.join(out, RESULTS_FILE))
    if CONFIG.get("summarize"):
        _summarize(environment, out)


def _summarize(environment, out: str) -> None:
    """mlscale's summary, time series and report beside the results, written by the
    master itself: in a cluster no mlscale process waits for them. The server's CPU
    and memory are the cluster's to show (``mlscale stack loadtest`` adds them from
    the container engine when it writes its own copy)."""
    # Only a master that summarizes needs the runner, and the report (plotly) it brings.
    from mlscale.loadtest.runner import collect, settings_from_config

    host = environment.host or os.environ.get("TARGET_HOST") or ""
    try:
        settings = settings_from_config(CONFIG, host=host, out_dir=out)
        collect(settings, out, [], notes=["server resources not measured by the Locust master"])
    except Exception as exc:  # the results are written: a failed report must not hide them
        print(f"mlscale: the master wrote no summary: {exc}", file=sys.stderr, flush=True)
