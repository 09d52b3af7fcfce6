"""Request bodies for a load test: rows of a data file, in the scoring protocol's formats.

Bodies are built once, before the test, by the mlscale process (with pandas),
and handed to the Locust processes as text, so a generator only picks one at
random and sends it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np
import pandas as pd

from mlscale.errors import ConfigurationError
from mlscale.examples.wine import data_path
from mlscale.loadtest.records import BodyKindRecord, PoolRecord
from mlscale.loadtest.shapes import colon_pairs
from mlscale.protocol.v2 import datatype_of

FORMATS = {
    "split": "application/json",  # {"dataframe_split": {...}}
    "records": "application/json",  # {"dataframe_records": [...]}
    "csv": "text/csv",
    "legacy-split": "application/json",  # MLflow 1.x bare split, as in the reference
    "v2": "application/json",  # the Open Inference Protocol's infer request
}
# The scoring protocols a load test can speak, and the body format each sends by default.
PROTOCOL_FORMATS = {"mlflow": "split", "v2": "v2"}


@dataclass(frozen=True)
class RequestKind:
    name: str
    rows: int
    weight: float


def parse_mix(spec: str | None, rows_per_request: int = 1) -> list[RequestKind]:
    """``"1:90,100:10"``: 90 % single rows, 10 % batches of 100 rows."""
    if not spec:
        return [RequestKind(_kind_name(rows_per_request), rows_per_request, 1.0)]
    kinds = []

    def explain(part: str) -> str:
        return f"Cannot read {part!r} in --mix: write ROWS:WEIGHT pairs, for example 1:90,100:10."

    for rows, weight, part in colon_pairs(spec, (int, float), explain):
        if rows < 1 or weight <= 0:
            raise ConfigurationError(f"In --mix {part!r}: rows must be >= 1 and weight > 0.")
        kinds.append(RequestKind(_kind_name(rows), rows, weight))
    if len({k.name for k in kinds}) != len(kinds):
        raise ConfigurationError("--mix names the same row count twice.")
    return kinds


def _kind_name(rows: int) -> str:
    return "1 row" if rows == 1 else f"{rows} rows"


def load_frame(path: str | None = None, target: str | None = "quality") -> pd.DataFrame:
    """The request rows: a CSV or parquet file (default: the wine data), target dropped."""
    path = path or data_path()
    try:
        frame = pd.read_parquet(path) if path.endswith((".parquet", ".pq")) else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Cannot read the request data {path}: {exc}") from exc
    if target and target in frame.columns:
        frame = frame.drop(columns=[target])
    if frame.empty:
        raise ConfigurationError(f"The request data {path} has no rows.")
    return frame


def frame_from_signature(model_uri: str, rows: int = 512, seed: int = 0) -> pd.DataFrame:
    """Random rows that fit a model's input signature (numbers, strings, booleans)."""
    # heavy: mlflow takes about 1 s to import; only --from-signature needs it
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        signature = get_model_info(model_uri).signature
    except (MlflowException, OSError) as exc:
        raise ConfigurationError(f"Cannot read the signature of {model_uri!r}: {exc}") from exc
    if signature is None or not signature.inputs.has_input_names():
        raise ConfigurationError(
            f"{model_uri!r} has no signature with named columns to generate requests from; "
            "give --data with rows instead."
        )
    rng = np.random.default_rng(seed)
    columns: dict[str | None, np.ndarray] = {}
    for spec in signature.inputs.inputs:
        type_name = getattr(getattr(spec, "type", None), "name", None)
        if type_name in ("double", "float"):
            columns[spec.name] = rng.normal(0, 1, rows)
        elif type_name in ("long", "integer"):
            columns[spec.name] = rng.integers(0, 10, rows)
        elif type_name == "boolean":
            columns[spec.name] = rng.integers(0, 2, rows).astype(bool)
        elif type_name == "string":
            columns[spec.name] = rng.choice(["a", "b", "c", "d"], rows)
        else:
            raise ConfigurationError(
                f"Column {spec.name!r} of {model_uri!r} has type {spec.type}, which mlscale cannot "
                "generate; give --data with rows instead."
            )
    return pd.DataFrame(columns)


def encode_body(rows: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return rows.to_csv(index=False)
    split = {"columns": [str(c) for c in rows.columns], "data": rows.values.tolist()}
    if fmt == "split":
        return json.dumps({"dataframe_split": split})
    if fmt == "records":
        return json.dumps({"dataframe_records": rows.to_dict(orient="records")})
    if fmt == "legacy-split":
        return json.dumps(split)
    if fmt == "v2":
        return json.dumps(v2_request(rows))
    raise ConfigurationError(f"Unknown body format {fmt!r}; use one of {', '.join(FORMATS)}.")


def v2_request(rows: pd.DataFrame) -> dict[str, object]:
    """An infer request as MLServer's pandas codec writes one: an input per column, named
    for it, of shape [rows], strings as BYTES; ``content_type: pd`` says it is a frame."""
    inputs = [
        {
            "name": str(column),
            "datatype": datatype_of(rows[column].dtype),
            "shape": [len(rows)],
            "data": rows[column].tolist(),
        }
        for column in rows.columns
    ]
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def v2_infer_path(model_name: str) -> str:
    """The infer endpoint of ``model_name`` (quoted: a name may hold any character)."""
    return f"/v2/models/{quote(model_name, safe='')}/infer"


@dataclass(frozen=True)
class BodyPool:
    content_type: str
    kinds: list[BodyKindRecord]

    def to_dict(self) -> PoolRecord:
        # Copies, as dataclasses.asdict made: the caller may change what it gets.
        kinds: list[BodyKindRecord] = [{**kind, "bodies": list(kind["bodies"])} for kind in self.kinds]
        return {"content_type": self.content_type, "kinds": kinds}


def build_pool(
    frame: pd.DataFrame, kinds: list[RequestKind], fmt: str, *, per_kind: int = 64, seed: int = 0
) -> BodyPool:
    """``per_kind`` bodies of random rows for each request kind."""
    if fmt not in FORMATS:
        raise ConfigurationError(f"Unknown body format {fmt!r}; use one of {', '.join(FORMATS)}.")
    rng = np.random.default_rng(seed)
    out: list[BodyKindRecord] = []
    for kind in kinds:
        bodies = []
        for _ in range(per_kind):
            picks = rng.integers(0, len(frame), size=kind.rows)
            bodies.append(encode_body(frame.iloc[picks], fmt))
        out.append({"name": kind.name, "rows": kind.rows, "weight": kind.weight, "bodies": bodies})
    return BodyPool(FORMATS[fmt], out)


def write_pool(pool: BodyPool, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as handle:
        json.dump(pool.to_dict(), handle)
