"""Resolve an MLflow model URI, load it, and choose how to predict with it.

``load_model`` returns a ``LoadedModel``: the pyfunc model (the generic path,
for every flavor), and, when the flavor and signature allow it and a check on
sample rows proves it identical, the library's native predict (the fast path).
Every failure is translated into a ``ModelLoadError`` whose message names the
cause and what to do.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import orjson

from mlscale.errors import ModelLoadError
from mlscale.model.native import NativePredict, native_candidates, same_predictions
from mlscale.model.signature import NumericSignature

logger = logging.getLogger("mlscale.model")

_SAMPLE_ROWS = 8


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    uri: str
    local_path: str
    pyfunc: object
    input_schema: object | None
    signature: NumericSignature | None
    native: NativePredict | None
    # Which path serves the fast case, and why; shown at start-up.
    path_description: str
    load_seconds: float


def download_model(uri: str, dst_path: str | None = None) -> str:
    """A local folder holding the model: the folder itself, or a downloaded copy."""
    if os.path.isdir(uri):
        _check_mlmodel(uri, uri)
        return uri
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst_path)
    except MlflowException as exc:
        raise ModelLoadError(_explain_resolution_error(uri, exc.message)) from exc
    except (OSError, ValueError) as exc:
        raise ModelLoadError(_explain_resolution_error(uri, str(exc))) from exc
    _check_mlmodel(uri, local)
    return local


def _check_mlmodel(uri: str, local: str) -> None:
    if not os.path.isfile(os.path.join(local, "MLmodel")):
        raise ModelLoadError(
            f"{uri!r} is not an MLflow model: there is no MLmodel file in {local}. "
            "Point --model-uri at the folder that holds MLmodel (for example "
            "runs:/<run_id>/model or models:/<name>/<version>)."
        )


def _explain_resolution_error(uri: str, detail: str) -> str:
    import mlflow

    hint = (
        f"Check the name and version or alias; the registry is {mlflow.get_tracking_uri()} "
        "(set --tracking-uri or MLFLOW_TRACKING_URI to use another)."
        if uri.startswith(("models:", "runs:"))
        else "Check that the path or URI exists and is readable."
    )
    detail = detail.strip().splitlines()[0] if detail.strip() else "not found"
    return f"Cannot resolve model {uri!r}: {detail}. {hint}"


def load_model(uri: str, *, native: bool = True) -> LoadedModel:
    """Load ``uri``, pick the fast path, and warm both paths up."""
    started = time.perf_counter()
    local = download_model(uri)
    pyfunc_model = _load_pyfunc(uri, local)
    schema = pyfunc_model.metadata.get_input_schema()
    signature = NumericSignature.from_schema(schema)

    native_predict: NativePredict | None = None
    if not native:
        description = "pyfunc (native path switched off)"
    elif signature is None:
        description = "pyfunc (the signature is not all named numeric columns)"
    else:
        reasons = []
        for choice in native_candidates(pyfunc_model):
            if choice.predict is None:
                reasons.append(choice.reason)
                continue
            mismatch = _verify_native(pyfunc_model, schema, signature, choice.predict, local)
            if mismatch is None:
                native_predict = choice.predict
                break
            reasons.append(f"{choice.reason}: {mismatch}")
        if native_predict is not None:
            description = f"native ({choice.reason}), checked against pyfunc"
        else:
            description = f"pyfunc (no native path: {'; '.join(reasons)})"
    return LoadedModel(
        uri=uri,
        local_path=local,
        pyfunc=pyfunc_model,
        input_schema=schema,
        signature=signature,
        native=native_predict,
        path_description=description,
        load_seconds=time.perf_counter() - started,
    )


def _load_pyfunc(uri: str, local: str) -> object:
    import mlflow.pyfunc

    try:
        return mlflow.pyfunc.load_model(local)
    except ModuleNotFoundError as exc:
        raise ModelLoadError(
            f"Model {uri!r} needs the Python package {exc.name!r}, which is not installed "
            f"here. Install it (pip install {exc.name}) and start the server again."
        ) from exc
    except Exception as exc:  # any flavor can fail in its own way
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ModelLoadError(
            f"Cannot load model {uri!r} from {local}: {type(exc).__name__}: {first_line}. "
            "The artifact may be corrupt or saved by an incompatible library version."
        ) from exc


def sample_document(
    signature: NumericSignature, local_path: str | None = None, rows: int = _SAMPLE_ROWS
) -> dict:
    """A ``dataframe_split`` request body of sample rows for the signature.

    The model's own input example comes first when it has one; seeded random
    rows, integers in integer columns, follow.
    """
    data: list[list[float]] = []
    example = _input_example_rows(signature, local_path) if local_path else []
    data.extend(example)
    rng = np.random.default_rng(0)
    for _ in range(rows):
        row = rng.uniform(-10, 10, signature.width).round(3)
        row[list(signature.integer_columns)] = np.round(row[list(signature.integer_columns)])
        data.append(row.tolist())
    return {"dataframe_split": {"columns": list(signature.names), "data": data}}


def _input_example_rows(signature: NumericSignature, local_path: str) -> list[list[float]]:
    try:
        from mlflow.models import Model

        example = Model.load(local_path).load_input_example(local_path)
        frame = example if hasattr(example, "columns") else None
        if frame is None:
            return []
        return frame[list(signature.names)].astype(float).values.tolist()
    except Exception:  # an example is a bonus; its absence or oddity is not an error
        return []


def _verify_native(
    pyfunc_model: object,
    schema: object,
    signature: NumericSignature,
    native_predict: NativePredict,
    local_path: str,
) -> str | None:
    """Run sample rows through both full paths; None when the answers are identical."""
    from mlflow.exceptions import MlflowException

    from mlscale.protocol.fast import decode_matrix
    from mlscale.protocol.pyfunc import JSON, Predictor, parse

    body = orjson.dumps(sample_document(signature, local_path))
    try:
        parsed = parse(body, JSON, pyfunc_model, schema, accept_legacy_split=False)
        expected = Predictor(pyfunc_model)(parsed.data, parsed.params)
    except MlflowException as exc:
        return f"pyfunc rejects the sample rows: {exc.message.splitlines()[0]}"
    matrix = decode_matrix(orjson.loads(body), signature)
    if matrix is None:
        return "the sample rows do not decode on the fast path"
    try:
        actual = native_predict(matrix)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    mismatch = same_predictions(expected, actual)
    if mismatch is None:
        # A batch of many rows must also answer row by row, or batching would change results.
        single = native_predict(matrix[:1])
        if not np.array_equal(single, actual[:1], equal_nan=actual.dtype.kind == "f"):
            return "a single row predicts differently alone than in a batch"
    return mismatch
