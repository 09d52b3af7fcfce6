"""The inference response, as MLServer's codecs write a model's output."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd

from mlscale.protocol.v2.datatypes import DEFAULT_OUTPUT, DICT, NUMPY, PANDAS, STRING, datatype_of
from mlscale.protocol.v2.errors import V2Error

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    pass


def encode_response(
    raw: object,
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: Sequence[str] | None,
) -> bytes:
    """The inference response for a model's output, as MLServer's codecs write it."""
    content_type, tensors = _outputs(raw)
    if outputs is not None:
        by_name = {str(t["name"]): t for t in tensors}
        unknown = [name for name in outputs if name not in by_name]
        if unknown:
            raise V2Error(
                f"The model has no output named {', '.join(map(repr, unknown))}; its outputs are "
                f'{list(by_name)}. Leave out "outputs" to get them all.'
            )
        tensors = [by_name[name] for name in outputs]
    response: dict[str, object] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    response["id"] = request_id if request_id is not None else str(uuid.uuid4())
    response["parameters"] = {"content_type": content_type}
    response["outputs"] = tensors
    return orjson.dumps(response)


def _outputs(raw: object) -> tuple[str, list[dict[str, object]]]:
    if isinstance(raw, np.ndarray):
        return NUMPY, [_array_output(DEFAULT_OUTPUT, raw)]
    if isinstance(raw, pd.DataFrame):
        return PANDAS, [_column_output(raw[column]) for column in raw]
    if isinstance(raw, dict) and all(isinstance(v, np.ndarray) for v in raw.values()):
        return DICT, [_array_output(str(name), value) for name, value in raw.items()]
    if isinstance(raw, list) and raw and all(isinstance(v, str) for v in raw):
        return STRING, [
            {
                "name": DEFAULT_OUTPUT,
                "shape": [len(raw), 1],
                "datatype": "BYTES",
                "parameters": {"content_type": STRING},
                "data": raw,
            }
        ]
    # MLServer has no codec for a Series, a list of numbers or a scalar (it answers 500);
    # mlscale writes them as the array they hold.
    return NUMPY, [_array_output(DEFAULT_OUTPUT, np.asarray(raw))]


def _array_output(name: str, array: np.ndarray) -> dict[str, object]:
    datatype = datatype_of(array.dtype)
    shape = list(array.shape) if array.ndim > 1 else [*array.shape, 1] if array.ndim else [1]
    return {
        "name": name,
        "shape": shape,
        "datatype": datatype,
        "parameters": {"content_type": NUMPY},
        "data": _flat_values(array.reshape(-1)),
    }


def _column_output(series: pd.Series[Any]) -> dict[str, object]:
    datatype = datatype_of(series.dtype)
    output: dict[str, object] = {"name": series.name, "shape": [len(series), 1], "datatype": datatype}
    if datatype == "BYTES":
        data: list[object] = series.tolist()
        if all(isinstance(v, str) for v in data):
            output["parameters"] = {"content_type": STRING}
        else:
            output["parameters"] = {"content_type": "pd_json"}
            data = [orjson.dumps(v).decode() for v in data]
        output["data"] = data
    else:
        output["data"] = _flat_values(series.to_numpy())
    return output


def _flat_values(flat: np.ndarray) -> list[object]:
    """The values as JSON numbers: ``tolist`` widens float32 to float64 (MLflow's digits),
    and orjson writes NaN and infinities as null, as MLServer's encoder does."""
    values: list[object] = flat.tolist()
    return values
