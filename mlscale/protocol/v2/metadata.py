"""The model and server metadata, from the MLflow signature as MLServer says it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from mlscale.protocol.v2.datatypes import COLUMN_TYPES, DICT, NUMPY, PANDAS, datatype_of

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    from mlflow.models.signature import ModelSignature
    from mlflow.types import Schema


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
            datatype, content_type = COLUMN_TYPES.get(spec.type.name, ("BYTES", "pd_json"))
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
