"""The protocol's datatypes and content types, and how MLflow's column types map to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    pass


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
COLUMN_TYPES = {
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
EXACT_DATATYPES = {
    "double": ("FP64", "FP32"),
    "float": ("FP32",),
    "long": ("INT64", "INT32"),
    "integer": ("INT32",),
}
EXACT_INT = float(2**53)


def datatype_of(dtype: object) -> str:
    """The protocol's datatype for a numpy (or pandas) dtype; anything else is BYTES."""
    # By the dtype itself first: str() of a numpy dtype runs Python code, on every answer.
    name = _DATATYPE_OF.get(dtype)  # type: ignore[call-overload]
    return name if name is not None else _DTYPE_NAMES.get(str(dtype), "BYTES")
