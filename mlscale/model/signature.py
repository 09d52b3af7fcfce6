"""What the fast path needs to know of a model's input signature, resolved once.

The fast path turns a JSON body straight into one float64 matrix in the
signature's column order. It only exists for signatures where that matrix holds
exactly what MLflow's own parsing would give the model: named, required, scalar
numeric columns. Everything else (strings, booleans, optional columns, tensor
specs, no signature) goes through MLflow's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    from mlflow.types import Schema

# MLflow data type name -> the numpy dtype MLflow's parser casts the column to.
_NUMERIC_TYPES: dict[str, np.dtype[np.number]] = {
    "double": np.dtype(np.float64),
    "float": np.dtype(np.float32),
    "long": np.dtype(np.int64),
    "integer": np.dtype(np.int32),
}


@dataclass(frozen=True, kw_only=True)
class NumericSignature:
    """Column names in model order and the columns that need MLflow's casts."""

    names: tuple[str, ...]
    # Position of each column name in the signature, for reordering requests.
    position: dict[str, int]
    # Columns that MLflow casts to an integer type (truncating, and rejecting NaN).
    integer_columns: tuple[int, ...]
    # Columns that MLflow casts to float32 (the model sees the rounded value).
    float32_columns: tuple[int, ...]
    # Columns cast to int32 must also fit in it, or MLflow's cast fails.
    int32_columns: tuple[int, ...]

    @property
    def width(self) -> int:
        return len(self.names)

    @classmethod
    def from_schema(cls, schema: Schema | None) -> NumericSignature | None:
        """Build from an ``mlflow.types.Schema``; None when the fast path cannot apply."""
        if schema is None or getattr(schema, "is_tensor_spec", lambda: True)():
            return None
        if not schema.has_input_names():
            return None
        names: list[str] = []
        integer: list[int] = []
        float32: list[int] = []
        int32: list[int] = []
        for position, spec in enumerate(schema.inputs):
            type_name = getattr(getattr(spec, "type", None), "name", None)
            if type_name not in _NUMERIC_TYPES or not getattr(spec, "required", True):
                return None
            if spec.name is None:
                return None  # MLflow names every column or none; has_input_names saw the first
            names.append(spec.name)
            dtype = _NUMERIC_TYPES[type_name]
            if dtype.kind == "i":
                integer.append(position)
            if dtype == np.float32:
                float32.append(position)
            if dtype == np.int32:
                int32.append(position)
        if len(set(names)) != len(names):
            return None
        return cls(
            names=tuple(names),
            position={name: i for i, name in enumerate(names)},
            integer_columns=tuple(integer),
            float32_columns=tuple(float32),
            int32_columns=tuple(int32),
        )
