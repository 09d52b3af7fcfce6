"""The Open Inference Protocol ("V2", KServe's and Triton's REST dialect): decode and encode.

Pure functions over bytes, numpy and pandas; the endpoints live in
``mlscale.serving.v2``. Where the protocol leaves a choice open, mlscale does
what Seldon MLServer's MLflow runtime (``mlserver-mlflow`` 1.7) does, so that a
client of one works with the other unchanged:

* a column-based MLflow signature is one input per column, each of shape
  ``[-1, 1]`` in the metadata; a request may send a column as ``[n]`` or
  ``[n, 1]``; the request's default ``content_type`` is ``"pd"`` (one input per
  DataFrame column), and ``"np"``, ``"str"`` and ``"dict"`` hand the model an
  array, a list of strings or a dict of arrays instead;
* string columns travel as ``BYTES`` with ``content_type`` ``"str"``;
* a model's array output is one output named ``"output-1"`` of shape
  ``[n, 1]`` (``[n, ...]`` for wider arrays), a DataFrame output one output per
  column, a dict one per key;
* numbers are decoded with numpy's casts for the declared datatype (``INT64``
  data ``1.5`` is 1, as in MLServer), and written as the model returned them
  (float32 widened to float64, so the digits equal MLflow's ``/invocations``).

Where MLServer answers a client's mistake with a 500 or with FastAPI's 422, mlscale
answers 400 with the protocol's ``{"error": "..."}`` and what to fix.

The hot path is ``decode_matrix``: a request for a numeric signature becomes the
float64 matrix the native path predicts on, with no DataFrame in between.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson
import pandas as pd

from mlscale.model.signature import NumericSignature
from mlscale.protocol.errors import ServingError

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema

# The protocol's datatypes and the numpy dtype each decodes to (MLServer's table).
DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
_DTYPE_NAMES = {
    str(dtype): name for name, dtype in DATATYPES.items() if name != "BYTES"
}  # "float32" -> "FP32"
_DATATYPE_OF = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}

# Request content types (MLServer's request codecs) and input content types (its input codecs).
PANDAS, NUMPY, STRING, DICT = "pd", "np", "str", "dict"
REQUEST_CONTENT_TYPES = (PANDAS, NUMPY, STRING, DICT)
INPUT_CONTENT_TYPES = (NUMPY, STRING, "pd_json")
DEFAULT_OUTPUT = "output-1"

# MLflow column type -> (datatype, content type) in the model metadata, as MLServer says them.
_COLUMN_TYPES = {
    "boolean": ("BOOL", NUMPY),
    "integer": ("INT32", NUMPY),
    "long": ("INT64", NUMPY),
    "float": ("FP32", NUMPY),
    "double": ("FP64", NUMPY),
    "string": ("BYTES", STRING),
    "binary": ("BYTES", "base64"),
    "datetime": ("BYTES", "datetime"),
}
# Datatypes the fast path takes for a signature column of each numeric type: those whose
# values reach the model unchanged whether they go through a DataFrame or not.
_EXACT_DATATYPES = {
    "double": ("FP64", "FP32"),
    "float": ("FP32",),
    "long": ("INT64", "INT32"),
    "integer": ("INT32",),
}
_EXACT_INT = float(2**53)


class V2Error(ServingError):
    """An error answered with the protocol's body, ``{"error": "..."}``."""

    status = 400
    error_code = "BAD_REQUEST"

    @property
    def body(self) -> bytes:
        return error_body(self.message)


class ModelNotFound(V2Error):
    status = 404
    error_code = "NOT_FOUND"


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


# -- requests ------------------------------------------------------------------


