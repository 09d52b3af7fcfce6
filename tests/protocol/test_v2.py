"""The Open Inference Protocol's decode and encode, as pure functions on tables of requests.

What MLServer does is checked live in tests/serving/test_v2_mlserver.py; these pin
the details (the fast path's declines, the error messages, the output shapes)
without a process.
"""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from mlscale.model.signature import NumericSignature
from mlscale.protocol import v2

COLUMNS = Schema([ColSpec("double", "a"), ColSpec("double", "b"), ColSpec("long", "n")])
SIGNATURE = NumericSignature.from_schema(COLUMNS)
TYPES = v2.column_types(COLUMNS)
METADATA = v2.ModelMetadata.from_signature(
    name="m",
    versions=(),
    platform="mlflow",
    signature=ModelSignature(inputs=COLUMNS, outputs=Schema([TensorSpec(np.dtype("float32"), (-1,))])),
)


def request(*inputs: dict, **fields) -> v2.InferRequest:
    return v2.parse_request(orjson.dumps({"inputs": list(inputs), **fields}))


def column(name: str, data: list, datatype: str = "FP64", shape: list[int] | None = None, **params) -> dict:
    tensor = {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}
    if params:
        tensor["parameters"] = params
    return tensor


ROWS = (column("a", [1.5, 2.5]), column("b", [3.0, 4.0], shape=[2, 1]), column("n", [7, 8], "INT64"))


def test_a_numeric_request_decodes_to_the_matrix_in_signature_order():
    shuffled = request(ROWS[2], ROWS[0], ROWS[1])
    matrix = v2.decode_matrix(shuffled, SIGNATURE, TYPES)
    assert matrix is not None and matrix.dtype == np.float64
    assert matrix.tolist() == [[1.5, 3.0, 7.0], [2.5, 4.0, 8.0]]


@pytest.mark.parametrize(
    "inputs",
    [
        ROWS[:2],  # a column missing: the generic path names it
        (*ROWS[:2], column("n", [7.5, 8], "FP64")),  # a float for a long column: MLflow's check decides
        (column("a", [1.5, None]), *ROWS[1:]),  # null: the native path was checked on finite rows
        (column("a", [[1.5, 2.5]], shape=[1, 2]), *ROWS[1:]),  # not a column
        (column("a", [1.5]), *ROWS[1:]),  # rows that disagree
        (column("a", [1.5, 2.5], content_type="str"), *ROWS[1:]),
        (*ROWS[:2], column("n", [2**60, 1], "INT64")),  # past float64's exact integers
    ],
)
def test_the_fast_path_declines_what_it_cannot_decode_exactly(inputs):
    assert v2.decode_matrix(request(*inputs), SIGNATURE, TYPES) is None


DOUBLES = Schema([ColSpec("double", "a"), ColSpec("double", "b"), ColSpec("double", "c")])
DOUBLE_SIGNATURE = NumericSignature.from_schema(DOUBLES)
DOUBLE_COLUMNS = v2.fp64_columns(v2.column_types(DOUBLES))
A, B, C = column("a", [1.5, 2.5]), column("b", [3.0, 4.0]), column("c", [5.0, 6.0])


def _direct(*inputs: dict, **fields) -> np.ndarray | None:
    return v2.fp64_matrix({"inputs": list(inputs), **fields}, DOUBLE_SIGNATURE, DOUBLE_COLUMNS)


@pytest.mark.parametrize(
    ("inputs", "fields"),
    [
        ((A, B, C), {}),
        ((C, A, B), {}),  # any order
        ((*(column(t["name"], t["data"], shape=[2, 1]) for t in (A, B, C)),), {}),
        ((A, B, C), {"parameters": {"content_type": "pd"}, "id": "x"}),
    ],
)
def test_the_direct_fp64_matrix_is_the_parsed_paths(inputs, fields):
    """Read straight from the document, or through parse and decode_matrix: one matrix."""
    direct = _direct(*inputs, **fields)
    parsed = v2.decode_matrix(request(*inputs, **fields), DOUBLE_SIGNATURE, v2.column_types(DOUBLES))
    assert direct is not None and parsed is not None
    assert direct.tolist() == parsed.tolist() == [[1.5, 3.0, 5.0], [2.5, 4.0, 6.0]]
    assert direct.flags.c_contiguous and direct.dtype == np.float64


