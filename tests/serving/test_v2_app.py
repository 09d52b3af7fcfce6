"""The V2 endpoints inside mlscale's app, in process: routing, the shared batchers,
metrics, readiness while draining, authentication and the model's name."""

from __future__ import annotations

import asyncio
import json

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlscale.protocol.v2 import DATATYPES
from mlscale.serving.batcher import BatchSettings
from mlscale.serving.server import build_app
from mlscale.serving.settings import ServeSettings, default_model_name
from tests.conftest import mlscale_client
from tests.support.models import SMALL_COLUMNS, color_frame, small_frame


def _datatype(dtype) -> str:
    return {"i": "INT64", "f": "FP64"}.get(dtype.kind, "BYTES")


def v2_columns(frame) -> dict:
    """One input per column; the small models' f2 is a long column, sent as INT64."""
    return {
        "inputs": [
            {
                "name": column,
                "datatype": _datatype(frame[column].dtype),
                "shape": [len(frame)],
                "data": frame[column].tolist(),
            }
            for column in frame.columns
        ]
    }


def metric(client, name: str, **labels: str) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        series, _, value = line.rpartition(" ")
        head, _, rest = series.partition("{")
        if head == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


@pytest.mark.parametrize(("model", "path"), [("xgboost", "native"), ("sklearn_pipeline", "pyfunc")])
def test_infer_goes_through_the_batcher_of_its_path_and_is_counted(clients, model_paths, model, path):
    client, _ = clients[model]
    name = default_model_name(model_paths[model])
    frame = small_frame(3) if model == "xgboost" else color_frame(3)
    before = metric(client, "mlscale_batch_rows_count", path=path)
    answer = client.post(f"/v2/models/{name}/infer", content=orjson.dumps(v2_columns(frame)))
    assert answer.status_code == 200, answer.text
    assert metric(client, "mlscale_batch_rows_count", path=path) == before + 1
    assert metric(client, "mlscale_requests_total", endpoint="infer", status="200") >= 1
    assert metric(client, "mlscale_in_flight_requests") == 0
    # The same rows through /invocations: the same numbers.
    split = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    invocations = client.post(
        "/invocations", content=orjson.dumps(split), headers={"content-type": "application/json"}
    )
    assert invocations.json()["predictions"] == answer.json()["outputs"][0]["data"]


def test_v2_and_invocations_requests_share_one_predict_call(model_paths):
    """With a batch window, a V2 request and an /invocations request arriving together
    are predicted in one call, and each gets its own protocol's answer."""
    settings = ServeSettings(
        model_uri=model_paths["xgboost"], model_name="m", batch=BatchSettings(max_wait_s=0.5)
    )
    app = build_app(settings)
    frame = small_frame(4)
    split = {"dataframe_split": {"columns": SMALL_COLUMNS, "data": frame.iloc[:2].values.tolist()}}

    async def both() -> tuple[httpx.Response, httpx.Response]:
        await app.startup()
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await asyncio.gather(
                    client.post("/v2/models/m/infer", content=orjson.dumps(v2_columns(frame.iloc[2:]))),
                    client.post(
                        "/invocations",
                        content=orjson.dumps(split),
                        headers={"content-type": "application/json"},
                    ),
                )
        finally:
            await app.shutdown()

    infer, invocations = asyncio.run(both())
    assert infer.status_code == invocations.status_code == 200
    assert len(infer.json()["outputs"][0]["data"]) == 2 and len(invocations.json()["predictions"]) == 2
    rows = app.metrics.batch_requests.labels("native")
    assert rows._sum.get() == 2 and sum(b.get() for b in rows._buckets) == 1  # one call, two requests


def test_readiness_follows_ping_while_draining(model_paths):
    with mlscale_client(model_paths["xgboost"], model_name="m") as client:
        assert client.get("/v2/health/ready").status_code == 200
        client.app_instance._begin_drain()
        assert client.get("/ping").status_code == 503
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 400 and "draining" in ready.json()["error"]
        assert client.get("/v2/models/m/ready").status_code == 400
        assert client.get("/v2/health/live").status_code == 200


def test_the_token_guards_infer_and_metadata_but_not_health(model_paths):
    with mlscale_client(model_paths["xgboost"], model_name="m", auth_token="s3cret") as client:
        refused = client.post("/v2/models/m/infer", content=b"{}")
        assert refused.status_code == 401 and set(refused.json()) == {"error"}
        assert client.get("/v2/models/m").status_code == 401
        assert client.get("/v2/health/ready").status_code == 200
        allowed = client.get("/v2/models/m", headers={"authorization": "Bearer s3cret"})
        assert allowed.status_code == 200


def test_routes_methods_and_names(model_paths):
    with mlscale_client(model_paths["xgboost"], model_name="custom") as client:
        assert client.get("/v2/models/custom").json()["name"] == "custom"
        assert client.get("/v2/models/xgboost").status_code == 404
        wrong = client.get("/v2/models/custom/infer")
        assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
        assert client.get("/v2/models/custom/explain").status_code == 404
        assert client.get("/v2/").status_code == 200
        # Not under /v2: the MLflow routes' own 404.
        assert client.get("/v2x").json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("uri", "name", "version"),
    [
        ("models:/wine-quality/3", "wine-quality", "3"),
        ("models:/wine-quality@champion", "wine-quality", None),
        ("runs:/0a1b2c/model", "model", None),
        ("/srv/models/wine/", "wine", None),
        ("s3://bucket/path/fraud", "fraud", None),
    ],
)
def test_the_default_model_name(uri, name, version):
    settings = ServeSettings(model_uri=uri)
    assert (settings.v2_model_name, settings.v2_model_version) == (name, version)
    assert ServeSettings(model_uri=uri, model_name="kserve-name").v2_model_name == "kserve-name"


# -- hostile input: never a 5xx ------------------------------------------------------

_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
_DATA = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=4), max_leaves=12)
_PARAMETERS = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"content_type": st.sampled_from(["pd", "np", "str", "dict", "pd_json", "base64", "x", 7])},
        optional={"temperature": _JSON_LEAF},
    ),
)
_TENSOR = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*SMALL_COLUMNS, "color", "size", "zzz", 5]),
        "datatype": st.sampled_from([*DATATYPES, "FLOAT", None]),
        "shape": st.one_of(st.lists(st.integers(-1, 3), max_size=3), st.just("2")),
        "data": _DATA,
    },
    optional={"parameters": _PARAMETERS},
)
_REQUEST = st.fixed_dictionaries(
    {"inputs": st.one_of(st.lists(_TENSOR, max_size=4), _JSON_LEAF)},
    optional={
        "id": st.one_of(st.text(max_size=4), st.integers()),
        "parameters": _PARAMETERS,
        "outputs": st.one_of(
            st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=2), _DATA
        ),
    },
)


@pytest.mark.parametrize("model", ["xgboost", "sklearn_pipeline"])
def test_no_v2_request_gets_a_server_error(clients, model_paths, model):
    """Requests that fit the protocol's shape loosely, with wrong types, shapes and data
    anywhere: every answer is a 200, or a 4xx with the protocol's error body."""
    client, _ = clients[model]
    path = f"/v2/models/{default_model_name(model_paths[model])}/infer"

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(document=_REQUEST)
    def check(document):
        answer = client.post(path, content=json.dumps(document))
        assert answer.status_code in (200, 400), (answer.status_code, answer.text, document)
        if answer.status_code == 400:
            assert set(answer.json()) == {"error"} and answer.json()["error"], document

    check()
