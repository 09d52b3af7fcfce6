"""mlscale's Open Inference Protocol against Seldon MLServer's, live, on the same models.

Both servers run as processes on loopback ports and serve the same MLflow model:
``mlscale serve`` and ``mlserver start`` with its MLflow runtime (1.7.1, from its
own venv, ``tests/support/mlserver_env.py``). The same V2 requests go to both and
the answers are compared: status, model name and version, id, and every output's
name, datatype, shape and data, number for number. Two models: the reference
wine-quality XGBoost model (numeric columns: mlscale's native path) and a
scikit-learn pipeline with a string column (one-hot encoded; the pyfunc path).

Where MLServer answers a client's mistake with a 500 (a missing input, data that
does not fit its datatype) or FastAPI's 422 (an unknown datatype), mlscale answers
400 with the protocol's ``{"error": ...}``; those cases assert both statuses, so
the difference is written down here rather than hidden.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from mlscale.examples.wine import FEATURES, feature_frame
from mlscale.processes import start_group, stop_group
from tests.support import mlserver_env
from tests.support.models import color_frame, save_sklearn_pipeline
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow

_JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def mlserver_command() -> Path:
    try:
        return mlserver_env.ensure()
    except mlserver_env.PackageIndexUnreachable as exc:
        pytest.skip(f"MLServer cannot be installed: the package index is unreachable ({exc})")


@contextlib.contextmanager
def mlserver(
    command: Path, folder: Path, *, name: str, model_path: str, version: str | None = None
) -> Iterator[str]:
    """``mlserver start`` on one model; yields its base URL once the model is ready."""
    port = mlserver_env.write_repository(folder, name=name, model_path=model_path, version=version)
    log_path = folder / "mlserver.log"
    with log_path.open("wb") as log:
        process = start_group(
            [str(command), "start", str(folder)], stdout=log, stderr=subprocess.STDOUT, cwd=folder
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"MLServer never became ready:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/models/{name}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield url
    finally:
        stop_group(process, grace_s=10)


class Pair:
    """The two servers for one model, and the model's V2 name."""

    def __init__(self, name: str, mlscale: str, mlserver: str) -> None:
        self.name = name
        self.mlscale = mlscale
        self.mlserver = mlserver

    def both(self, method: str, path: str, body: object = None) -> tuple[httpx.Response, httpx.Response]:
        content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
        return tuple(  # type: ignore[return-value]
            httpx.request(method, base + path, content=content, headers=_JSON, timeout=30)
            for base in (self.mlscale, self.mlserver)
        )


@pytest.fixture(scope="module")
def wine(wine_registry, mlserver_command, tmp_path_factory) -> Iterator[Pair]:
    import mlflow.artifacts

    uri = wine_registry["model_uri"]  # models:/wine-quality/1
    local = mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path_factory.mktemp("wine-copy")))
    folder = tmp_path_factory.mktemp("mlserver-wine")
    with (
        ServerProcess("-m", uri, env={"MLFLOW_TRACKING_URI": wine_registry["tracking_uri"]}) as ours,
        mlserver(mlserver_command, folder, name="wine-quality", model_path=local, version="1") as theirs,
    ):
        ours.wait_ready()
        yield Pair("wine-quality", ours.url, theirs)


@pytest.fixture(scope="module")
def pipeline(mlserver_command, tmp_path_factory) -> Iterator[Pair]:
    path = save_sklearn_pipeline(str(tmp_path_factory.mktemp("models") / "colors"))
    folder = tmp_path_factory.mktemp("mlserver-colors")
    with (
        ServerProcess("-m", path) as ours,
        mlserver(mlserver_command, folder, name="colors", model_path=path) as theirs,
    ):
        ours.wait_ready()
        yield Pair("colors", ours.url, theirs)


def columns(frame, *, shape: str = "n", datatypes: dict[str, str] | None = None, **parameters) -> list:
    """One V2 input per column of ``frame``, as MLServer's pandas codec takes them."""
    inputs = []
    for column in frame.columns:
        values = frame[column].tolist()
        datatype = (datatypes or {}).get(column) or ("BYTES" if isinstance(values[0], str) else "FP64")
        tensor = {
            "name": column,
            "datatype": datatype,
            "shape": [len(values)] if shape == "n" else [len(values), 1],
            "data": values,
        }
        if parameters:
            tensor["parameters"] = parameters
        inputs.append(tensor)
    return inputs


def assert_same_answer(ours: httpx.Response, theirs: httpx.Response, *, id_given: bool = True) -> dict:
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    a, b = ours.json(), theirs.json()
    for key in ("model_name", "model_version", "parameters", "outputs"):
        assert a.get(key) == b.get(key), key
    if id_given:
        assert a["id"] == b["id"]
    else:
        assert a["id"] and b["id"]  # each server makes one up
    return a


def assert_our_400(ours: httpx.Response, theirs: httpx.Response, theirs_status: int) -> None:
    """A client's mistake: mlscale says what to fix with a 400; MLServer's status is noted."""
    assert theirs.status_code == theirs_status, theirs.text
    assert ours.status_code == 400, ours.text
    assert set(ours.json()) == {"error"} and ours.json()["error"]


WINE = feature_frame()