@pytest.mark.parametrize(
    ("inputs", "fields"),
    [
        ((A, B), {}),  # a column missing
        ((A, B, column("c", [5.0, 6.0], content_type="np")), {}),  # parameters on an input
        ((A, B, column("c", [5, 6], "INT64")), {}),  # not FP64
        ((A, B, column("c", [5.0])), {}),  # rows that disagree
        ((A, B, column("c", [5.0, 6.0], shape=[1, 2])), {}),
        ((A, B, column("c", [5.0, None])), {}),  # null
        ((A, B, column("c", ["five", "six"])), {}),
        ((A, A, C), {}),  # a column twice
        ((A, B, C), {"parameters": {"content_type": "pd", "temperature": 1}}),
        ((A, B, column("c", [5.0, 6.0], shape=[2, 1])), {}),  # shapes that differ: the parser decides
        ((A, B, {**C, "extra": 1}), {}),
        ((A, B, {"name": ["c"], "datatype": "FP64", "shape": [2], "data": [5.0, 6.0]}), {}),
    ],
)
def test_the_direct_fp64_matrix_leaves_everything_else_to_the_parser(inputs, fields):
    assert _direct(*inputs, **fields) is None


def test_parameters_or_another_content_type_take_the_generic_path():
    assert v2.decode_matrix(request(*ROWS, parameters={"temperature": 1}), SIGNATURE, TYPES) is None
    assert v2.decode_matrix(request(*ROWS, parameters={"content_type": "np"}), SIGNATURE, TYPES) is None
    parsed = request(*ROWS, parameters={"content_type": "pd", "temperature": 1})
    assert parsed.content_type == "pd" and parsed.params == {"temperature": 1}


def test_the_generic_path_builds_mlservers_dataframe():
    frame = v2.decode(
        request(column("a", [1, 2], "INT64"), ROWS[1], column("n", [1.7, 2.2], "INT64")), METADATA
    )
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["a", "b", "n"]
    # numpy's casts for the declared datatype, as MLServer's codec: 1.7 as INT64 is 1.
    assert frame["n"].tolist() == [1, 2] and str(frame["a"].dtype) == "int64"


