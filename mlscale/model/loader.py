"""Resolve an MLflow model URI and load it; what a loaded model is made of.

``LoadedModel`` holds the pyfunc model (the generic path, for every flavor)
and, when the flavor and signature allow it and a check on sample rows proves
it identical, the library's native predict (the fast path). Those checks run
requests through the scoring protocol, so they live above both, in
``mlscale.serving.loading``. Every failure is translated into a
``ModelLoadError`` whose message names the cause and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mlscale.errors import ModelLoadError
from mlscale.model.native import NativePredict
from mlscale.model.signature import NumericSignature

if TYPE_CHECKING:  # mlflow takes about 1 s to import: importing mlscale.model must not load it
    from mlflow.pyfunc import PyFuncModel
    from mlflow.types import Schema


@dataclass(frozen=True, kw_only=True)
class LoadedModel:
    uri: str
    local_path: str
    pyfunc: PyFuncModel
    input_schema: Schema | None
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
    # heavy: mlflow's artifact resolution loads its store and registry clients (about 1 s)
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
    import mlflow  # heavy (about 1 s), and only on the way to an error message

    hint = (
        f"Check the name and version or alias; the registry is {mlflow.get_tracking_uri()} "
        "(set --tracking-uri or MLFLOW_TRACKING_URI to use another)."
        if uri.startswith(("models:", "runs:"))
        else "Check that the path or URI exists and is readable."
    )
    detail = detail.strip().splitlines()[0] if detail.strip() else "not found"
    return f"Cannot resolve model {uri!r}: {detail}. {hint}"


def load_pyfunc(uri: str, local: str) -> PyFuncModel:
    """MLflow's pyfunc model from the local folder ``local`` (resolved from ``uri``)."""
    import mlflow.pyfunc  # heavy (about 1 s): only model loading needs it, not the CLI

    try:
        model: PyFuncModel = mlflow.pyfunc.load_model(local)
        return model
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
