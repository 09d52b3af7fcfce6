"""Faults under load: overload, SIGTERM, a killed worker, models that cannot load, and
the load tester's own faults (a lost Locust worker, a target that dies or stalls).

The server tests use the slow test model (``tests/support/models.py``: 20 ms a call, batching
off), so capacity is small and known: about 45 requests/s, whatever the machine. Every
load loop here is bounded by a request count or a deadline, and waits by polling.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import httpx
import psutil
import pytest

from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from tests.loadtest.test_runs import ROOT, fake_server, free_port
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

ONE_ROW = {"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[0.5, 1.5, 2]]}}
SLOW = {"MLSCALE_TEST_SLEEP": "0.02"}  # seconds per predict call


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> str:
    from tests.support.models import save_slow

    return save_slow(str(tmp_path_factory.mktemp("slow") / "model"))


def poll(condition, timeout_s: float, what: str, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


# -- overload --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    phase: int
    scheduled_s: float  # from the start of the open loop
    status: int | str  # HTTP status, or the transport error's name
    latency_s: float  # from the scheduled send (open loop: no coordinated omission)
    retry_after: str | None
    error_code: str | None


async def _capacity(client: httpx.AsyncClient, seconds: float, users: int) -> float:
    """Answers per second with ``users`` requests always outstanding: the server's ceiling."""
    done, end = [0], time.perf_counter() + seconds

    async def user() -> None:
        while time.perf_counter() < end:
            if (await client.post("/invocations", json=ONE_ROW)).status_code == 200:
                done[0] += 1

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(users)))
    return done[0] / (time.perf_counter() - started)


async def _open_loop(client: httpx.AsyncClient, phases: list[tuple[float, float]]) -> list[Answer]:
    """Requests sent on a fixed schedule, (rate/s, seconds) per phase, answered or not."""
    answers: list[Answer] = []
    start = time.perf_counter()

    async def one(phase: int, scheduled: float) -> None:
        try:
            response = await client.post("/invocations", json=ONE_ROW)
            status, headers = response.status_code, response.headers
            code = response.json().get("error_code") if status != 200 else None
        except httpx.HTTPError as exc:
            status, headers, code = type(exc).__name__, {}, None
        answers.append(
            Answer(
                phase,
                scheduled - start,
                status,
                time.perf_counter() - scheduled,
                headers.get("retry-after"),
                code,
            )
        )

    tasks, offset = [], 0.0
    for phase, (rate, seconds) in enumerate(phases):
        for i in range(int(rate * seconds)):
            scheduled = start + offset + i / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(phase, scheduled)))
        offset += seconds
    await asyncio.gather(*tasks)
    return answers


async def _overload(url: str) -> tuple[float, list[Answer]]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        capacity = await _capacity(client, seconds=2.0, users=4)
        return capacity, await _open_loop(client, [(3 * capacity, 4.0), (0.5 * capacity, 3.0)])


def test_three_times_capacity_is_refused_fast_and_recovers_at_once(slow_model):
    queue = 8
    args = ("-m", slow_model, "--max-queue", str(queue), "--max-batch-size", "1")
    with ServerProcess(*args, env=SLOW) as server:
        server.wait_ready()
        capacity, answers = asyncio.run(_overload(server.url))
    service_s = 1 / capacity
    overload = [a for a in answers if a.phase == 0]
    recovery = [a for a in answers if a.phase == 1]
    accepted = [a for a in overload if a.status == 200]
    refused = [a for a in overload if a.status == 503]
    assert 15 < capacity < 55, capacity  # 20 ms a call, one call at a time

    # What it cannot take is refused at once, with Retry-After; nothing else goes wrong.
    assert len(accepted) + len(refused) == len(overload), {a.status for a in overload}
    assert len(refused) >= 0.4 * len(overload)
    assert {(a.retry_after, a.error_code) for a in refused} == {("1", "TEMPORARILY_UNAVAILABLE")}
    assert max(a.latency_s for a in refused) < 0.25
    # What it accepts keeps its bound: at most a full queue ahead of it, and the
    # server keeps its throughput instead of collapsing.
    bound_s = (queue + 2) * service_s + 0.15
    assert max(a.latency_s for a in accepted) <= bound_s, (max(a.latency_s for a in accepted), bound_s)
    assert len(accepted) / 4.0 >= 0.8 * capacity
    # When the load falls, every request is served at the unloaded latency as soon as
    # the queue (full when the load fell) has drained.
    drained_at = 4.0 + (queue + 1) * service_s + 0.1
    late_refusals = [a for a in recovery if a.status != 200 and a.scheduled_s >= drained_at]
    assert late_refusals == [], late_refusals
    drained = [a for a in recovery if a.scheduled_s >= drained_at]
    assert drained and max(a.latency_s for a in drained) < 0.2, max(a.latency_s for a in drained)
    refused_while_draining = sum(a.status != 200 for a in recovery)
    p99 = sorted(a.latency_s for a in accepted)[int(0.99 * (len(accepted) - 1))]
    print(
        f"capacity {capacity:.1f}/s; at {3 * capacity:.0f}/s: {len(accepted)} served "
        f"({len(accepted) / 4:.1f}/s, p99 {p99 * 1000:.0f} ms, bound {bound_s * 1000:.0f} ms), "
        f"{len(refused)} refused with 503 (slowest {max(a.latency_s for a in refused) * 1000:.0f} ms); "
        f"then at {capacity / 2:.0f}/s: {len(recovery) - refused_while_draining} of {len(recovery)} "
        f"served, every one after the first {(drained_at - 4) * 1000:.0f} ms"
    )


