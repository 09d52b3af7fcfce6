"""An inference request's structure, read and checked (nothing decoded yet)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from mlscale.protocol.v2.datatypes import DATATYPES
from mlscale.protocol.v2.errors import V2Error

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    pass


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
