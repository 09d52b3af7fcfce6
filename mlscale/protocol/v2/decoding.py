"""What the model receives: the native path's float64 matrix, or what MLServer's codecs make."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from mlscale.model.signature import NumericSignature
from mlscale.protocol.v2.datatypes import (
    DATATYPES,
    DICT,
    EXACT_DATATYPES,
    EXACT_INT,
    INPUT_CONTENT_TYPES,
    NUMPY,
    PANDAS,
    REQUEST_CONTENT_TYPES,
    STRING,
)
from mlscale.protocol.v2.errors import V2Error
from mlscale.protocol.v2.metadata import ModelMetadata
from mlscale.protocol.v2.parsing import InferRequest, Tensor

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    pass


def decode_matrix(
    request: InferRequest, signature: NumericSignature, column_types: Mapping[str, str]
) -> np.ndarray | None:
    """The float64 matrix in signature order for a plain numeric request, or None.

    None is never an error: the request then takes ``decode`` and pyfunc, which
    answer it (or reject it) as MLServer's DataFrame path would. The matrix is
    only built where it holds exactly the values that path would give the model.
    """
    if request.params or request.content_type not in (None, PANDAS):
        return None
    inputs = request.inputs
    if len(inputs) != signature.width:
        return None
    position = signature.position
    rows = inputs[0].shape[0] if inputs[0].shape else 0
    if rows == 0:
        return None
    columns: list[int] = []
    all_fp64 = True
    for tensor in inputs:
        column = position.get(tensor.name)
        if column is None or tensor.content_type not in (None, NUMPY):
            return None
        if tensor.datatype not in EXACT_DATATYPES.get(column_types.get(tensor.name, ""), ()):
            return None
        shape = tensor.shape
        if shape[0] != rows or (len(shape) > 1 and any(d != 1 for d in shape[1:])):
            return None
        columns.append(column)
        all_fp64 = all_fp64 and tensor.datatype == "FP64"
    if len(set(columns)) != signature.width:
        return None
    # The common case, every column FP64: one conversion for the whole request.
    values = _fp64_block(inputs, rows) if all_fp64 else None
    if values is None:
        values = np.empty((len(inputs), rows), dtype=np.float64)
        for i, tensor in enumerate(inputs):
            try:
                column_values = np.asarray(tensor.data, dtype=DATATYPES[tensor.datatype])
            except (ValueError, TypeError, OverflowError):
                return None
            if column_values.size != rows:
                return None
            if column_values.dtype.kind == "i" and np.abs(column_values).max() > EXACT_INT:
                return None
            values[i] = column_values.reshape(rows)
    # null (NaN) is valid data, but the native path was only checked on finite rows.
    if not np.isfinite(values).all():
        return None
    matrix = np.empty((rows, signature.width), dtype=np.float64)
    matrix[:, columns] = values.T
    return matrix


def fp64_columns(column_types: Mapping[str, str]) -> frozenset[str]:
    """The signature's columns that take FP64 data unchanged (``fp64_matrix``'s columns)."""
    return frozenset(name for name, kind in column_types.items() if "FP64" in EXACT_DATATYPES.get(kind, ()))


_PANDAS_ONLY = {"content_type": PANDAS}


def fp64_matrix(
    document: Mapping[str, Any], signature: NumericSignature, fp64: frozenset[str]
) -> np.ndarray | None:
    """The commonest request's matrix, read straight from its loaded document.

    Every input FP64 with only a name, datatype, shape and data, one per signature
    column of type double (``fp64``), all of shape [n] or [n, 1], and no request
    parameters but the pandas content type: the same matrix ``decode_matrix`` builds,
    without first making a ``Tensor`` of each input (half a V2 request's decoding time).
    None for anything else, which ``parse_document`` and ``decode_matrix`` then read.
    """
    parameters = document.get("parameters")
    if parameters is not None and parameters != _PANDAS_ONLY:
        return None
    inputs = document["inputs"]
    if len(inputs) != signature.width:
        return None
    position = signature.position
    shape = None
    columns: list[int] = []
    for item in inputs:
        # Four keys, three of them these and "data": nothing else (no parameters) is set.
        if type(item) is not dict or len(item) != 4 or item.get("datatype") != "FP64" or "data" not in item:
            return None
        name = item.get("name")
        if type(name) is not str or name not in fp64:
            return None
        if shape is None:
            shape = item.get("shape")
            if type(shape) is not list or not 1 <= len(shape) <= 2 or (len(shape) == 2 and shape[1] != 1):
                return None
            if type(shape[0]) is not int or shape[0] < 1:
                return None
        elif item.get("shape") != shape:
            return None
        columns.append(position[name])
    if shape is None or len(set(columns)) != signature.width:
        return None
    rows = shape[0]
    values = _fp64_data([item["data"] for item in inputs], len(inputs), rows)
    if values is None or not np.isfinite(values).all():
        return None
    if columns == list(range(signature.width)):
        return np.ascontiguousarray(values.T)  # the inputs in the signature's order: no shuffle
    matrix = np.empty((rows, signature.width), dtype=np.float64)
    matrix[:, columns] = values.T
    return matrix


def _fp64_block(inputs: Sequence[Tensor], rows: int) -> np.ndarray | None:
    """All inputs' data as one (inputs, rows) float64 array, or None (ragged, nested, not numbers)."""
    return _fp64_data([tensor.data for tensor in inputs], len(inputs), rows)


def _fp64_data(data: list[Any], count: int, rows: int) -> np.ndarray | None:
    try:
        block = np.array(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        return None
    if block.size != count * rows:
        return None
    return block.reshape(count, rows)


def decode(request: InferRequest, metadata: ModelMetadata) -> object:
    """What the model's ``predict`` receives, as MLServer's codecs decode it."""
    content_type = request.content_type or metadata.content_type or PANDAS
    if content_type == PANDAS:
        return _frame(request, metadata)
    if content_type == DICT:
        return {t.name: _decode_input(t, metadata) for t in request.inputs}
    if content_type in (NUMPY, STRING):
        if len(request.inputs) != 1:
            raise V2Error(
                f'Content type "{content_type}" takes exactly one input; the request has '
                f'{len(request.inputs)}. Use "pd" (one input per column) or "dict" for several.'
            )
        (tensor,) = request.inputs
        if content_type == STRING:
            return _strings(tensor)
        return _array(tensor)
    raise V2Error(
        f"Unknown request content_type {content_type!r}; use one of {', '.join(REQUEST_CONTENT_TYPES)}."
    )


def _decode_input(tensor: Tensor, metadata: ModelMetadata) -> object:
    content_type = tensor.content_type or metadata.input_content_types.get(tensor.name)
    if content_type == STRING or (content_type is None and tensor.datatype == "BYTES"):
        return _strings(tensor)
    if content_type == "pd_json":
        return _json_values(tensor)
    if content_type not in (None, NUMPY):
        raise V2Error(
            f"Input {tensor.name!r} has content_type {content_type!r}, which mlscale does not decode; "
            f"use one of {', '.join(INPUT_CONTENT_TYPES)}."
        )
    return _array(tensor)


def _array(tensor: Tensor) -> np.ndarray:
    try:
        values = np.asarray(tensor.data, dtype=DATATYPES[tensor.datatype])
    except (ValueError, TypeError, OverflowError) as exc:
        raise V2Error(
            f"Input {tensor.name!r}: its data does not fit datatype {tensor.datatype} ({exc}). "
            "Send numbers of that type, or the datatype the model's metadata gives."
        ) from exc
    try:
        return values.reshape(tensor.shape)
    except ValueError as exc:
        raise V2Error(
            f"Input {tensor.name!r} has shape {list(tensor.shape)} but {values.size} values; "
            "the shape's product must equal the number of values."
        ) from exc


def _strings(tensor: Tensor) -> list[str]:
    data = tensor.data if isinstance(tensor.data, list) else [tensor.data]
    flat = _flatten(data)
    if not all(isinstance(item, str) for item in flat):
        raise V2Error(f"Input {tensor.name!r} is a string input: send its data as a list of strings (BYTES).")
    return flat


def _json_values(tensor: Tensor) -> list[object]:
    data = tensor.data if isinstance(tensor.data, list) else [tensor.data]
    try:
        return [orjson.loads(item) for item in _flatten(data)]
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise V2Error(
            f"Input {tensor.name!r} has content_type pd_json: each item must be a JSON string."
        ) from exc


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    for item in data:
        out.extend(_flatten(item) if isinstance(item, list) else [item])
    return out


def _frame(request: InferRequest, metadata: ModelMetadata) -> pd.DataFrame:
    """MLServer's PandasCodec: one column per input, each of ``shape[0]`` rows."""
    names = [t.name for t in request.inputs]
    if len(set(names)) != len(names):
        raise V2Error(f"Input names must be unique; the request has {names}.")
    missing = [name for name in metadata.required_inputs if name not in set(names)]
    if missing:
        raise V2Error(
            f"The model needs the inputs {missing}, which the request lacks (it has {names}). "
            "Send one input per column; GET /v2/models/<name> lists them."
        )
    columns: dict[str, pd.Series[Any]] = {}
    rows: int | None = None
    for tensor in request.inputs:
        decoded = _decode_input(tensor, metadata)
        if isinstance(decoded, np.ndarray):
            if not tensor.shape or decoded.size != tensor.shape[0]:
                raise V2Error(
                    f'Input {tensor.name!r} has shape {list(tensor.shape)}: with content type "pd" '
                    "each input is one column, of shape [n] or [n, 1]."
                )
            series: pd.Series[Any] = pd.Series(decoded.reshape(tensor.shape[0]))
        else:
            series = pd.Series(decoded)
        if rows is not None and len(series) != rows:
            raise V2Error(
                f"Input {tensor.name!r} has {len(series)} rows, the inputs before it {rows}: "
                "every column must have the same number of rows."
            )
        rows = len(series)
        columns[tensor.name] = series
    return pd.DataFrame(columns)
