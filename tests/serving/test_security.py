"""Security: where the server listens, the optional bearer token, and requests that try
to make the server read a file, unpickle something or run code."""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import pickle
import socket

import httpx
import psutil
import pytest
from click.testing import CliRunner

from tests.conftest import mlscale_client
from tests.support.server_process import ServerProcess

ONE_ROW = {"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[0.5, 1.5, 2]]}}
TOKEN = "s3cret-token-for-tests"


# -- where it listens -----------------------------------------------------------------


def serve_settings(monkeypatch, *args: str, env: dict | None = None):
    """The ServeSettings `mlscale serve ARGS` would run with (nothing is started)."""
    import mlscale.serving.server
    from mlscale.cli.main import main

    captured = []
    monkeypatch.setattr(mlscale.serving.server, "serve", lambda settings: captured.append(settings) or 0)
    # Logging set up inside CliRunner would write to its stream after it is closed.
    monkeypatch.setattr("mlscale.cli.serve.configure_logging", lambda level: None)
    result = CliRunner().invoke(main, ["serve", "-m", "some/model", *args], env=env or {})
    assert result.exit_code == 0, result.output
    return captured[0]


def test_loopback_by_default_every_interface_only_when_asked(monkeypatch):
    from mlscale.serving.server import _uvicorn_config

    monkeypatch.delenv("MLFLOW_HOST", raising=False)
    default = serve_settings(monkeypatch)
    assert default.host == "127.0.0.1"
    assert _uvicorn_config(default, app=None).host == "127.0.0.1"
    assert serve_settings(monkeypatch, "-h", "0.0.0.0").host == "0.0.0.0"
    assert serve_settings(monkeypatch, env={"MLFLOW_HOST": "0.0.0.0"}).host == "0.0.0.0"


def test_the_token_comes_from_the_flag_or_the_environment_and_stays_out_of_repr(monkeypatch):
    monkeypatch.delenv("MLSCALE_AUTH_TOKEN", raising=False)
    assert serve_settings(monkeypatch).auth_token is None
    assert serve_settings(monkeypatch, env={"MLSCALE_AUTH_TOKEN": ""}).auth_token is None
    assert serve_settings(monkeypatch, "--auth-token", TOKEN).auth_token == TOKEN
    settings = serve_settings(monkeypatch, env={"MLSCALE_AUTH_TOKEN": TOKEN})
    assert settings.auth_token == TOKEN
    assert TOKEN not in repr(settings)


# -- the bearer token, in process ---------------------------------------------------


@pytest.fixture(scope="module")
def guarded(model_paths):
    with mlscale_client(model_paths["xgboost"], auth_token=TOKEN) as client:
        yield client


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("", 401),
        ("Bearer", 401),
        ("Bearer ", 401),
        ("Bearer wrong", 401),
        (f"Bearer {TOKEN[:-1]}", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Basic {TOKEN}", 401),
        (f"Basic {base64.b64encode(f'user:{TOKEN}'.encode()).decode()}", 401),
        (TOKEN, 401),
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),  # the scheme is case-insensitive (RFC 9110)
        (f"Bearer  {TOKEN} ", 200),
    ],
)
def test_scoring_needs_the_token(guarded, authorization, status):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.post("/invocations", json=ONE_ROW, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error_code"] == "UNAUTHENTICATED"
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert TOKEN not in response.text


def test_probes_and_metrics_stay_open_and_version_is_guarded(guarded):
    for path in ("/ping", "/health", "/metrics"):
        assert guarded.get(path).status_code == 200, path
    assert guarded.get("/version").status_code == 401
    assert guarded.get("/version", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert 'status="401"' in guarded.get("/metrics").text


def test_no_token_no_check(model_paths):
    with mlscale_client(model_paths["xgboost"]) as client:
        assert client.post("/invocations", json=ONE_ROW).status_code == 200
        assert client.get("/version").status_code == 200


# -- a real server: workers, environment, nothing read, unpickled or run ----------------------


@pytest.fixture(scope="module")
def server(model_paths):
    env = {"MLSCALE_AUTH_TOKEN": TOKEN}
    with ServerProcess("-m", model_paths["xgboost"], "-w", "2", env=env) as process:
        process.wait_ready()
        yield process


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(
        base_url=server.url, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as authorized:
        yield authorized


@pytest.mark.slow
def test_a_real_server_listens_on_loopback_only(server):
    assert "Uvicorn running on http://127.0.0.1:" in server.output
    listening = [
        c.laddr for c in psutil.Process(server.pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN
    ]
    assert listening and {address.ip for address in listening} == {"127.0.0.1"}


@pytest.mark.slow
def test_every_worker_enforces_the_token_from_the_environment(server, client):
    for _ in range(20):  # new connections, spread over both workers
        headers = {"Connection": "close"}
        assert httpx.post(f"{server.url}/invocations", json=ONE_ROW, headers=headers).status_code == 401
        assert client.post("/invocations", json=ONE_ROW, headers=headers).status_code == 200
        assert httpx.get(f"{server.url}/ping", headers=headers).status_code == 200
    assert TOKEN not in server.output


@pytest.mark.slow
def test_the_load_tester_sends_the_token_and_keeps_it_out_of_its_results(server, model_paths, tmp_path):
    from mlscale.loadtest.runner import LoadTestSettings, run_loadtest
    from mlscale.loadtest.shapes import constant

    def run(token: str | None, name: str) -> dict:
        settings = LoadTestSettings(
            host=server.url,
            shape=constant("users", 4, 2.0),
            out_dir=str(tmp_path / name),
            think_time_s=0.05,
            signature_of=model_paths["xgboost"],
            report=False,
            auth_token=token,
        )
        return run_loadtest(settings).summary

    signed = run(TOKEN, "signed")
    assert signed.requests > 20 and signed.failures == 0
    anonymous = run(None, "anonymous")
    assert anonymous.requests > 20 and anonymous.failures == anonymous.requests
    assert any("401" in entry.error for entry in anonymous.errors), anonymous.errors
    written = "".join(
        path.read_text(errors="replace") for path in (tmp_path / "signed").iterdir() if path.is_file()
    )
    assert TOKEN not in written and '"auth_token": "(set)"' in written


@pytest.mark.slow
def test_an_unauthenticated_request_is_refused_before_its_body_is_read(server):
    from tests.serving.test_hostile_input import read_responses

    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head + b"Content-Length: 10000000000\r\n\r\n" + b" " * 1000)
        answers = read_responses(sock, 2, timeout_s=5)  # the second is the server closing
    # Refused from the head alone (a 413 otherwise: the body is past the limit).
    assert [r.status_code for r in answers] == [401]
    assert answers[0].headers["connection"] == "close"


class _Mkdir:
    """Unpickling this creates a folder: the proof that something was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _parquet_with_a_pickled_extension_type(payload: bytes) -> bytes:
    """A Parquet file whose column claims pyarrow's old pickled extension type:
    pyarrow before 14.0.1 unpickled its metadata on read (CVE-2023-47248)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    field = pa.field(
        "f0",
        pa.binary(),
        metadata={
            b"ARROW:extension:name": b"arrow.py_extension_type",
            b"ARROW:extension:metadata": payload,
        },
    )
    table = pa.table({"f0": pa.array([b"x"], pa.binary())}, schema=pa.schema([field]))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def fifo_canary(tmp_path):
    """A named pipe that knows whether anyone opened it: opening it for writing without
    blocking fails with ENXIO as long as no process has it open for reading (and a
    server that tried to read it would still be waiting in open())."""
    path = tmp_path / "canary.json"
    os.mkfifo(path)

    def opened() -> bool:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError as exc:
            assert exc.errno == errno.ENXIO
            return False

    yield str(path), opened


@pytest.mark.slow
def test_no_request_reads_a_file_unpickles_or_runs_code(server, client, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"dataframe_split": ONE_ROW["dataframe_split"], "x": "CANARY-7f3a"}))
    marker = str(tmp_path / "pwned")
    payload = pickle.dumps(_Mkdir(marker))
    code = [
        f"__import__('os').mkdir({marker!r})",
        f"os.mkdir({marker!r})",
        "${jndi:ldap://127.0.0.1/x}",
        f"@os.mkdir('{marker}')",
        f"`mkdir {marker}`",
        f"$(mkdir {marker})",
    ]

    with fifo_canary(tmp_path) as (fifo, fifo_opened):
        paths = [str(secret), fifo, f"file://{secret}", f"file://{fifo}", "/etc/passwd"]
        documents = []
        for value in [*paths, *code]:
            documents += [
                {"inputs": value},
                {"instances": [value]},
                {"inputs": {"f0": value, "f1": value, "f2": value}},
                {"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[value, value, value]]}},
                {"dataframe_split": {"columns": [value, "f1", "f2"], "data": [[1, 2, 3]], "index": [value]}},
                {"dataframe_records": [{"f0": value, "f1": 1, "f2": 2}]},
                {**ONE_ROW, "params": {"path": value, "model_config": value, value: value}},
                {"dataframe_split": value},
                {"inputs": {"b64": base64.b64encode(value.encode()).decode()}},
            ]
        documents.append({"inputs": {"b64": base64.b64encode(payload).decode()}})
        documents.append({"instances": [{"b64": base64.b64encode(payload).decode()}]})
        requests = [(json.dumps(d).encode(), "application/json") for d in documents]
        for content_type in (
            "application/octet-stream",
            "application/python-pickle",
            "application/x-pickle",
            "application/x-python-serialize",
            "application/json",
            "text/csv",
            "application/vnd.apache.parquet",
            "application/json; format=pandas-split",
            "application/json; format=pandas-records",
            "text/csv; charset=utf-8",
        ):
            requests.append((payload, content_type))
        requests.append((_parquet_with_a_pickled_extension_type(payload), "application/vnd.apache.parquet"))
        requests += [(f"f0,f1,f2\n{p},1,2\n".encode(), "text/csv") for p in [*paths, *code]]

        for body, content_type in requests:
            response = client.post("/invocations", content=body, headers={"Content-Type": content_type})
            assert response.status_code < 500, (body[:100], response.text[:300])
            assert "CANARY-7f3a" not in response.text and "root:" not in response.text
            assert not fifo_opened(), f"the server opened a file named in {body[:200]!r}"
        for path in [
            f"/invocations/..{secret}",
            f"/..{secret}",
            "/%2e%2e/%2e%2e/etc/passwd",
            f"/invocations?path={secret}",
            f"/ping?file={fifo}",
        ]:
            response = client.get(path)
            assert response.status_code in (200, 404, 405), (path, response.status_code)
            assert "CANARY-7f3a" not in response.text and "root:" not in response.text
        assert not fifo_opened()
    assert not os.path.exists(marker), "a request made the server run code"
    print(f"{len(requests)} requests naming files, carrying pickles or code: none read, unpickled or ran")
