"""Predictions to JSON bytes, as MLflow encodes them.

MLflow writes ``json.dump({"predictions": ...}, cls=NumpyEncoder)``: float32 is
widened to float64 first (so xgboost's 4.9985085 reads 4.998508453369141), and
NaN and infinities are written as the bare tokens ``NaN`` and ``Infinity``. The
common case, a finite numeric array, is encoded by orjson, whose shortest
round-trip float repr is the same number that ``json.dump`` writes; anything
else goes through MLflow's own encoder so that its output is MLflow's.
"""

from __future__ import annotations

from io import StringIO

import numpy as np
import orjson

# Loaded with mlflow.pyfunc by every process that serves (protocol.pyfunc imports it too).
from mlflow.pyfunc import scoring_server

_ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def encode_predictions(raw: object, *, unwrapped: bool = False) -> bytes:
    """The response body for a model's output."""
    if not unwrapped and isinstance(raw, np.ndarray) and raw.ndim and raw.dtype.kind in "fiub":
        array = raw
        if array.dtype.kind == "f":
            if array.dtype != np.float64:
                array = array.astype(np.float64)
            if not np.isfinite(array).all():
                return _mlflow_encode(raw, unwrapped)
        elif array.dtype.kind in "iu" and array.dtype.itemsize > 8:
            return _mlflow_encode(raw, unwrapped)
        if array.flags.c_contiguous:
            return orjson.dumps({"predictions": array}, option=_ORJSON_NUMPY)
    return _mlflow_encode(raw, unwrapped)


def _mlflow_encode(raw: object, unwrapped: bool) -> bytes:
    out = StringIO()
    if unwrapped:
        scoring_server.unwrapped_predictions_to_json(raw, out)
    else:
        scoring_server.predictions_to_json(raw, out)
    return out.getvalue().encode()
