"""Batched answers equal unbatched ones, on real models, for both paths."""

from __future__ import annotations

import functools
import operator

import numpy as np
import orjson
import pytest
from mlflow.exceptions import MlflowException

from mlscale.model.checks import split_rows
from mlscale.protocol.fast import decode_matrix
from mlscale.protocol.pyfunc import JSON, Predictor, parse
from mlscale.serving.loading import load_model
from mlscale.serving.predict import Job, batch_key, native_batch, pyfunc_batch
from tests.support.models import color_frame, small_frame


def split_body(frame) -> bytes:
    return orjson.dumps({"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}})


def chunks(frame, sizes):
    start = 0
    for size in sizes:
        yield frame.iloc[start : start + size]
        start += size


SIZES = [1, 3, 1, 5, 2]


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_native_batches_answer_as_if_alone(model_paths, name):
    model = load_model(model_paths[name])
    assert model.native is not None, model.path_description
    assert model.native_batchable
    frame = small_frame(sum(SIZES), seed=3)
    matrices = [
        decode_matrix(orjson.loads(split_body(part)), model.signature) for part in chunks(frame, SIZES)
    ]
    run = native_batch(model.native)
    together = run([Job(m) for m in matrices])
    alone = [run([Job(m)])[0] for m in matrices]
    assert together == alone
    # ...and equal to what MLflow's pyfunc answers for the whole frame.
    expected = model.pyfunc.predict(frame).astype(np.float64).tolist()
    assert functools.reduce(operator.iadd, (orjson.loads(a)["predictions"] for a in alone), []) == expected


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("sklearn_pipeline", color_frame(sum(SIZES), seed=4)),
        ("custom_dataframe", small_frame(sum(SIZES), seed=5)),
    ],
)
def test_pyfunc_batches_answer_as_if_alone(model_paths, name, frame):
    model = load_model(model_paths[name])
    assert model.pyfunc_batchable
    requests = [
        parse(split_body(part), JSON, model.pyfunc, model.input_schema, accept_legacy_split=False)
        for part in chunks(frame, SIZES)
    ]
    keys = {batch_key(r) for r in requests}
    assert len(keys) == 1, "requests of the same shape must be mergeable"
    run = pyfunc_batch(Predictor(model.pyfunc))
    together = run([Job(r) for r in requests])
    alone = [run([Job(r)])[0] for r in requests]
    assert together == alone
    assert all(isinstance(a, bytes) for a in alone)


def merging_changes_answers(model) -> bool:
    """Whether merged native calls answer differently from single ones on this machine."""
    frame = small_frame(sum(SIZES), seed=3)
    matrices = [decode_matrix(orjson.loads(split_body(p)), model.signature) for p in chunks(frame, SIZES)]
    run = native_batch(model.native)
    return run([Job(m) for m in matrices]) != [run([Job(m)])[0] for m in matrices]


def test_blas_models_are_merged_only_where_this_machine_sums_exactly(model_paths):
    """Linear models sum in an order that can depend on the batch's size, so merged
    calls may change the last bit of some answers: on some CPUs' BLAS kernels they do,
    on others not. The load-time check must see which, and merge only when exact."""
    numeric = load_model(model_paths["sklearn_numeric"])
    assert numeric.native is not None
    if merging_changes_answers(numeric):
        assert not numeric.native_batchable
    # Without a sample to check on, a pyfunc model is not merged either.
    assert not load_model(model_paths["no_signature"]).pyfunc_batchable