# -- SIGTERM under load ------------------------------------------------------------------------


class SteadyLoad:
    """``users`` threads, each sending one request after another on its keep-alive
    connection until stopped; every outcome is kept."""

    def __init__(self, url: str, users: int, *, new_connections: bool = False) -> None:
        self.url = url
        self.outcomes: list[int | str] = []
        self._stop = threading.Event()
        self._headers = {"Connection": "close"} if new_connections else {}
        self._threads = [threading.Thread(target=self._user, daemon=True) for _ in range(users)]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def _user(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            deadline = time.monotonic() + 120  # a bound, whatever the test does
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    status = client.post("/invocations", json=ONE_ROW, headers=self._headers).status_code
                    self.outcomes.append(status)
                except httpx.HTTPError as exc:
                    self.outcomes.append(type(exc).__name__)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o != 200]


def ping(url: str, timeout_s: float = 1.0) -> int | str:
    """One readiness probe on a new connection, as the kubelet sends them."""
    try:
        return httpx.get(f"{url}/ping", timeout=timeout_s, headers={"Connection": "close"}).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_under_steady_load_loses_nothing(slow_model, workers):
    drain_s, lag_s = 2.0, 0.5
    args = ("-m", slow_model, "-w", workers, "--drain-delay", str(drain_s))
    with ServerProcess(*args, env=SLOW) as server:
        server.wait_ready()
        with SteadyLoad(server.url, users=4) as load:
            poll(lambda: len(load.outcomes) >= 40, 30, "a steady load")
            server.signal(signal.SIGTERM)
            signalled = time.monotonic()
            # The load balancer sees readiness turn false, and stops routing here a
            # moment later (endpoint propagation), well within the drain delay.
            poll(lambda: ping(server.url) == 503, drain_s, "readiness to turn false")
            not_ready = time.monotonic()
            served_before = len(load.outcomes)
            while time.monotonic() < not_ready + lag_s:
                time.sleep(0.05)
            load.stop()
        served_after = len(load.outcomes) - served_before
        code = server.wait_exit(drain_s + 30)
        exit_s = time.monotonic() - signalled
    assert load.failed == [], load.failed[:10]
    assert served_after > 0, "no request was sent after readiness turned false"
    assert code == 0, server.output[-2000:]
    assert exit_s < drain_s + 10, exit_s
    print(
        f"-w {workers}: {len(load.outcomes)} requests, 0 failed, {served_after} served after "
        f"readiness turned false ({not_ready - signalled:.2f} s after SIGTERM); exit 0 "
        f"{exit_s:.1f} s after SIGTERM (drain delay {drain_s:g} s)"
    )


# -- a killed worker -----------------------------------------------------------------------------


