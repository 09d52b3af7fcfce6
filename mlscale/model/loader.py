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

import orjson

from mlscale.errors import ModelLoadError
from mlscale.model import checks
from mlscale.model.native import NativePredict, native_candidates
from mlscale.model.signature import NumericSignature

logger = logging.getLogger("mlscale.model")


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    uri: str
    local_path: str
    pyfunc: object
    input_schema: object | None
    signature: NumericSignature | None
    native: NativePredict | None
    # Whether merging requests into one call answers each exactly as alone.
    native_batchable: bool = False
    pyfunc_batchable: bool = False
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
    """Load ``uri``, pick the fast path, check batching, and warm both paths up."""
    from mlscale.protocol.pyfunc import Predictor

    started = time.perf_counter()
    local = download_model(uri)
    pyfunc_model = _load_pyfunc(uri, local)
    schema = pyfunc_model.metadata.get_input_schema()
    signature = NumericSignature.from_schema(schema)
    predictor = Predictor(pyfunc_model)
    sample = _Sample.build(pyfunc_model, schema, signature, local, predictor)

    native_predict, native_batchable = None, False
    if not native:
        description = "pyfunc (native path switched off)"
    elif signature is None:
        description = "pyfunc (the signature is not all named numeric columns)"
    elif sample is None or sample.matrix is None:
        description = "pyfunc (no sample rows to check a native path against)"
    else:
        reasons = []
        for choice in native_candidates(pyfunc_model):
            if choice.predict is None:
                reasons.append(choice.reason)
                continue
            mismatch, batchable = checks.check_native(choice.predict, sample.matrix, sample.expected)
            if mismatch is None:
                native_predict, native_batchable = choice.predict, batchable
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
        native_batchable=native_batchable,
        pyfunc_batchable=sample is not None and checks.pyfunc_merges_exactly(predictor, sample.frame),
        path_description=description,
        load_seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class _Sample:
    """Sample rows as pyfunc sees them (``frame``), as the fast path decodes them
    (``matrix``, numeric signatures only), and pyfunc's predictions for them."""

    frame: object
    matrix: object | None
    expected: object

    @classmethod
    def build(cls, pyfunc_model, schema, signature, local, predictor) -> _Sample | None:
        """The model's input example, plus random rows for numeric signatures; None
        when there is nothing to sample or pyfunc refuses the sample."""
        from mlflow.exceptions import MlflowException

        from mlscale.protocol.fast import decode_matrix
        from mlscale.protocol.pyfunc import JSON, parse

        example = checks.input_example(local)
        if signature is not None:
            rows = []
            try:
                if example is not None:
                    rows = example[list(signature.names)].astype(float).values.tolist()
            except (KeyError, TypeError, ValueError):
                rows = []  # an example that does not fit the signature is left out
            body = orjson.dumps(checks.sample_document(signature, rows))
        elif example is not None:
            body = checks.sample_frame_body(example)
        else:
            return None
        try:
            parsed = parse(body, JSON, pyfunc_model, schema, accept_legacy_split=False)
            expected = predictor(parsed.data, parsed.params)  # also warms pyfunc up
        except MlflowException as exc:
            logger.warning("The sample rows fail through pyfunc: %s", exc.message.splitlines()[0])
            return None
        matrix = decode_matrix(orjson.loads(body), signature) if signature is not None else None
        return cls(parsed.data, matrix, expected)


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
