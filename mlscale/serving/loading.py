"""Load a model for serving: which path serves it, checked on sample rows first.

``load_model`` returns a ``LoadedModel``: the pyfunc model (the generic path,
for every flavor), and, when the flavor and signature allow it and a check on
sample rows proves it identical, the library's native predict (the fast path).
The checks send the sample through the scoring protocol exactly as a request
would go, which is why they sit here, above ``mlscale.model`` and
``mlscale.protocol``, and not in the model layer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import cast

import numpy as np
import orjson
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel
from mlflow.types import Schema

from mlscale.model import checks
from mlscale.model.loader import LoadedModel, download_model, load_pyfunc
from mlscale.model.native import native_candidates
from mlscale.model.signature import NumericSignature
from mlscale.protocol.encode import encode_predictions
from mlscale.protocol.fast import decode_matrix
from mlscale.protocol.pyfunc import JSON, Predictor, parse

logger = logging.getLogger("mlscale.model")


def load_model(uri: str, *, native: bool = True) -> LoadedModel:
    """Load ``uri``, pick the fast path, check batching, and warm both paths up."""
    started = time.perf_counter()
    local = download_model(uri)
    pyfunc_model = load_pyfunc(uri, local)
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
        pyfunc_batchable=sample is not None and pyfunc_merges_exactly(predictor, sample.frame),
        path_description=description,
        load_seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class _Sample:
    """Sample rows as pyfunc sees them (``frame``), as the fast path decodes them
    (``matrix``, numeric signatures only), and pyfunc's predictions for them."""

    frame: pd.DataFrame
    matrix: np.ndarray | None
    expected: object

    @classmethod
    def build(
        cls,
        pyfunc_model: PyFuncModel,
        schema: Schema | None,
        signature: NumericSignature | None,
        local: str,
        predictor: Predictor,
    ) -> _Sample | None:
        """The model's input example, plus random rows for numeric signatures; None
        when there is nothing to sample or pyfunc refuses the sample."""
        example = checks.input_example(local)
        if signature is not None:
            rows: list[list[float]] = []
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
        # A ``dataframe_split`` body: MLflow's parser hands pyfunc a DataFrame.
        return cls(cast("pd.DataFrame", parsed.data), matrix, expected)


def pyfunc_merges_exactly(predictor: Predictor, frame: pd.DataFrame, rows: int = 4) -> bool:
    """Whether pyfunc answers a merged call exactly as row-by-row calls (encoded).

    A few rows suffice to see a size-dependent summation, and a slow model is
    called ``rows + 1`` times at start-up, so the check stays short.
    """
    frame = frame.iloc[:rows].reset_index(drop=True)
    if len(frame) < 2:
        return False
    try:
        merged = checks.split_rows(predictor(frame, None), [1] * len(frame))
        if merged is None:
            return False
        for i, part in enumerate(merged):
            alone = predictor(frame.iloc[i : i + 1].reset_index(drop=True), None)
            if encode_predictions(alone) != encode_predictions(part):
                return False
    except Exception:
        return False
    return True