def established(pid: int, port: int) -> int:
    """Client connections a server process holds open on ``port``."""
    return sum(
        1
        for c in psutil.Process(pid).net_connections("tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )


class Prober:
    """Readiness probes every 50 ms on new connections, in a thread, all kept."""

    def __init__(self, url: str) -> None:
        self.url, self.results = url, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 120
        while not self._stop.wait(0.05) and time.monotonic() < deadline:
            self.results.append(ping(self.url))

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_worker_killed_under_load_costs_only_its_own_requests(slow_model):
    env = {"MLSCALE_TEST_SLEEP": "0.05"}  # long enough that each worker holds requests
    with ServerProcess("-m", slow_model, "-w", "2", "--max-batch-size", "1", env=env) as server:
        server.wait_ready()
        poll(lambda: len(server.children()) == 2, 30, "two workers")
        workers = server.children()
        with Prober(server.url) as prober, SteadyLoad(server.url, users=6, new_connections=True) as load:
            poll(lambda: len(load.outcomes) >= 60, 30, "a steady load")
            # The kernel does not spread connections evenly over the workers: kill
            # the one holding requests now. Stopped, it accepts nothing more, so the
            # connections it holds are exactly the requests that can fail with it.
            poll(lambda: max(established(pid, server.port) for pid in workers) > 0, 10, "requests held")
            victim = max(workers, key=lambda pid: established(pid, server.port))
            (survivor,) = set(workers) - {victim}
            os.kill(victim, signal.SIGSTOP)
            held = established(victim, server.port)
            os.kill(victim, signal.SIGKILL)
            killed_at, before = time.monotonic(), len(load.outcomes)
            poll(
                lambda: len(server.children()) == 2 and victim not in server.children(),
                60,
                "a replacement worker",
            )
            (replacement,) = set(server.children()) - {survivor}
            poll(lambda: established(replacement, server.port) > 0, 60, "the replacement to serve")
            replaced_s = time.monotonic() - killed_at
            served_by_then = len(load.outcomes)
            poll(lambda: len(load.outcomes) >= served_by_then + 60, 30, "more load on both workers")
        after = len(load.outcomes) - before
        survived = survivor in server.children()
    failed = load.failed
    assert all(isinstance(f, str) for f in failed), failed  # connections lost, never an HTTP error
    assert held > 0 and len(failed) <= held, (failed, held)
    assert survived, "the other worker was restarted too"
    probe_failures = [p for p in prober.results if p != 200]
    # Readiness never flaps: no probe was answered other than 200, and at most the
    # one probe the killed worker held failed (the kubelet needs three in a row).
    assert not [p for p in probe_failures if isinstance(p, int)], probe_failures
    assert len(probe_failures) <= 1, probe_failures
    print(
        f"killed 1 of 2 workers holding {held} connections: {len(failed)} requests failed "
        f"({', '.join(sorted(set(failed))) or 'none'}), {len(load.outcomes) - len(failed)} served, "
        f"{after} of them after the kill; replaced and serving in {replaced_s:.1f} s; "
        f"{len(prober.results)} probes, {len(probe_failures)} failed"
    )


# -- models that cannot load -----------------------------------------------------------------------


def _corrupt_copy(source: str, root: str) -> str:
    broken = os.path.join(root, "corrupt")
    shutil.copytree(source, broken)
    with open(os.path.join(broken, "model.ubj"), "wb") as handle:
        handle.write(b"not a model")
    return broken


def _missing_library(root: str) -> str:
    """A CatBoost model as MLflow saves one; CatBoost is not installed here."""
    path = os.path.join(root, "catboost")
    os.makedirs(path)
    with open(os.path.join(path, "MLmodel"), "w") as handle:
        handle.write(
            "flavors:\n"
            "  python_function: {data: model.cb, loader_module: mlflow.catboost, python_version: 3.11.7}\n"
            "  catboost: {catboost_version: 1.2.5, data: model.cb, model_type: CatBoostRegressor, save_format: cbm}\n"
            "mlflow_version: 3.17.2\n"
        )
    with open(os.path.join(path, "model.cb"), "wb") as handle:
        handle.write(b"\0" * 16)
    return path


def test_models_that_cannot_load_fail_clearly(model_paths, tmp_path):
    if importlib.util.find_spec("catboost") is not None:
        pytest.skip("catboost is installed here")
    missing = str(tmp_path / "nowhere")
    cases = {
        "missing": (("-m", missing), f"Cannot resolve model {missing!r}"),
        "corrupt": (("-m", _corrupt_copy(model_paths["xgboost"], str(tmp_path))), "may be corrupt"),
        "no library": (("-m", _missing_library(str(tmp_path))), "needs the Python package 'catboost'"),
        "no library, 2 workers": (
            ("-m", _missing_library(str(tmp_path / "w2")), "-w", "2"),
            "needs the Python package 'catboost'",
        ),
    }
    # All at once: each is a process that starts, fails and exits.
    servers = {name: ServerProcess(*args) for name, (args, _) in cases.items()}
    try:
        codes = {name: server.wait_exit(120) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop(grace_s=5)
    for name, (_, message) in cases.items():
        output = servers[name].output
        assert codes[name] == 1, (name, output)
        assert message in output, (name, output)
        assert "Traceback" not in output, (name, output)


# -- the load tester's own faults ------------------------------------------------------------------


def _kill_locust_workers(count: int, after_s: float, url: str) -> threading.Thread:
    """``after_s`` seconds after both workers are up and the server has answered their
    first requests, SIGKILL ``count`` of them. (Counting from the workers' start alone
    is not enough: on a slow machine their users may not have sent anything yet, and a
    run whose every worker died before its first report has nothing to show.)"""

    def run() -> None:
        me = psutil.Process()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            workers = [p for p in me.children(recursive=True) if "--worker" in p.cmdline()]
            if len(workers) == 2 and httpx.get(f"{url}/count").json()["count"] > 0:
                time.sleep(after_s)
                for worker in workers[:count]:
                    worker.kill()
                return
            time.sleep(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("lost", [1, 2], ids=["one-worker-lost", "every-worker-lost"])
def test_a_lost_locust_worker_invalidates_the_run_which_ends_on_time(tmp_path, lost):
    duration = 10
    with fake_server("uniform") as url:
        killer = _kill_locust_workers(lost, after_s=4, url=url)  # past a stats report (every 3 s)
        started = time.monotonic()
        result = run_loadtest(
            LoadTestSettings(
                host=url,
                shape=constant("users", 10, duration),
                out_dir=str(tmp_path),
                think_time_s=0.0,
                workers=2,
                spawn_rate=100,
            )
        )
        took = time.monotonic() - started
        killer.join(1)
    summary = result.summary
    assert not summary.valid
    expected = "a load generator worker was lost" if lost == 1 else "the run stopped after"
    assert any(expected in problem for problem in summary.problems), summary.problems
    assert summary.requests > 0
    assert took < duration + 30, took  # Locust's start and drain, not the 60 s deadline


def test_a_target_that_dies_mid_run_is_counted_by_kind_and_the_run_ends_on_time(tmp_path):
    port, duration = free_port(), 6
    target = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.support.fake_servers:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, "FAKE_MODE": "uniform"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        poll(lambda: _answers(f"{url}/count"), 30, "the fake target")

        def kill_when_loaded() -> None:  # once Locust's requests arrive, then 2 s more
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and _count(url) < 20:
                time.sleep(0.1)
            time.sleep(2)
            target.kill()

        threading.Thread(target=kill_when_loaded, daemon=True).start()
        started = time.monotonic()
        result = run_loadtest(
            LoadTestSettings(
                host=url,
                shape=constant("users", 4, duration),
                out_dir=str(tmp_path),
                think_time_s=0.05,
            )
        )
        took = time.monotonic() - started
    finally:
        target.kill()
        target.wait(10)
    summary = result.summary
    kinds = {e.error: e.count for e in summary.errors}
    assert kinds.get("ConnectionRefusedError", 0) > 0, kinds
    assert summary.failures == sum(kinds.values()) > 0
    assert 0 < summary.failures < summary.requests
    assert took < duration + 30, took
    # Once the target is gone, its memory is not measured any more (it is not zero).
    assert {r["server_rss_mb"] for r in result.rows[-2:]} == {None}, result.rows[-3:]


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
        return True
    except httpx.HTTPError:
        return False


def _count(url: str) -> int:
    try:
        return httpx.get(f"{url}/count", timeout=1).json()["count"]
    except httpx.HTTPError:
        return 0


@pytest.mark.parametrize("shape", [constant("users", 4, 4), constant("rps", 50, 4)], ids=["closed", "open"])
def test_a_target_that_never_answers_cannot_hold_the_run(tmp_path, shape):
    # The kernel completes the connections into the backlog; nobody ever reads them.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1000)
        started = time.monotonic()
        result = run_loadtest(
            LoadTestSettings(
                host=f"http://127.0.0.1:{silent.getsockname()[1]}",
                shape=shape,
                out_dir=str(tmp_path),
                think_time_s=0.05,
            )
        )
        took = time.monotonic() - started
    assert took < shape.duration_s + 30, took
    assert not result.summary.valid
    assert any("no request got a successful answer" in p for p in result.summary.problems)
