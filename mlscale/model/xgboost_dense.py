"""XGBoost prediction on a dense float64 matrix through XGBoost's C API.

``Booster.inplace_predict`` calls ``XGBoosterPredictFromDense``, but first
spends about 200 microseconds in Python (lazy imports, a class built per call,
JSON encoding with the standard library): for one row of the wine model that is
nine tenths of the call. This class makes the same C call with the arguments
prepared once, so the per-call cost is the prediction itself. The result is
checked against pyfunc at load time like any native path, and anything this
class does not cover (GPU, categorical data, classifiers' label decoding) keeps
XGBoost's own method.
"""

from __future__ import annotations

import ctypes
import math
from typing import SupportsInt

import numpy as np
import orjson

# Imported only by mlscale.model.native for a model that XGBoost already loaded.
import xgboost
from xgboost import core
from xgboost._typing import c_bst_ulong  # where xgboost.core takes it from


class DenseXGBoostPredict:
    """``inplace_predict(X, predict_type="value")`` for C-contiguous float64 matrices."""

    def __init__(
        self,
        booster: xgboost.Booster,
        *,
        iteration_range: tuple[SupportsInt, SupportsInt] = (0, 0),
        missing: float = math.nan,
    ) -> None:
        self._booster = booster  # keeps the handle alive
        self._handle = booster.handle
        self._call = core._LIB.XGBoosterPredictFromDense
        self._check = core._check_call
        self._ulong = c_bst_ulong
        # The same arguments inplace_predict sends; "missing" as XGBoost's own JSON does.
        self._args = core.make_jcargs(
            type=0,
            training=False,
            iteration_begin=int(iteration_range[0]),
            iteration_end=int(iteration_range[1]),
            missing=missing,
            strict_shape=False,
            cache_id=0,
        )

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.dtype != np.float64 or not matrix.flags.c_contiguous:
            matrix = np.ascontiguousarray(matrix, dtype=np.float64)
        rows, cols = matrix.shape
        interface = orjson.dumps(
            {
                "data": [matrix.ctypes.data, True],
                "shape": [rows, cols],
                "strides": None,
                "typestr": "<f8",
                "version": 3,
            }
        )
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        predictions = ctypes.POINTER(ctypes.c_float)()
        self._check(
            self._call(
                self._handle,
                interface,
                self._args,
                None,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(predictions),
            )
        )
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        size = math.prod(out_shape)
        # The buffer belongs to the booster and is reused by the next call: copy it.
        flat = np.ctypeslib.as_array(predictions, shape=(size,)).copy() if size else np.empty(0, np.float32)
        return flat.reshape(out_shape)
