"""The load tester's two protocols: which path and body each sends, and the V2 body
itself as MLServer's pandas codec writes it (the server's own V2 decoder reads it back)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlscale.errors import ConfigurationError
from mlscale.loadtest.bodies import build_pool, encode_body, parse_mix, v2_infer_path, v2_request
from mlscale.loadtest.cli import protocol_path_and_format
from mlscale.protocol.v2 import parse_request

FRAME = pd.DataFrame(
    {
        "alcohol": [9.4, 10.2],
        "count": np.array([3, 4], dtype="int64"),
        "color": ["red", "white"],
        "organic": [True, False],
    }
)


def test_a_v2_request_has_one_input_per_column_with_its_datatype_and_shape():
    body = v2_request(FRAME)
    assert body["parameters"] == {"content_type": "pd"}
    assert body["inputs"] == [
        {"name": "alcohol", "datatype": "FP64", "shape": [2], "data": [9.4, 10.2]},
        {"name": "count", "datatype": "INT64", "shape": [2], "data": [3, 4]},
        {"name": "color", "datatype": "BYTES", "shape": [2], "data": ["red", "white"]},
        {"name": "organic", "datatype": "BOOL", "shape": [2], "data": [True, False]},
    ]


def test_the_servers_v2_parser_reads_the_load_testers_bodies():
    pool = build_pool(FRAME, parse_mix(None, 2), "v2", per_kind=3)
    assert pool.content_type == "application/json"
    for text in pool.kinds[0]["bodies"]:
        request = parse_request(text.encode())
        assert [tensor.name for tensor in request.inputs] == list(FRAME.columns)
        assert all(tensor.shape == (2,) for tensor in request.inputs)
    assert json.loads(encode_body(FRAME.iloc[:1], "v2")) == v2_request(FRAME.iloc[:1])


def test_the_infer_path_quotes_the_name():
    assert v2_infer_path("wine-quality") == "/v2/models/wine-quality/infer"
    assert v2_infer_path("my model/v2") == "/v2/models/my%20model%2Fv2/infer"


def _options(**given):
    return {
        "protocol": "mlflow",
        "model_name": None,
        "path": None,
        "body_format": None,
        "signature_of": None,
    } | given


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, ("/invocations", "split")),
        ({"body_format": "csv"}, ("/invocations", "csv")),
        ({"path": "/score"}, ("/score", "split")),
        ({"protocol": "v2", "model_name": "wine"}, ("/v2/models/wine/infer", "v2")),
        (
            {"protocol": "v2", "signature_of": "models:/wine-quality/3"},
            ("/v2/models/wine-quality/infer", "v2"),
        ),
        ({"protocol": "v2", "signature_of": "/models/wine"}, ("/v2/models/wine/infer", "v2")),
        (
            {"protocol": "v2", "path": "/v2/models/x/versions/2/infer"},
            ("/v2/models/x/versions/2/infer", "v2"),
        ),
    ],
)
def test_the_protocol_picks_the_path_and_the_body(given, expected):
    assert protocol_path_and_format(_options(**given)) == expected


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"protocol": "v2"}, "give --model-name"),
        (
            {"protocol": "v2", "model_name": "w", "body_format": "records"},
            "--format records is an MLflow body",
        ),
        ({"model_name": "w"}, "use it with --protocol v2"),
    ],
)
def test_a_protocol_without_what_it_needs_says_what_to_give(given, says):
    with pytest.raises(ConfigurationError, match=says):
        protocol_path_and_format(_options(**given))
