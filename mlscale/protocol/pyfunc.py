"""The generic path: MLflow's own parsing, prediction and error rules, for any model.

Every request the fast path declines comes here, and MLflow's scoring-server
functions do the work, so that unusual inputs and every rejection behave as in
``mlflow models serve``: same status, same ``error_code``, same message. The
prediction is split out of MLflow's ``invocations`` so that it can be batched.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass
from io import BytesIO, StringIO
from typing import TYPE_CHECKING, Any

import orjson
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import BAD_REQUEST
from mlflow.pyfunc import scoring_server as mlflow_scoring
from mlflow.utils.proto_json_utils import MlflowInvalidInputException

from mlscale.protocol.errors import UnsupportedMediaType
from mlscale.protocol.fast import FORMAT_KEYS, LLM_KEYS

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types import Schema

# Inference parameters as MLflow passes them to ``predict``: a JSON object's members.
Params = dict[str, Any]

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
CONTENT_TYPES = [CSV, JSON, PARQUET]


def media_type(content_type: str | None) -> str:
    """The request's media type, or a 415 exactly where MLflow answers one."""
    if content_type is None:
        raise UnsupportedMediaType(
            "The request has no Content-Type header. Send the body with one of: "
            f"{', '.join(CONTENT_TYPES)} (for example -H 'Content-Type: application/json')."
        )
    parts = [part.strip() for part in content_type.split(";")]
    parameters = {key: value for key, _, value in (p.partition("=") for p in parts[1:])}
    if parameters.get("charset", "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType("The scoring server only supports UTF-8")
    if unexpected := set(parameters).difference({"charset"}):
        raise UnsupportedMediaType(
            f"Unrecognized content type parameters: {', '.join(unexpected)}. "
            f"{mlflow_scoring.SCORING_PROTOCOL_CHANGE_INFO}"
        )
    if parts[0] not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            "This predictor only supports the following content types:"
            f" Types: {CONTENT_TYPES}. Got '{content_type}'."
        )
    return parts[0]


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request body after MLflow's parsing: what ``model.predict`` receives."""

    data: object
    params: Params | None
    # MLflow's unified LLM format answers without the ``predictions`` wrapper.
    unwrapped: bool


def parse(
    body: bytes, mime: str, model: PyFuncModel, schema: Schema | None, *, accept_legacy_split: bool
) -> ParsedRequest:
    """Parse a body as MLflow does; raises ``MlflowException`` for bad input."""
    if mime == JSON:
        payload: object = body
        if accept_legacy_split:
            payload = _wrap_legacy_split(body)
        parsed = mlflow_scoring._parse_json_data(payload, model.metadata, schema)
        return ParsedRequest(parsed.data, parsed.params, parsed.is_unified_llm_input)
    if mime == CSV:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MlflowInvalidInputException(
                f"Ensure that input is a valid UTF-8 encoded string. Error: '{exc!r}'"
            ) from exc
        # MLflow's annotation says Schema, but None (its own default) is what it is given without one.
        frame = mlflow_scoring.parse_csv_input(StringIO(text), schema)  # type: ignore[arg-type]
        return ParsedRequest(frame, None, False)
    return ParsedRequest(mlflow_scoring.parse_parquet_input(BytesIO(body)), None, False)


def _wrap_legacy_split(body: bytes) -> object:
    """An MLflow 1.x bare ``{"columns", "data"}`` body, wrapped as ``dataframe_split``."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body  # MLflow's parser reports the error
    if not isinstance(document, dict):
        return body  # MLflow's parser words the rejection
    if "data" in document and not document.keys() & (FORMAT_KEYS | LLM_KEYS):
        return {"dataframe_split": document}
    return document


class Predictor:
    """``model.predict`` with MLflow's error rules around it."""

    def __init__(self, model: PyFuncModel) -> None:
        self.model = model
        self._takes_params = "params" in inspect.signature(model.predict).parameters

    def __call__(self, data: object, params: Params | None) -> object:
        try:
            if self._takes_params:
                return self.model.predict(data, params=params)
            return self.model.predict(data)
        except MlflowException as exc:
            exc.message = f"Failed to predict data '{data}'. \nError: {exc.message}"
            raise
        except Exception as exc:
            raise unexpected_model_error() from exc


def unexpected_model_error() -> MlflowException:
    """MLflow's answer to a model that raised an ordinary exception (call in ``except``)."""
    return MlflowException(
        message=(
            "Encountered an unexpected error while evaluating the model. Verify"
            " that the serialized input Dataframe is compatible with the model for"
            " inference."
        ),
        error_code=BAD_REQUEST,
        stack_trace=traceback.format_exc(),
    )
