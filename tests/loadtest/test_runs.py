"""Real Locust runs against real servers on loopback, each bounded to seconds."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
from mlscale.loadtest.shapes import constant
from mlscale.processes import free_port

pytestmark = pytest.mark.slow
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def fake_server(mode: str):
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.support.fake_servers:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env={**os.environ, "FAKE_MODE": mode},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/count", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the fake server did not start"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def within(reported: float, truth: float, tolerance: float = 0.05, transport_ms: float = 5.0) -> bool:
    """The client's figure is the server's own plus the trip: loopback, HTTP parsing and
    the generator's event loop, a few ms on a slow core (4-7 ms measured on one)."""
    return abs(reported - truth) <= tolerance * truth + transport_ms


def run(tmp_path, url, shape, **settings):
    return run_loadtest(LoadTestSettings(host=url, shape=shape, out_dir=str(tmp_path), **settings))


@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "master-and-two-workers"])
def test_percentiles_match_the_servers_truth_and_workers_merge(tmp_path, workers):
    with fake_server("uniform") as url:
        # 20 users keep one generator process well below its limit on a slow core (at 40,
        # its own stalls showed in the p99), so the figures compared are the server's.
        result = run(
            tmp_path, url, constant("users", 20, 8), think_time_s=0.0, workers=workers, spawn_rate=100
        )
        truth = httpx.get(f"{url}/truth").json()
        served = httpx.get(f"{url}/count").json()["count"]
    summary = result.summary
    assert summary.failures == 0
    assert summary.valid, summary.problems
    # Every answered request is counted once, whichever process sent it. Missing
    # at most: the requests in flight when the users stopped (20), and as many
    # again for the client's own retries on a reused connection, which the
    # server counts twice. A lost second of results would be ~280.
    assert served - 40 <= summary.requests <= served
    for name in ("p50", "p95"):
        assert within(summary.latency_ms[name], truth[name]), (name, summary.latency_ms, truth)
    # The p99 of ~2,000 requests is ~20 of them, so one scheduling stall of the server's
    # loop after its timed sleep or of the generator (2 shared cores, neither pinned)
    # moves it; the server's truth cannot see either. The generator's own stalls
    # (percentiles walked in Python every second) once needed 60 ms here; the
    # benchmark holds it to 3 % on pinned cores, this bound to 15 ms so it cannot flake.
    assert within(summary.latency_ms["p99"], truth["p99"], transport_ms=15.0), (
        summary.latency_ms,
        truth,
    )
    for output in ("summary.json", "timeseries.csv", "report.html"):
        assert os.path.getsize(tmp_path / output) > 0


def test_the_open_loop_sees_a_stall_the_closed_loop_hides(tmp_path):
    with fake_server("stall") as url:
        open_loop = run(tmp_path / "open", url, constant("rps", 100, 8))
        closed_loop = run(tmp_path / "closed", url, constant("users", 2, 8), think_time_s=0.0)
    # A quarter of the scheduled requests fall into the 1 s stall and wait 0.5 s
    # on average: the open loop's p95 is about 800 ms.
    assert 600 <= open_loop.summary.latency_ms["p95"] <= 1000, open_loop.summary.latency_ms
    assert open_loop.summary.open_loop.service_latency_ms["p95"] >= 600
    # Two users sit out the stall with one request each, among thousands of fast ones.
    assert closed_loop.summary.latency_ms["p95"] < 50, closed_loop.summary.latency_ms


def test_server_errors_are_counted_by_kind(tmp_path):
    with fake_server("error") as url:
        result = run(tmp_path, url, constant("users", 2, 3), think_time_s=0.05)
    summary = result.summary
    assert summary.failures == summary.requests > 0
    assert summary.errors[0].error == "HTTP 500"
    assert summary.error_rate == 1.0
    assert not summary.valid


def test_an_unreachable_target_is_a_clear_message_not_a_traceback(tmp_path):
    closed_port = free_port()
    run_ = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlscale",
            "loadtest",
            "--host",
            f"http://127.0.0.1:{closed_port}",
            "--users",
            "2",
            "--think-time",
            "0.1",
            "--duration",
            "3",
            "--sla",
            "p95<1s",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run_.stdout + run_.stderr
    assert run_.returncode == 1, output
    assert "Traceback" not in output
    assert "ConnectionRefusedError" in output
    assert "INVALID: no request got a successful answer" in output
    assert "SLA p95<1s: MISSED" in output


def test_a_real_mlscale_server_with_generated_rows_and_its_metrics(tmp_path, model_paths):
    from tests.support.server_process import ServerProcess

    with ServerProcess("-m", model_paths["sklearn_pipeline"]) as server:
        server.wait_ready()
        result = run(
            tmp_path,
            server.url,
            constant("users", 4, 4),
            think_time_s=0.01,
            signature_of=model_paths["sklearn_pipeline"],
            mix="1:80,20:20",
        )
        answered = server.metric("mlscale_requests_total", endpoint="invocations", status="200")
    summary = result.summary
    assert summary.failures == 0 and summary.requests > 0
    assert set(summary.by_kind) == {"1 row", "20 rows"}
    assert answered >= summary.requests
    # The server was found from its port, and its own metrics were read.
    assert any(r["server_cpu"] is not None for r in result.rows)
    assert any(r["in_flight"] is not None for r in result.rows)
    assert any(r["batch_rows"] for r in result.rows)


def test_a_v2_load_test_drives_the_infer_endpoint_with_string_columns(tmp_path, model_paths):
    """`--protocol v2` from the command line: the path from the model's default name,
    V2 bodies of the pipeline's numeric and string columns, all answered by infer."""
    from tests.support.server_process import ServerProcess

    model = model_paths["sklearn_pipeline"]
    with ServerProcess("-m", model) as server:
        server.wait_ready()
        done = subprocess.run(
            [
                sys.executable, "-m", "mlscale", "loadtest", "--host", server.url, "--protocol", "v2",
                "--from-signature", model, "--users", "4", "--think-time", "0.01", "--duration", "4",
                "--mix", "1:80,20:20", "--out", str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )  # fmt: skip
        infer = server.metric("mlscale_requests_total", endpoint="infer", status="200")
        invocations = server.metric("mlscale_requests_total", endpoint="invocations", status="200")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"{server.url}/v2/models/{os.path.basename(model)}/infer" in output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"] == 0 and summary["requests"] > 20
    assert infer >= summary["requests"] and not invocations
    assert summary["config"]["path"].endswith("/infer") and summary["config"]["body_format"] == "v2"