class Tensor(NamedTuple):
    """One request input as sent: ``data`` is the JSON value, decoded later.

    A NamedTuple rather than a frozen dataclass: one is made per input of every
    request, and a tuple is made in half the time."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: object
    content_type: str | None


@dataclass(frozen=True, slots=True)
class InferRequest:
    id: str | None
    inputs: tuple[Tensor, ...]
    # Names of the outputs asked for; None: all of them.
    outputs: tuple[str, ...] | None
    content_type: str | None
    # Request parameters other than content_type and headers: MLflow's inference params.
    params: dict[str, Any] | None


_TENSOR_HELP = 'each input is an object with "name", "datatype", "shape" and "data"'


def parse_request(body: bytes) -> InferRequest:
    """The request's structure, checked; raises ``V2Error`` saying what to fix."""
    return parse_document(load_document(body))


def load_document(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with a non-empty list of inputs, or ``V2Error``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise V2Error(f"The body is not valid JSON ({exc}). Send an inference request object.") from exc
    if type(document) is not dict:
        raise V2Error('The body must be a JSON object with "inputs": a list of tensors.')
    inputs = document.get("inputs")
    if type(inputs) is not list or not inputs:
        raise V2Error(f'The request needs "inputs", a non-empty list; {_TENSOR_HELP}.')
    return document


def request_head(document: Mapping[str, Any]) -> tuple[str | None, tuple[str, ...] | None]:
    """The request's ``id`` and the names of the ``outputs`` it asks for, checked."""
    request_id = document.get("id")
    if request_id is not None and type(request_id) is not str:
        raise V2Error('"id" must be a string.')
    return request_id, _requested_outputs(document.get("outputs"))


def parse_document(document: Mapping[str, Any]) -> InferRequest:
    """A loaded document's inputs and parameters, checked."""
    request_id, outputs = request_head(document)
    content_type, params = _parameters(document.get("parameters"), "the request")
    return InferRequest(
        id=request_id,
        inputs=tuple(_tensor(item, i) for i, item in enumerate(document["inputs"])),
        outputs=outputs,
        content_type=content_type,
        params=params,
    )


def _parameters(value: object, where: str) -> tuple[str | None, dict[str, Any] | None]:
    if value is None:
        return None, None
    if type(value) is not dict:
        raise V2Error(f'"parameters" of {where} must be an object.')
    content_type = value.get("content_type")
    if content_type is not None and type(content_type) is not str:
        raise V2Error(f'"content_type" in the parameters of {where} must be a string.')
    extra = {k: v for k, v in value.items() if k not in ("content_type", "headers")}
    return content_type, extra or None


def _tensor(item: object, index: int) -> Tensor:
    if type(item) is not dict:
        raise V2Error(f"Input {index} is not an object: {_TENSOR_HELP}.")
    name = item.get("name")
    if type(name) is not str:
        raise V2Error(f'Input {index} has no "name" (a string): {_TENSOR_HELP}.')
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise V2Error(
            f"Input {name!r} has datatype {datatype!r}; use one of {', '.join(DATATYPES)} "
            "(the model's metadata, GET /v2/models/<name>, says which each input expects)."
        )
    shape = item.get("shape")
    if type(shape) is not list or not _dimensions(shape):
        raise V2Error(
            f'Input {name!r} needs "shape", a list of non-negative integers, such as [n] or [n, 1].'
        )
    if "data" not in item:
        raise V2Error(f'Input {name!r} has no "data".')
    parameters = item.get("parameters")
    content_type = None if parameters is None else _parameters(parameters, f"input {name!r}")[0]
    return Tensor(name, datatype, tuple(shape), item["data"], content_type)


def _dimensions(shape: list[Any]) -> bool:
    # A loop, not all() over a generator: this runs for every input of every request.
    for dimension in shape:
        if type(dimension) is not int or dimension < 0:
            return False
    return bool(shape)


def _requested_outputs(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if type(value) is not list or not all(type(o) is dict and type(o.get("name")) is str for o in value):
        raise V2Error('"outputs" must be a list of objects, each with a "name".')
    return tuple(o["name"] for o in value)


# -- decoding for the model -------------------------------------------------------


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
        if tensor.datatype not in _EXACT_DATATYPES.get(column_types.get(tensor.name, ""), ()):
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
            if column_values.dtype.kind == "i" and np.abs(column_values).max() > _EXACT_INT:
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
    return frozenset(name for name, kind in column_types.items() if "FP64" in _EXACT_DATATYPES.get(kind, ()))


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


# -- responses ----------------------------------------------------------------------


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


def datatype_of(dtype: object) -> str:
    """The protocol's datatype for a numpy (or pandas) dtype; anything else is BYTES."""
    # By the dtype itself first: str() of a numpy dtype runs Python code, on every answer.
    name = _DATATYPE_OF.get(dtype)  # type: ignore[call-overload]
    return name if name is not None else _DTYPE_NAMES.get(str(dtype), "BYTES")


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


# -- metadata ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]
    content_type: str

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
            "parameters": {"content_type": self.content_type},
        }


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    """``GET /v2/models/<name>``: what the model takes and returns, from its MLflow signature."""

    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    # The request content type a request without one gets: "pd" for a column signature.
    content_type: str | None
    # Column inputs that a "pd" request must carry.
    required_inputs: tuple[str, ...] = ()

    @property
    def input_content_types(self) -> dict[str, str]:
        return {t.name: t.content_type for t in self.inputs}

    @classmethod
    def from_signature(
        cls, *, name: str, versions: tuple[str, ...], platform: str, signature: ModelSignature | None
    ) -> ModelMetadata:
        schema = signature.inputs if signature is not None else None
        outputs_schema = signature.outputs if signature is not None else None
        outputs = _metadata_tensors(outputs_schema, "output-") if outputs_schema is not None else ()
        if schema is None:  # no signature, or one without inputs (MLflow allows params alone)
            return cls(
                name=name, versions=versions, platform=platform, inputs=(), outputs=outputs, content_type=None
            )
        inputs = _metadata_tensors(schema, "input-")
        required: tuple[str, ...] = ()
        if schema.is_tensor_spec():
            content_type = DICT if schema.has_input_names() else NUMPY
        else:
            content_type = PANDAS
            required = tuple(
                spec.name
                for spec in schema.inputs
                if spec.name is not None and getattr(spec, "required", True)
            )
        return cls(
            name=name,
            versions=versions,
            platform=platform,
            inputs=inputs,
            outputs=outputs,
            content_type=content_type,
            required_inputs=required,
        )

    def to_json(self) -> bytes:
        document: dict[str, object] = {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "parameters": {} if self.content_type is None else {"content_type": self.content_type},
        }
        return orjson.dumps(document)


def _metadata_tensors(schema: Schema, prefix: str) -> tuple[TensorMetadata, ...]:
    # heavy: mlflow's type module; only reached with a loaded model, where mlflow is imported.
    from mlflow.types.schema import ColSpec, DataType, TensorSpec

    tensors = []
    for index, spec in enumerate(schema.inputs):
        name = spec.name or f"{prefix}{index}"
        if isinstance(spec, TensorSpec):
            tensors.append(TensorMetadata(name, datatype_of(spec.type), tuple(spec.shape), NUMPY))
        elif isinstance(spec, ColSpec) and isinstance(spec.type, DataType):
            datatype, content_type = _COLUMN_TYPES.get(spec.type.name, ("BYTES", "pd_json"))
            tensors.append(TensorMetadata(name, datatype, (-1, 1), content_type))
        else:  # arrays, objects, maps and Any travel as JSON strings
            tensors.append(TensorMetadata(name, "BYTES", (-1, 1), "pd_json"))
    return tuple(tensors)


def column_types(schema: Schema | None) -> dict[str, str]:
    """Column name -> MLflow type name ("double", "long", ...) of a column signature."""
    if schema is None or schema.is_tensor_spec():
        return {}
    return {
        spec.name: getattr(spec.type, "name", "")
        for spec in schema.inputs
        if spec.name is not None and hasattr(spec.type, "name")
    }


def server_metadata(name: str, version: str) -> bytes:
    """``GET /v2``; no protocol extensions are served."""
    return orjson.dumps({"name": name, "version": version, "extensions": []})
