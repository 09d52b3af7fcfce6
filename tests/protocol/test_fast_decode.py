"""The fast decoder: exactly MLflow's matrix, or None (defer to MLflow's parser)."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.types import ColSpec, Schema

from mlscale.model.signature import NumericSignature
from mlscale.protocol.fast import decode_matrix

SCHEMA = Schema([ColSpec("double", "f0"), ColSpec("double", "f1"), ColSpec("long", "f2")])
SIG = NumericSignature.from_schema(SCHEMA)


def split(data, columns=("f0", "f1", "f2"), **extra):
    return {"dataframe_split": {"columns": list(columns), "data": data, **extra}}


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (split([[1.5, 2, 3]]), [[1.5, 2.0, 3.0]]),
        (split([[1, 2, 3], [4, 5, 6]]), [[1, 2, 3], [4, 5, 6]]),
        # reordered and extra columns: MLflow reorders and drops
        (split([[3, 1.5, 2, 9]], columns=("f2", "f0", "f1", "extra")), [[1.5, 2.0, 3.0]]),
        # 3.7 into a long column is truncated, as pandas' astype does
        (split([[1.0, 2.0, 3.7], [1.0, 2.0, -3.7]]), [[1, 2, 3], [1, 2, -3]]),
        (split([[1, 2, 3]], index=[7]), [[1, 2, 3]]),
        # JSON booleans become 1 and 0, as pandas' astype makes them
        (split([[True, 2, False]]), [[1, 2, 0]]),
        ({"dataframe_records": [{"f2": 3, "f1": 2, "f0": 1.25, "x": "y"}]}, [[1.25, 2, 3]]),
        ({"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[1, 2, 3]]}, "other": 1}, [[1, 2, 3]]),
    ],
    ids=["one-row", "ints", "reorder-extra", "truncate-long", "index", "bools", "records", "unknown-key"],
)
def test_decodes_what_mlflow_would_pass_the_model(document, expected):
    matrix = decode_matrix(document, SIG)
    assert matrix is not None
    assert matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix, np.array(expected, dtype=np.float64))


@pytest.mark.parametrize(
    "document",
    [
        [],
        "text",
        {"dataframe_split": [[1, 2, 3]]},
        split([]),
        split([[1, 2]]),  # ragged: MLflow words the error
        split([[1, 2, 3], [1, 2]]),
        split([["1.5", 2, 3]]),  # strings: MLflow casts them itself
        split([[None, 2, 3]]),
        split([[1, 2, None]]),
        split([[1, 2, float("nan")]]),  # NaN into a long column is an error
        split([[1, 2]], columns=("f0", "f1")),  # missing column
        split([[1, 2, 3, 4]], columns=("f0", "f1", "f2", "f2")),  # duplicate column
        split([[1, 2, 3]], index=[1, 2]),
        split([[1, 2, 2**60]]),  # past float64's exact integers
        {"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[1, 2, 3]], "bad": 1}},
        {"dataframe_split": {"data": [[1, 2, 3]]}},
        {**split([[1, 2, 3]]), "params": {"a": 1}},
        {**split([[1, 2, 3]]), "inputs": [[1, 2, 3]]},
        {**split([[1, 2, 3]]), "prompt": "hi"},
        {"inputs": [[1, 2, 3]]},
        {"instances": [{"f0": 1, "f1": 2, "f2": 3}]},
        {"dataframe_records": [{"f0": 1, "f1": 2}]},
        {"dataframe_records": [[1, 2, 3]]},
        {"dataframe_records": {"f0": [1]}},
        {"columns": ["f0", "f1", "f2"], "data": [[1, 2, 3]]},  # 1.x body, not opted in
    ],
)
def test_defers_everything_else_to_mlflow(document):
    assert decode_matrix(document, SIG) is None


def test_legacy_split_only_when_asked():
    body = {"columns": ["f0", "f1", "f2"], "data": [[1, 2, 3]]}
    assert decode_matrix(body, SIG) is None
    np.testing.assert_array_equal(decode_matrix(body, SIG, accept_legacy_split=True), [[1, 2, 3]])


def test_float32_columns_are_rounded_like_mlflow_casts_them():
    schema = Schema([ColSpec("float", "a"), ColSpec("double", "b")])
    matrix = decode_matrix(split([[0.1, 0.1]], columns=("a", "b")), NumericSignature.from_schema(schema))
    assert matrix[0, 0] == float(np.float32(0.1))
    assert matrix[0, 1] == 0.1


def test_int32_overflow_defers():
    schema = Schema([ColSpec("integer", "a")])
    sig = NumericSignature.from_schema(schema)
    assert decode_matrix(split([[2**31]], columns=("a",)), sig) is None
    np.testing.assert_array_equal(decode_matrix(split([[2**31 - 1]], columns=("a",)), sig), [[2**31 - 1]])


@pytest.mark.parametrize(
    "schema",
    [
        None,
        Schema([ColSpec("string", "a")]),
        Schema([ColSpec("boolean", "a")]),
        Schema([ColSpec("double", "a", required=False)]),
        Schema([ColSpec("double")]),  # unnamed
    ],
    ids=["none", "string", "boolean", "optional", "unnamed"],
)
def test_no_fast_path_for_other_signatures(schema):
    assert NumericSignature.from_schema(schema) is None