@pytest.mark.parametrize(
    ("rows", "shape"),
    [(1, "n"), (1, "n1"), (7, "n"), (32, "n1")],
    ids=["1row", "1row-n1", "7rows", "32rows-n1"],
)
def test_wine_answers_match_mlserver_and_invocations(wine, rows, shape):
    frame = WINE.iloc[:rows]
    body = {"id": f"wine-{rows}", "inputs": columns(frame, shape=shape)}
    answer = assert_same_answer(*wine.both("POST", f"/v2/models/{wine.name}/infer", body))
    (output,) = answer["outputs"]
    assert output["name"] == "output-1" and output["shape"] == [rows, 1]
    # The same rows through MLflow's endpoint: the same numbers, digit for digit.
    split = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    invocations = httpx.post(f"{wine.mlscale}/invocations", content=orjson.dumps(split), headers=_JSON)
    assert invocations.json()["predictions"] == output["data"]


def test_wine_content_types_datatypes_and_versions(wine):
    frame = WINE.iloc[3:6]
    explicit = {
        "parameters": {"content_type": "pd"},
        "inputs": columns(frame, content_type="np", datatypes={"alcohol": "FP32", "pH": "FP32"}),
        "outputs": [{"name": "output-1"}],
    }
    for path in (f"/v2/models/{wine.name}/infer", f"/v2/models/{wine.name}/versions/1/infer"):
        assert_same_answer(*wine.both("POST", path, explicit), id_given=False)
    ours, theirs = wine.both("POST", f"/v2/models/{wine.name}/versions/7/infer", explicit)
    assert (ours.status_code, theirs.status_code) == (404, 404)
    assert set(ours.json()) == set(theirs.json()) == {"error"}


def test_wine_mistakes(wine):
    path = f"/v2/models/{wine.name}/infer"
    inputs = columns(WINE.iloc[:2])
    # A missing column: MLflow's schema check fails inside MLServer's predict (500).
    ours, theirs = wine.both("POST", path, {"inputs": inputs[:-1]})
    assert_our_400(ours, theirs, 500)
    assert "alcohol" in ours.json()["error"]
    # A datatype the protocol does not have: FastAPI's validation (422).
    bad_type = [{**inputs[0], "datatype": "FLOAT"}, *inputs[1:]]
    ours, theirs = wine.both("POST", path, {"inputs": bad_type})
    assert_our_400(ours, theirs, 422)
    assert "FP64" in ours.json()["error"]
    # Data that does not fit its datatype: numpy's cast fails inside MLServer (500).
    bad_data = [{**inputs[0], "data": ["seven", "eight"]}, *inputs[1:]]
    ours, theirs = wine.both("POST", path, {"inputs": bad_data})
    assert_our_400(ours, theirs, 500)
    # Not JSON at all.
    ours, theirs = wine.both("POST", path, b"{not json")
    assert_our_400(ours, theirs, 422)
    # An unknown model: 404 with the protocol's error body from both.
    ours, theirs = wine.both("POST", "/v2/models/no-such-model/infer", {"inputs": inputs})
    assert (ours.status_code, theirs.status_code) == (404, 404)
    assert set(ours.json()) == set(theirs.json()) == {"error"}


def test_wine_metadata_and_readiness(wine):
    ours, theirs = wine.both("GET", f"/v2/models/{wine.name}")
    assert ours.status_code == theirs.status_code == 200
    assert ours.json() == theirs.json()
    assert [t["name"] for t in ours.json()["inputs"]] == list(FEATURES)
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{wine.name}/ready"):
        ours, theirs = wine.both("GET", path)
        assert ours.status_code == theirs.status_code == 200, path
    ours, theirs = wine.both("GET", "/v2/models/no-such-model/ready")
    assert ours.status_code == theirs.status_code == 404
    ours, theirs = wine.both("GET", "/v2")
    assert ours.status_code == theirs.status_code == 200
    assert set(ours.json()) == set(theirs.json()) == {"name", "version", "extensions"}
    assert ours.json()["extensions"] == theirs.json()["extensions"] == []


COLORS = color_frame(12, seed=7)


@pytest.mark.parametrize(("rows", "shape"), [(1, "n"), (12, "n1")], ids=["1row", "12rows-n1"])
def test_pipeline_answers_match_mlserver(pipeline, rows, shape):
    body = {"id": "colors", "inputs": columns(COLORS.iloc[:rows], shape=shape)}
    answer = assert_same_answer(*pipeline.both("POST", f"/v2/models/{pipeline.name}/infer", body))
    assert answer["outputs"][0]["datatype"] == "FP64"


def test_pipeline_with_input_content_types(pipeline):
    frame = COLORS.iloc[:4]
    inputs = columns(frame)
    inputs[0]["parameters"] = {"content_type": "str"}
    inputs[1]["parameters"] = {"content_type": "np"}
    body = {"parameters": {"content_type": "pd"}, "inputs": inputs}
    assert_same_answer(*pipeline.both("POST", f"/v2/models/{pipeline.name}/infer", body), id_given=False)


def test_pipeline_mistakes_and_metadata(pipeline):
    path = f"/v2/models/{pipeline.name}/infer"
    inputs = columns(COLORS.iloc[:2])
    ours, theirs = pipeline.both("POST", path, {"inputs": inputs[:1]})  # "size" missing
    assert_our_400(ours, theirs, 500)
    assert "size" in ours.json()["error"]
    numbers_for_strings = [{**inputs[0], "datatype": "FP64", "data": [1.0, 2.0]}, inputs[1]]
    ours, theirs = pipeline.both("POST", path, {"inputs": numbers_for_strings})
    assert_our_400(ours, theirs, 500)
    ours, theirs = pipeline.both("GET", f"/v2/models/{pipeline.name}")
    assert ours.json() == theirs.json()
    assert [(t["name"], t["datatype"]) for t in ours.json()["inputs"]] == [
        ("color", "BYTES"),
        ("size", "FP64"),
    ]
