"""Load-time checks that decide how a model may be served fast.

Two promises depend on the model, not on mlscale, so they are checked on
sample rows before they are relied on:

- the native path predicts exactly what pyfunc predicts;
- merging requests into one predict call answers each of them exactly as a
  call of its own would. Tree ensembles do; models built on BLAS (linear
  models, neural networks) may differ in the last bit because the summation
  order depends on the matrix size. Such models are served without merging.

The sample is the model's own input example when it has one, plus seeded
random rows when the signature is numeric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
import orjson

from mlscale.model.native import NativePredict, same_predictions
from mlscale.model.signature import NumericSignature

if TYPE_CHECKING:  # pandas comes in with mlflow; a type here only
    import pandas as pd

_RANDOM_ROWS = 8


def split_rows(raw: object, sizes: Sequence[int]) -> list[object] | None:
    """Split a batched output back per request, or None when it is not one item per row."""
    total = sum(sizes)
    if not hasattr(raw, "__len__") or isinstance(raw, (str, bytes, dict)) or len(raw) != total:
        return None
    bounds = np.cumsum(sizes).tolist()
    starts = [0, *bounds[:-1]]
    if isinstance(raw, np.ndarray):
        return [raw[s:e] for s, e in zip(starts, bounds, strict=False)]
    if hasattr(raw, "iloc"):  # DataFrame or Series: a fresh index, as each request alone gets
        return [raw.iloc[s:e].reset_index(drop=True) for s, e in zip(starts, bounds, strict=False)]
    if isinstance(raw, list):
        return [raw[s:e] for s, e in zip(starts, bounds, strict=False)]
    return None


def sample_document(
    signature: NumericSignature, example_rows: list[list[float]]
) -> dict[str, dict[str, list[str] | list[list[float]]]]:
    """A ``dataframe_split`` body: the example rows, then seeded random rows."""
    data = list(example_rows)
    rng = np.random.default_rng(0)
    integer = list(signature.integer_columns)
    for _ in range(_RANDOM_ROWS):
        row = rng.uniform(-10, 10, signature.width).round(3)
        row[integer] = np.round(row[integer])
        data.append(row.tolist())
    return {"dataframe_split": {"columns": list(signature.names), "data": data}}


def input_example(local_path: str) -> pd.DataFrame | None:
    """The model's saved input example as a DataFrame, if it has one."""
    try:
        from mlflow.models import Model  # heavy (about 1 s); only model loading needs it

        # MLflow annotates the example as a string; it is whatever was saved (often a DataFrame).
        example: object = Model.load(local_path).load_input_example(local_path)
    except Exception:  # an example is a bonus; its absence or oddity is not an error
        return None
    return example if _is_frame(example) and len(example) else None


def _is_frame(value: object) -> TypeGuard[pd.DataFrame]:
    return hasattr(value, "columns")


def check_native(native: NativePredict, matrix: np.ndarray, expected: object) -> tuple[str | None, bool]:
    """(why the native path is wrong or None, whether merged calls answer as single ones)."""
    try:
        actual = native(matrix)
    except Exception as exc:
        detail = str(exc).splitlines()[0] if str(exc) else ""
        return f"{type(exc).__name__}: {detail}", False
    mismatch = same_predictions(expected, actual)
    if mismatch is not None:
        return mismatch, False
    alone = [native(matrix[i : i + 1]) for i in range(len(matrix))]
    return None, all(np.array_equal(a, actual[i : i + 1], equal_nan=True) for i, a in enumerate(alone))


def sample_frame_body(frame: pd.DataFrame) -> bytes:
    """A JSON body carrying a DataFrame, for MLflow's parser."""
    return orjson.dumps(
        {
            "dataframe_split": {
                "columns": [str(c) for c in frame.columns],
                "data": frame.astype(object).values.tolist(),
            }
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
