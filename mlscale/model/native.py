"""Native fast paths for the common flavors: numpy in, numpy out.

MLflow's pyfunc wrappers for XGBoost, LightGBM and scikit-learn take a pandas
DataFrame, enforce the schema on it, and hand it to the library. For a numeric
signature the library only needs the matrix, so the fast path builds that matrix
once per batch and calls the library directly, skipping the DataFrame.

A native path is only used after it has been shown, at load time, to give
exactly the same predictions as the pyfunc path on sample rows; otherwise the
server says why and uses pyfunc.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:  # mlflow and xgboost are heavy to import; the caller has loaded them already
    import xgboost
    from mlflow.pyfunc import PyFuncModel

NativePredict = Callable[[np.ndarray], np.ndarray]

_FLAVORS = ("mlflow.xgboost", "mlflow.lightgbm", "mlflow.sklearn")


@dataclass(frozen=True)
class NativeChoice:
    """A native predict function, or None with the reason it is not used."""

    predict: NativePredict | None
    reason: str


def native_candidates(pyfunc_model: PyFuncModel) -> list[NativeChoice]:
    """The library's own predict functions behind a pyfunc model, fastest first.

    Each candidate still has to match pyfunc on sample rows before it is used;
    an empty list's single entry says why there is none.
    """
    conf = pyfunc_model.metadata.flavors.get("python_function", {})
    loader = conf.get("loader_module")
    if loader not in _FLAVORS:
        return [NativeChoice(None, f"flavor {loader!r} has no native path")]
    try:
        raw = pyfunc_model.get_raw_model()
    except NotImplementedError:
        return [NativeChoice(None, f"{loader} does not expose its raw model")]

    if loader == "mlflow.xgboost":
        return _xgboost_candidates(raw)

    if loader == "mlflow.sklearn":
        # A model fitted on a DataFrame warns on every call with a bare matrix.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
    method = conf.get("predict_fn", "predict")
    predict = getattr(raw, method, None)
    if predict is None:
        return [NativeChoice(None, f"{type(raw).__name__} has no {method}()")]
    name = f"{loader.split('.')[1]} {type(raw).__name__}.{method}"
    if loader == "mlflow.sklearn":
        # pyfunc hands scikit-learn a DataFrame, which becomes a column-major
        # array; BLAS sums in another order for row-major input, so linear
        # models would differ in the last bit. Column-major input matches.
        return [NativeChoice(_column_major(predict), f"{name}, column-major")]
    return [NativeChoice(predict, name)]


def _column_major(predict: NativePredict) -> NativePredict:
    def run(matrix: np.ndarray) -> np.ndarray:
        return predict(np.asfortranarray(matrix))

    return run


def _xgboost_candidates(raw: object) -> list[NativeChoice]:
    # Only XGBoost models need xgboost (about 0.5 s to import) and the C API path.
    import xgboost

    from mlscale.model.xgboost_dense import DenseXGBoostPredict

    if isinstance(raw, xgboost.Booster):
        return [
            NativeChoice(DenseXGBoostPredict(raw), "xgboost C API, dense"),
            # pyfunc predicts through a DMatrix; inplace_predict skips building one.
            NativeChoice(raw.inplace_predict, "xgboost Booster.inplace_predict"),
        ]
    # Otherwise mlflow.xgboost saved a model of XGBoost's scikit-learn API.
    model = cast("xgboost.XGBModel", raw)
    candidates: list[NativeChoice] = []
    # Regressors (not classifiers, whose predict decodes labels) predict values in place.
    if not isinstance(model, xgboost.XGBClassifier) and model._can_use_inplace_predict():
        dense = DenseXGBoostPredict(
            model.get_booster(),
            iteration_range=model._get_iteration_range(None),
            missing=model.missing,
        )
        candidates.append(NativeChoice(dense, "xgboost C API, dense"))
    predict = model.predict
    if "validate_features" in inspect.signature(predict).parameters:
        # The matrix carries no column names; the fast path has already put
        # the columns in the signature's order, which is the training order.
        predict = functools.partial(predict, validate_features=False)
    candidates.append(NativeChoice(predict, f"xgboost {type(model).__name__}.predict"))
    return candidates


def same_predictions(expected: object, actual: object) -> str | None:
    """None when two prediction outputs are identical, else what differs."""
    if not isinstance(expected, np.ndarray) or not isinstance(actual, np.ndarray):
        return f"pyfunc returns {type(expected).__name__}, native {type(actual).__name__}"
    if expected.dtype != actual.dtype or expected.shape != actual.shape:
        return (
            f"pyfunc returns {expected.dtype}{list(expected.shape)}, "
            f"native {actual.dtype}{list(actual.shape)}"
        )
    equal_nan = expected.dtype.kind in "fc"
    if not np.array_equal(expected, actual, equal_nan=equal_nan):
        return "native predictions differ from pyfunc's on the sample rows"
    return None