def save_custom(path: str, predict) -> str:
    """A custom pyfunc model answering ``predict(frame)``, with a signature on f0..."""
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class Custom(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return predict(model_input)

    frame = small_frame(5)
    mlflow.pyfunc.save_model(
        path, python_model=Custom(), signature=infer_signature(frame, frame["f0"].to_numpy())
    )
    return path


def save_batch_dependent(path: str) -> str:
    """Each row minus the batch's mean: merging always changes its answers."""

    def centred(frame):
        values = frame["f0"].to_numpy()
        return values - values.mean()

    return save_custom(path, centred)


def test_a_model_whose_answers_change_when_merged_is_not_merged(tmp_path):
    """The load-time check, on a model where merging certainly changes the answers
    (whatever the CPU): merging is turned off."""
    assert not load_model(save_batch_dependent(str(tmp_path / "centred"))).pyfunc_batchable


def save_picky(path: str) -> str:
    """Refuses rows with f1 > 100 and doubles f0 otherwise."""

    def picky(frame):
        if (frame["f1"] > 100).any():
            raise ValueError("f1 is too large")
        return frame["f0"].to_numpy() * 2

    return save_custom(path, picky)


def test_a_failing_request_in_a_batch_fails_alone(tmp_path):
    """A row the model rejects makes the merged call fail; each request is then
    redone alone, so only the bad one gets the error."""
    model = load_model(save_picky(str(tmp_path / "picky")))
    assert model.pyfunc_batchable
    good = small_frame(3, seed=1)
    bad = good.copy()
    bad["f1"] = [1000.0, 1.0, 2.0]
    requests = [
        parse(split_body(f), JSON, model.pyfunc, model.input_schema, accept_legacy_split=False)
        for f in (good, bad, good)
    ]
    assert len({batch_key(r) for r in requests}) == 1
    outcomes = pyfunc_batch(Predictor(model.pyfunc))([Job(r) for r in requests])
    assert isinstance(outcomes[0], bytes) and outcomes[0] == outcomes[2]
    assert isinstance(outcomes[1], MlflowException)
    assert outcomes[1].get_http_status_code() == 400
    assert "unexpected error while evaluating the model" in outcomes[1].message


def test_requests_with_params_or_an_index_are_never_merged(model_paths):
    model = load_model(model_paths["no_signature"])
    frame = small_frame(2)
    plain = parse(split_body(frame), JSON, model.pyfunc, model.input_schema, accept_legacy_split=False)
    indexed = parse(
        orjson.dumps(
            {
                "dataframe_split": {
                    "columns": list(frame.columns),
                    "index": [5, 6],
                    "data": frame.values.tolist(),
                }
            }
        ),
        JSON,
        model.pyfunc,
        model.input_schema,
        accept_legacy_split=False,
    )
    assert batch_key(plain) == batch_key(plain)
    assert batch_key(indexed) != batch_key(indexed)


@pytest.mark.parametrize(
    ("raw", "sizes", "expected"),
    [
        (np.arange(6), [2, 4], [[0, 1], [2, 3, 4, 5]]),
        ([1, 2, 3], [1, 2], [[1], [2, 3]]),
        (np.arange(5), [2, 2], None),  # not one output per row
        ({"a": 1}, [1], None),
        ("text", [4], None),
    ],
)
def test_split_rows(raw, sizes, expected):
    parts = split_rows(raw, sizes)
    if expected is None:
        assert parts is None
    else:
        assert [list(p) for p in parts] == expected


def test_a_native_model_that_raises_answers_mlflows_400():
    def broken(matrix):
        raise ValueError("the library refused the input")

    with pytest.raises(MlflowException) as raised:
        native_batch(broken)([Job(np.zeros((1, 3)))])
    assert raised.value.get_http_status_code() == 400
    assert "unexpected error while evaluating the model" in raised.value.message
    assert "the library refused the input" in raised.value.serialize_as_json()


def test_a_native_failure_in_a_merged_call_fails_only_its_request():
    def picky(matrix):
        if (matrix > 100).any():
            raise ValueError("too large")
        return matrix[:, 0] * 2

    outcomes = native_batch(picky)(
        [Job(np.ones((1, 2))), Job(np.full((2, 2), 1000.0)), Job(np.zeros((1, 2)))]
    )
    assert outcomes[0] == b'{"predictions":[2.0]}' and outcomes[2] == b'{"predictions":[0.0]}'
    assert isinstance(outcomes[1], MlflowException)
