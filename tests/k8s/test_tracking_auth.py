"""The gke overlay's tracking server behind MLflow's basic-auth app, run for real.

There is no cluster here, so the component's own files are run locally: `mlflow
server --app-name basic-auth` with the component's basic_auth.ini (its database
moved from Postgres to SQLite, the one setting a laptop cannot have), the Job's
create_reader.py, and `mlscale serve` signing in with the read-only account it
makes, as the model server's Deployment does.
"""

from __future__ import annotations

import configparser
import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mlscale.examples.wine import FEATURES
from mlscale.k8s.kubectl import find_kubectl
from mlscale.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "deploy" / "components" / "tracking-basic-auth"
ADMIN = ("admin", "admin-secret-0123456789")
READER = ("model-server", "reader-secret-0123456789")
_REQUEST_TIMEOUT_S = 30

pytestmark = pytest.mark.skipif(
    __import__("importlib").util.find_spec("flask_wtf") is None,
    reason="mlflow[auth] (Flask-WTF) is not installed",
)


def _poll(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """The component's tracking server on a loopback port; its URL."""
    work = tmp_path_factory.mktemp("tracking-auth")
    config = configparser.ConfigParser()
    config.read(COMPONENT / "basic_auth.ini")
    assert config["mlflow"]["database_uri"].startswith("postgresql://mlflow-postgres")
    config["mlflow"]["database_uri"] = f"sqlite:///{work}/auth.db"
    with open(work / "basic_auth.ini", "w") as handle:
        config.write(handle)
    port = free_port()
    env = _env(
        MLFLOW_AUTH_CONFIG_PATH=str(work / "basic_auth.ini"),
        MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0],
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
        MLFLOW_FLASK_SERVER_SECRET_KEY="test-key",
    )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{work}/mlflow.db",
        "--serve-artifacts",
        "--artifacts-destination",
        str(work / "artifacts"),
        "--workers",
        "1",
    ]
    log = open(work / "server.log", "w")
    server = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _poll(lambda: _answers(f"{url}/health") or server.poll() is not None, 120, "the tracking server")
        assert server.poll() is None, (work / "server.log").read_text()[-3000:]
        yield url
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _create_reader(url: str) -> subprocess.CompletedProcess:
    env = _env(
        MLFLOW_TRACKING_URI=url,
        MLFLOW_TRACKING_USERNAME=ADMIN[0],
        MLFLOW_TRACKING_PASSWORD=ADMIN[1],
        READER_USERNAME=READER[0],
        READER_PASSWORD=READER[1],
    )
    return subprocess.run(
        [sys.executable, str(COMPONENT / "create_reader.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def first_reader_job(tracking) -> subprocess.CompletedProcess:
    """The account Job's first run on the tracking server (a Python process that
    imports MLflow: run once, and read by the tests that need the account)."""
    return _create_reader(tracking)


def test_anonymous_requests_are_refused_and_the_health_probe_is_not(tracking):
    # httpx's 5 s default timed out on the first search on a busy 2-core machine.
    get = functools.partial(httpx.get, timeout=_REQUEST_TIMEOUT_S)
    assert get(f"{tracking}/health").status_code == 200  # the probes need no password
    search = f"{tracking}/api/2.0/mlflow/experiments/search?max_results=1"
    assert get(search).status_code == 401
    assert get(search, auth=("admin", "wrong")).status_code == 401
    assert get(search, auth=ADMIN).status_code == 200


def test_the_job_makes_the_reader_once_and_sets_its_password_again(tracking, first_reader_job):
    first = first_reader_job
    assert first.returncode == 0, first.stderr[-3000:]
    assert "created user 'model-server'" in first.stdout
    again = _create_reader(tracking)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "exists" in again.stdout
    search = f"{tracking}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, auth=READER, timeout=_REQUEST_TIMEOUT_S).status_code == 200


def test_the_model_server_signs_in_with_the_reader_account(tracking, first_reader_job, tmp_path):
    assert first_reader_job.returncode == 0
    train = subprocess.run(
        [sys.executable, "-m", "mlscale", "train", "--tracking-uri", tracking],
        cwd=tmp_path,
        env=_env(MLFLOW_TRACKING_USERNAME=ADMIN[0], MLFLOW_TRACKING_PASSWORD=ADMIN[1]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    uri = train.stdout.strip().splitlines()[-1]
    port = free_port()
    serve = [sys.executable, "-m", "mlscale", "serve", "-m", uri, "-p", str(port)]
    reader_env = _env(
        MLFLOW_TRACKING_URI=tracking, MLFLOW_TRACKING_USERNAME=READER[0], MLFLOW_TRACKING_PASSWORD=READER[1]
    )
    server = subprocess.Popen(
        serve, cwd=tmp_path, env=reader_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _poll(
            lambda: _answers(f"http://127.0.0.1:{port}/ping") or server.poll() is not None,
            120,
            "mlscale serve",
        )
        assert server.poll() is None
        columns = list(FEATURES)
        row = {
            "dataframe_split": {
                "columns": columns,
                "data": [[7, 0.27, 0.36, 20.7, 0.045, 45, 170, 1.001, 3, 0.45, 8.8]],
            }
        }
        answer = httpx.post(f"http://127.0.0.1:{port}/invocations", json=row, timeout=10)
        assert answer.status_code == 200, answer.text
        assert 3 < answer.json()["predictions"][0] < 9
    finally:
        server.terminate()
        server.communicate(timeout=30)  # reads and closes its stderr pipe
    # Without the account the same command fails with a message, not a traceback.
    anonymous = subprocess.run(
        serve,
        cwd=tmp_path,
        env=_env(MLFLOW_TRACKING_URI=tracking),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert anonymous.returncode != 0
    assert "Traceback" not in anonymous.stderr
    assert "401" in anonymous.stderr or "credentials" in anonymous.stderr.lower()


@pytest.mark.slow
@pytest.mark.skipif(find_kubectl() is None, reason="kubectl (which bundles kustomize) is not installed")
def test_the_gke_overlay_runs_the_component_with_one_image_version():
    rendered = subprocess.run(
        [find_kubectl(), "kustomize", str(ROOT / "deploy" / "overlays" / "gke")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    objects = {(o["kind"], o["metadata"]["name"]): o for o in __import__("yaml").safe_load_all(rendered) if o}
    tracking = objects[("Deployment", "mlflow-tracking")]["spec"]["template"]["spec"]["containers"][0]
    assert "--app-name=basic-auth" in tracking["args"]
    env = {e["name"]: e for e in tracking["env"]}
    for name in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    server = objects[("Deployment", "mlscale-server")]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in server["env"]} >= {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"}
    job = objects[("Job", "mlflow-create-reader")]["spec"]["template"]
    assert (
        job["metadata"]["labels"]["mlscale.io/tracking-client"] == "true"
    )  # allowed through the NetworkPolicy
    images = {
        c["image"]
        for o in objects.values()
        if o["kind"] in ("Deployment", "Job", "StatefulSet")
        for c in o["spec"]["template"]["spec"]["containers"]
        if "/mlscale/" in c["image"]
    }
    assert len(images) == 3 and all(":" in image.rsplit("/", 1)[1] for image in images), images  # all tagged
    assert len({image.rsplit(":", 1)[1] for image in images}) == 1, images  # one version everywhere
