"""The server as a real process on a real socket: workers, signals, overload, timeouts."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import httpx
import numpy as np
import pytest

from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

ONE_ROW = {"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[0.5, 1.5, 2]]}}


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> str:
    from tests.support.models import save_slow

    return save_slow(str(tmp_path_factory.mktemp("slow") / "model"))


def post(url: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(f"{url}/invocations", json=body, timeout=30, **kwargs)


def wine_rows(count: int) -> dict:
    from mlscale.examples.wine import feature_frame

    frame = feature_frame().head(count)
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def test_serves_a_registry_uri_like_pyfunc_predicts(wine_registry):
    import mlflow.pyfunc

    from mlscale.examples.wine import feature_frame

    env = {"MLFLOW_TRACKING_URI": wine_registry["tracking_uri"]}
    with ServerProcess("-m", wine_registry["model_uri"], env=env, cwd=wine_registry["root"]) as server:
        server.wait_ready()
        answer = post(server.url, wine_rows(20))
        assert server.metric("mlscale_model_load_seconds") > 0
    assert answer.status_code == 200
    expected = mlflow.pyfunc.load_model(wine_registry["model_uri"]).predict(feature_frame().head(20))
    assert answer.json()["predictions"] == expected.astype(np.float64).tolist()


def test_concurrent_requests_are_batched_and_answered_as_if_alone(model_paths):
    rng = np.random.default_rng(7)
    bodies = [
        {
            "dataframe_split": {
                "columns": ["f0", "f1", "f2"],
                "data": [
                    [*rng.normal(size=2).round(4), int(rng.integers(5))]
                    for _ in range(int(rng.integers(1, 4)))
                ],
            }
        }
        for _ in range(64)
    ]
    # A bounded wait makes merging certain even with a slow Python client.
    with ServerProcess("-m", model_paths["xgboost"], "--max-batch-wait-ms", "20") as server:
        server.wait_ready()
        alone = [post(server.url, body).json() for body in bodies]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            together = list(pool.map(lambda b: post(server.url, b).json(), bodies))
        batches = server.metric("mlscale_batch_requests_count", path="native")
        merged = server.metric("mlscale_batch_requests_sum", path="native")
    assert together == alone
    assert merged == 128
    assert batches < merged, "no two requests ever shared a predict call"


def test_workers_share_the_port_and_metrics_add_up(model_paths):
    with ServerProcess("-m", model_paths["xgboost"], "-w", "2") as server:
        server.wait_ready()
        assert len(server.children()) == 2
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            # A new connection per request, so the kernel spreads them over the workers.
            codes = list(
                pool.map(
                    lambda _: post(server.url, ONE_ROW, headers={"Connection": "close"}).status_code,
                    range(200),
                )
            )
        assert codes == [200] * 200
        assert server.metric("mlscale_requests_total", endpoint="invocations", status="200") == 200
        assert server.metric("mlscale_in_flight_requests") == 0
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(model_paths):
    with ServerProcess("-m", model_paths["xgboost"], "-w", "2") as server:
        server.wait_ready()
        first, second = server.children()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            children = server.children()
            if len(children) == 2 and first not in children:
                break
            assert post(server.url, ONE_ROW).status_code == 200
            time.sleep(0.1)
        else:
            pytest.fail(f"the killed worker was not replaced:\n{server.output}")
        assert second in server.children()
        # The replacement is serving too: every request succeeds.
        assert {
            post(server.url, ONE_ROW, headers={"Connection": "close"}).status_code for _ in range(20)
        } == {200}


def test_sigterm_lets_in_flight_requests_finish_then_exits_0(slow_model):
    with ServerProcess("-m", slow_model, env={"MLSCALE_TEST_SLEEP": "1"}) as server:
        server.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pending = [pool.submit(post, server.url, ONE_ROW) for _ in range(4)]
            while server.metric("mlscale_in_flight_requests") < 4:
                time.sleep(0.02)
            server.signal(signal.SIGTERM)
            codes = [f.result().status_code for f in pending]
        assert codes == [200] * 4
        assert server.wait_exit(30) == 0


def test_drain_delay_turns_readiness_false_while_still_serving(model_paths):
    with ServerProcess("-m", model_paths["xgboost"], "--drain-delay", "3") as server:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:  # keep-alive connection
            assert client.get("/ping").status_code == 200
            server.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while client.get("/ping").status_code == 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            ping = client.get("/ping")
            assert ping.status_code == 503
            assert ping.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert client.post("/invocations", json=ONE_ROW).status_code == 200
        assert server.wait_exit(30) == 0


def test_overload_answers_503_with_retry_after(slow_model):
    args = ("-m", slow_model, "--max-queue", "2", "--max-batch-size", "1")
    with ServerProcess(*args, env={"MLSCALE_TEST_SLEEP": "0.5"}) as server:
        server.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: post(server.url, ONE_ROW), range(10)))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) == {200, 503}, codes
    refused = [a for a in answers if a.status_code == 503]
    assert all(a.headers["retry-after"] == "1" for a in refused)
    assert all(a.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" for a in refused)


def test_timeout_answers_504_and_drops_queued_work(slow_model, tmp_path):
    calls = tmp_path / "calls.log"
    env = {"MLSCALE_TEST_SLEEP": "1.5", "MLSCALE_TEST_CALLS": str(calls)}
    args = ("-m", slow_model, "-t", "0.5", "--max-batch-size", "1")
    with ServerProcess(*args, env=env) as server:
        server.wait_ready()
        calls.write_text("")  # forget the calls of the load-time checks
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: post(server.url, ONE_ROW), range(4)))
        # The call that had started runs to its end; when it ends, the batcher
        # takes the next batch in the same event-loop turn, so by the time
        # /metrics answers, any queued request that reached the model is counted.
        deadline = time.monotonic() + 10
        while server.metric("mlscale_predict_duration_seconds_count", path="pyfunc") < 1:
            assert time.monotonic() < deadline, server.output
            time.sleep(0.05)
        reached_model = server.metric("mlscale_queue_wait_seconds_count", path="pyfunc")
    assert [a.status_code for a in answers] == [504] * 4
    body = answers[0].json()
    assert body["error_code"] == "DEADLINE_EXCEEDED" and "0.5 s" in body["message"]
    assert reached_model == 1
    assert calls.read_text().split() == ["1"]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_cannot_be_resolved_fails_clearly(workers, tmp_path):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/empty.db"}
    with ServerProcess("-m", "models:/no-such-model/1", "-w", workers, env=env, cwd=str(tmp_path)) as server:
        code = server.wait_exit(120)
    assert code == 1
    assert "Cannot resolve model 'models:/no-such-model/1'" in server.output
    assert "Traceback" not in server.output


def test_a_folder_without_mlmodel_fails_clearly(tmp_path):
    with ServerProcess("-m", str(tmp_path)) as server:
        code = server.wait_exit(60)
    assert code == 1
    assert "is not an MLflow model: there is no MLmodel file" in server.output
    assert "Traceback" not in server.output


def test_stop_ends_the_servers_whole_process_group(tmp_path):
    """A child the server started (here a sleep, standing in for the model
    download's child or uvicorn's workers) is stopped with it, even when the server
    itself has already exited: in a session of its own, nothing else would stop it."""
    from mlscale.serving.process import ServeProcess
    from tests.support.leftovers import processes_mentioning

    marker = str(tmp_path)
    # sh starts the sleep in the background, then becomes the server (which prints
    # its help and exits 0).
    server = ServeProcess(
        ["--help"], prefix=["sh", "-c", 'sleep 300 & exec "$@"', "sh"], env={"MLSCALE_TEST_MARK": marker}
    )
    deadline = time.monotonic() + 30
    while not any("sleep 300" in p for p in processes_mentioning(marker)):
        assert time.monotonic() < deadline, "the sleep never started"
        time.sleep(0.05)
    assert server.process.wait(30) == 0
    assert server.stop(grace_s=10) == 0
    deadline = time.monotonic() + 5
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []
