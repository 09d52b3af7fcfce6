"""The fast path: a JSON document straight to the model's float64 matrix.

``decode_matrix`` either returns exactly the matrix MLflow's own parsing would
hand the model (same columns, same order, same casts), or None. None is never an
error: the request then goes through MLflow's parser, which accepts it or
rejects it with MLflow's own message. So every rejection, and every unusual but
valid request, keeps MLflow's behaviour, and only the common case is fast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlscale.model.signature import NumericSignature

FORMAT_KEYS = frozenset({"dataframe_split", "dataframe_records", "instances", "inputs"})
# Keys that switch MLflow into its unified LLM input mode.
LLM_KEYS = frozenset({"messages", "prompt", "input"})
_SPLIT_KEYS = frozenset({"columns", "data", "index"})
# float64 holds every integer up to 2**53 exactly; past that, MLflow's int64
# column and our float64 matrix could disagree, so such requests go the slow way.
_EXACT_INT = float(2**53)
_INT32 = np.iinfo(np.int32)


def decode_matrix(
    document: object, signature: NumericSignature, *, accept_legacy_split: bool = False
) -> np.ndarray | None:
    """The model input for a parsed JSON body, or None to defer to MLflow's parser."""
    if type(document) is not dict or "params" in document:
        return None
    keys = document.keys() & (FORMAT_KEYS | LLM_KEYS)
    if len(keys) == 1:
        (key,) = keys
        if key == "dataframe_split":
            return _from_split(document[key], signature)
        if key == "dataframe_records":
            return _from_records(document[key], signature)
        return None
    if not keys and accept_legacy_split and "data" in document:
        # MLflow 1.x clients post the bare pandas split; accepted only on request.
        return _from_split(document, signature)
    return None


def _from_split(split: object, signature: NumericSignature) -> np.ndarray | None:
    if type(split) is not dict or not split.keys() <= _SPLIT_KEYS:
        return None
    columns = split.get("columns")
    data = split.get("data")
    if type(columns) is not list or type(data) is not list or not data:
        return None
    index = split.get("index")
    if index is not None and (type(index) is not list or len(index) != len(data)):
        return None
    matrix = _to_matrix(data, len(columns))
    if matrix is None:
        return None
    if columns != list(signature.names):
        take = _column_positions(columns, signature)
        if take is None:
            return None
        matrix = matrix[:, take]
    return _apply_casts(matrix, signature)


def _from_records(records: object, signature: NumericSignature) -> np.ndarray | None:
    if type(records) is not list or not records:
        return None
    names = signature.names
    try:
        rows = [[record[name] for name in names] for record in records]
    except (KeyError, TypeError, IndexError):
        return None
    if any(type(record) is not dict for record in records):
        return None
    matrix = _to_matrix(rows, len(names))
    return None if matrix is None else _apply_casts(matrix, signature)


def _to_matrix(rows: Sequence[object], width: int) -> np.ndarray | None:
    try:
        matrix = np.array(rows)
    except (ValueError, TypeError, OverflowError):
        return None
    # Only plain numbers: strings, booleans, nulls and nested lists take MLflow's path.
    if matrix.ndim != 2 or matrix.shape[1] != width or matrix.dtype.kind not in "fiu":
        return None
    if matrix.dtype.kind in "iu" and matrix.size and np.abs(matrix).max() > _EXACT_INT:
        return None
    return matrix.astype(np.float64, copy=False)


def _column_positions(columns: Sequence[object], signature: NumericSignature) -> list[int] | None:
    if len(set(map(_hashable, columns))) != len(columns):
        return None
    where = {name: i for i, name in enumerate(columns) if type(name) is str}
    try:
        return [where[name] for name in signature.names]
    except KeyError:
        return None  # a missing column: MLflow says which


def _hashable(value: object) -> object:
    return value if isinstance(value, (str, int, float)) else repr(value)


def _apply_casts(matrix: np.ndarray, signature: NumericSignature) -> np.ndarray | None:
    """MLflow's ``astype`` per column: truncate into integer columns, round to float32."""
    if signature.integer_columns:
        ints = matrix[:, signature.integer_columns]
        if not np.isfinite(ints).all() or np.abs(ints).max() > _EXACT_INT:
            return None
        matrix[:, signature.integer_columns] = np.trunc(ints)
        if signature.int32_columns:
            narrow = matrix[:, signature.int32_columns]
            if narrow.min() < _INT32.min or narrow.max() > _INT32.max:
                return None
    if signature.float32_columns:
        cols = signature.float32_columns
        matrix[:, cols] = matrix[:, cols].astype(np.float32)
    return matrix
