"""The two batch functions: many requests in, one model call, one answer each.

Both encode each request's answer to JSON bytes in the same call, so that the
work leaves the event loop in one piece when the batcher runs it in a thread.
Each request (a ``Job``) brings its own encoder: MLflow's ``{"predictions": ...}``
for ``/invocations``, the Open Inference Protocol's response for V2 infer. So
requests of both protocols share one predict call, and one model output row
gives the same number in either answer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeGuard, TypeVar, cast

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


# A model's output for one request -> that request's response body.
Encoder = Callable[[object], bytes]
MLFLOW: Encoder = encode_predictions
# MLflow's unified LLM format answers without the ``predictions`` wrapper.
MLFLOW_UNWRAPPED: Encoder = partial(encode_predictions, unwrapped=True)

Input = TypeVar("Input")


@dataclass(frozen=True, slots=True)
class Job(Generic[Input]):
    """One request's model input, and how its answer is written."""

    input: Input
    encode: Encoder = MLFLOW


def _encode(job: Job[Input], raw: object) -> bytes:
    try:
        return job.encode(raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise OutputNotSerializable(
            f"The model's output of type {type(raw).__name__} cannot be encoded as JSON: {exc}"
        ) from exc


def native_batch(predict: NativePredict) -> BatchFunction[Job[np.ndarray], bytes]:
    """A batch function over float64 matrices for a native predict function."""

    def guarded(matrix: np.ndarray) -> np.ndarray:
        try:
            return predict(matrix)
        except Exception as exc:  # the model's own failure: MLflow's 400, as on pyfunc
            raise unexpected_model_error() from exc

    def one(job: Job[np.ndarray], raw: np.ndarray | None = None) -> bytes | Exception:
        try:
            return _encode(job, guarded(job.input) if raw is None else raw)
        except Exception as exc:
            return exc

    def run(jobs: Sequence[Job[np.ndarray]]) -> Sequence[bytes | BaseException]:
        if len(jobs) == 1:
            return [_encode(jobs[0], guarded(jobs[0].input))]
        try:
            out = guarded(np.concatenate([job.input for job in jobs]))
        except Exception:
            return [one(job) for job in jobs]  # find out whose request the model refused
        bounds = np.cumsum([len(job.input) for job in jobs])[:-1]
        # One request's encoder may refuse its part (a V2 output it does not have): only it fails.
        return [one(job, part) for job, part in zip(jobs, np.split(out, bounds), strict=True)]

    return run


def pyfunc_batch(predictor: Predictor) -> BatchFunction[Job[ParsedRequest], bytes]:
    """A batch function over parsed requests, through pyfunc's predict.

    Requests are only merged when the batcher's key says they are compatible
    (same columns and dtypes, no params); a merged call whose output does not
    split back into one row per input row, or that fails, is redone request by
    request, so that every request gets the answer, or the error, it would get
    alone.
    """

    def one(job: Job[ParsedRequest]) -> bytes | Exception:
        try:
            return _encode(job, predictor(job.input.data, job.input.params))
        except Exception as exc:
            return exc

    def run(jobs: Sequence[Job[ParsedRequest]]) -> Sequence[bytes | BaseException]:
        if len(jobs) == 1:
            return [one(jobs[0])]
        # batch_key merges DataFrames only.
        frames = cast("list[pd.DataFrame]", [job.input.data for job in jobs])
        sizes = [len(frame) for frame in frames]
        merged = pd.concat(frames, ignore_index=True)
        try:
            raw = predictor(merged, None)
        except Exception:
            return [one(job) for job in jobs]
        parts = split_rows(raw, sizes)
        if parts is None:
            return [one(job) for job in jobs]
        outcomes: list[bytes | BaseException] = []
        for job, part in zip(jobs, parts, strict=True):
            try:
                outcomes.append(_encode(job, part))
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