def test_strings_travel_as_bytes():
    schema = Schema([ColSpec("string", "color"), ColSpec("double", "size")])
    metadata = v2.ModelMetadata.from_signature(
        name="c", versions=(), platform="mlflow", signature=ModelSignature(inputs=schema)
    )
    assert [t.to_dict() for t in metadata.inputs] == [
        {"name": "color", "datatype": "BYTES", "shape": [-1, 1], "parameters": {"content_type": "str"}},
        {"name": "size", "datatype": "FP64", "shape": [-1, 1], "parameters": {"content_type": "np"}},
    ]
    frame = v2.decode(
        request(column("color", ["red", "blue"], "BYTES"), column("size", [1.0, 2.0])), metadata
    )
    assert isinstance(frame, pd.DataFrame) and frame["color"].tolist() == ["red", "blue"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[1, 2", "not valid JSON"),
        (b"[]", "JSON object"),
        (b"{}", '"inputs"'),
        (b'{"inputs": [{"name": "a", "datatype": "FLOAT", "shape": [1], "data": [1]}]}', "FP64"),
        (b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": "1", "data": [1]}]}', "shape"),
        (b'{"inputs": [{"name": "a", "datatype": "FP64", "shape": [1]}]}', '"data"'),
        (b'{"inputs": [{"datatype": "FP64", "shape": [1], "data": [1]}]}', '"name"'),
        (b'{"id": 7, "inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}]}', '"id"'),
        (
            b'{"outputs": "all", "inputs": [{"name": "a", "datatype": "FP64", "shape": [1], "data": [1]}]}',
            "outputs",
        ),
    ],
)
def test_malformed_requests_are_400_saying_what_to_fix(body, says):
    with pytest.raises(v2.V2Error) as caught:
        v2.parse_request(body)
    assert caught.value.status == 400 and says in caught.value.message
    assert set(orjson.loads(caught.value.body)) == {"error"}


@pytest.mark.parametrize(
    ("inputs", "says"),
    [
        (ROWS[:2], "['n']"),
        ((column("a", ["x", "y"]), *ROWS[1:]), "does not fit datatype FP64"),
        ((column("a", [1.0, 2.0, 3.0], shape=[2]), *ROWS[1:]), "shape [2] but 3 values"),
        ((column("a", [1.0, 2.0, 3.0, 4.0], shape=[2, 2]), *ROWS[1:]), "[n] or [n, 1]"),
        ((column("a", [1.0]), *ROWS[1:]), "same number of rows"),
        ((*ROWS, ROWS[0]), "unique"),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_400(inputs, says):
    with pytest.raises(v2.V2Error) as caught:
        v2.decode(request(*inputs), METADATA)
    assert says in caught.value.message


def test_np_content_type_takes_one_tensor():
    array = v2.decode(
        request(column("x", [1, 2, 3, 4], shape=[2, 2]), parameters={"content_type": "np"}), METADATA
    )
    assert isinstance(array, np.ndarray) and array.shape == (2, 2)
    with pytest.raises(v2.V2Error, match="exactly one input"):
        v2.decode(request(*ROWS, parameters={"content_type": "np"}), METADATA)
    with pytest.raises(v2.V2Error, match="Unknown request content_type"):
        v2.decode(request(*ROWS, parameters={"content_type": "tensor"}), METADATA)


def encode(raw, **kwargs) -> dict:
    fields = {"model_name": "m", "model_version": None, "request_id": "r", "outputs": None, **kwargs}
    return orjson.loads(v2.encode_response(raw, **fields))


def test_an_array_is_output_1_with_a_batch_dimension_and_mlflows_digits():
    answer = encode(np.array([4.9985085, 5.25], dtype=np.float32))
    assert answer == {
        "model_name": "m",
        "id": "r",
        "parameters": {"content_type": "np"},
        "outputs": [
            {
                "name": "output-1",
                "shape": [2, 1],
                "datatype": "FP32",
                "parameters": {"content_type": "np"},
                # float32 widened, as MLflow's /invocations writes it
                "data": [float(np.float32(4.9985085)), 5.25],
            }
        ],
    }
    assert encode(np.array([[1, 2, 3]]))["outputs"][0]["shape"] == [1, 3]
    assert encode(np.array([np.nan]))["outputs"][0]["data"] == [None]


def test_a_dataframe_is_one_output_per_column():
    frame = pd.DataFrame({"score": [0.5, 1.5], "label": ["a", "b"]})
    answer = encode(frame, model_version="3", request_id=None)
    assert answer["parameters"] == {"content_type": "pd"} and answer["model_version"] == "3"
    assert answer["id"]  # made up when the request has none
    assert [(o["name"], o["datatype"], o["shape"]) for o in answer["outputs"]] == [
        ("score", "FP64", [2, 1]),
        ("label", "BYTES", [2, 1]),
    ]
    assert answer["outputs"][1]["data"] == ["a", "b"]


def test_requested_outputs_filter_and_an_unknown_one_is_400():
    frame = pd.DataFrame({"score": [0.5], "label": ["a"]})
    assert [o["name"] for o in encode(frame, outputs=("label",))["outputs"]] == ["label"]
    with pytest.raises(v2.V2Error, match="no output named 'nope'"):
        encode(frame, outputs=("nope",))


def test_metadata_follows_mlservers_mlflow_runtime():
    document = orjson.loads(METADATA.to_json())
    assert document["parameters"] == {"content_type": "pd"}
    assert [(t["name"], t["datatype"], t["shape"]) for t in document["inputs"]] == [
        ("a", "FP64", [-1, 1]),
        ("b", "FP64", [-1, 1]),
        ("n", "INT64", [-1, 1]),
    ]
    assert document["outputs"] == [
        {"name": "output-0", "datatype": "FP32", "shape": [-1], "parameters": {"content_type": "np"}}
    ]
    bare = v2.ModelMetadata.from_signature(name="x", versions=("2",), platform="mlflow", signature=None)
    assert orjson.loads(bare.to_json())["versions"] == ["2"]
