"""The two batch functions: many requests in, one model call, one answer each.

Both encode each request's answer to JSON bytes in the same call, so that the
work leaves the event loop in one piece when the batcher runs it in a thread.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeGuard, cast

import numpy as np
import pandas as pd

from mlscale.model.checks import split_rows
from mlscale.model.native import NativePredict
from mlscale.protocol.encode import encode_predictions
from mlscale.protocol.errors import ServingError
from mlscale.protocol.pyfunc import ParsedRequest, Predictor, unexpected_model_error
from mlscale.serving.batcher import BatchFunction


class OutputNotSerializable(ServingError):
    """The model returned something JSON cannot hold; MLflow answers 500 too."""

    status = 500
    error_code = "INTERNAL_ERROR"


def _encode(raw: object, *, unwrapped: bool = False) -> bytes:
    try:
        return encode_predictions(raw, unwrapped=unwrapped)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OutputNotSerializable(
            f"The model's output of type {type(raw).__name__} cannot be encoded as JSON: {exc}"
        ) from exc


def native_batch(predict: NativePredict) -> BatchFunction[np.ndarray, bytes]:
    """A batch function over float64 matrices for a native predict function."""

    def guarded(matrix: np.ndarray) -> np.ndarray:
        try:
            return predict(matrix)
        except Exception as exc:  # the model's own failure: MLflow's 400, as on pyfunc
            raise unexpected_model_error() from exc

    def one(matrix: np.ndarray) -> bytes | Exception:
        try:
            return _encode(guarded(matrix))
        except Exception as exc:
            return exc

    def run(matrices: Sequence[np.ndarray]) -> Sequence[bytes | BaseException]:
        if len(matrices) == 1:
            return [_encode(guarded(matrices[0]))]
        try:
            out = guarded(np.concatenate(matrices))
        except Exception:
            return [one(m) for m in matrices]  # find out whose request the model refused
        bounds = np.cumsum([len(m) for m in matrices])[:-1]
        return [_encode(part) for part in np.split(out, bounds)]

    return run


def pyfunc_batch(predictor: Predictor) -> BatchFunction[ParsedRequest, bytes]:
    """A batch function over parsed requests, through pyfunc's predict.

    Requests are only merged when the batcher's key says they are compatible
    (same columns and dtypes, no params); a merged call whose output does not
    split back into one row per input row, or that fails, is redone request by
    request, so that every request gets the answer, or the error, it would get
    alone.
    """

    def one(request: ParsedRequest) -> bytes | Exception:
        try:
            return _encode(predictor(request.data, request.params), unwrapped=request.unwrapped)
        except Exception as exc:
            return exc

    def run(requests: Sequence[ParsedRequest]) -> Sequence[bytes | BaseException]:
        if len(requests) == 1:
            return [one(requests[0])]
        # batch_key merges DataFrames only.
        frames = cast("list[pd.DataFrame]", [r.data for r in requests])
        sizes = [len(frame) for frame in frames]
        merged = pd.concat(frames, ignore_index=True)
        try:
            raw = predictor(merged, None)
        except Exception:
            return [one(r) for r in requests]
        parts = split_rows(raw, sizes)
        if parts is None:
            return [one(r) for r in requests]
        outcomes: list[bytes | BaseException] = []
        for part in parts:
            try:
                outcomes.append(_encode(part))
            except ServingError as exc:
                outcomes.append(exc)
        return outcomes

    return run


def batch_key(request: ParsedRequest) -> Hashable:
    """Requests with equal keys may share one predict call; None-like keys never match."""
    data = request.data
    if request.params or request.unwrapped or not _is_frame(data) or not len(data):
        return object()  # unique: never merged
    index = data.index
    # A request with its own index may have a model that reads it; keep it alone.
    if type(index) is not pd.RangeIndex or index.start != 0 or index.step != 1:
        return object()
    try:
        return (tuple(data.columns), tuple(str(t) for t in data.dtypes))
    except TypeError:
        return object()


def _is_frame(data: object) -> TypeGuard[pd.DataFrame]:
    return hasattr(data, "dtypes")  # what MLflow's parser makes of a DataFrame body
