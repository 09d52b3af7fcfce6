"""Protocol conformance: mlscale answers every request as ``mlflow models serve`` does.

Each test sends the SAME request to two in-process apps, mlscale's and MLflow's own
scoring app (``mlflow.pyfunc.scoring_server.init``), and compares the answers:

* a success (2xx): same status, same content type, same JSON once parsed (floats
  compared as float64, so xgboost's float32 outputs must be widened exactly as
  MLflow widens them; NaN equals NaN);
* a rejection: same status and, for JSON error bodies, the same ``error_code``,
  ``error_class`` and ``sqlstate`` and the same message (or both matching a
  regex where MLflow's message embeds a set whose order varies); for MLflow's
  ``text/plain`` answers, the same text.

The rows follow ``/work/shared/reference/mlflow-scoring-protocol.md``; where a
row names the expected status, the test also checks that MLflow itself still
answers it, so a drift in MLflow shows up as such. The cases where mlscale is
better on purpose (missing Content-Type, body limit, timeout, overload, the
opt-in MLflow 1.x body) assert mlscale's own behaviour.

Models: the numeric ones (xgboost, lightgbm, sklearn_numeric) take mlscale's
native fast path; the others (sklearn_pipeline, no_signature, custom_dataframe)
only the generic pyfunc path. Two extra custom models are built here: one that
behaves as its input says (raises, returns odd types, waits on a gate), and one
with a params schema (params and the LLM input mode).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import mlflow_client, mlscale_client
from tests.support.models import color_frame, small_frame

NUMERIC = ["xgboost", "lightgbm", "sklearn_numeric"]
PYFUNC_ONLY = ["sklearn_pipeline", "no_signature", "custom_dataframe"]
ALL_MODELS = NUMERIC + PYFUNC_ONLY
# Models whose signature is f0: double, f1: double, f2: long (fast path and pyfunc path).
F_SIGNED = [*NUMERIC, "custom_dataframe"]
# Models with an input signature of named columns.
SIGNED = [*F_SIGNED, "sklearn_pipeline"]

JSON_CT = "application/json"
CSV_CT = "text/csv"
PARQUET_CT = "application/vnd.apache.parquet"

# MLflow's message for a body without exactly one format key; the set's order varies.
_FORMAT_SET = r"\{('(dataframe_split|dataframe_records|instances|inputs)'(, )?){4}\}"
_PROTOCOL_CHANGED = r" IMPORTANT: The MLflow Model scoring protocol has changed in MLflow version 2\.0\..*"


def exactly_one_key_message(received: list[str]) -> str:
    return (
        r"The input must be a JSON dictionary with exactly one of the input fields "
        + _FORMAT_SET
        + r"\. Received dictionary with input fields: "
        + re.escape(repr(received))
        + r"\."
        + _PROTOCOL_CHANGED
    )


# ---------------------------------------------------------------------------
# Frames and bodies
# ---------------------------------------------------------------------------


def frame_for(name: str, rows: int = 3, seed: int = 11) -> pd.DataFrame:
    """A few valid rows for the model ``name``."""
    if name == "sklearn_pipeline":
        return color_frame(rows, seed)
    return small_frame(rows, seed)


def split_of(frame: pd.DataFrame, **extra) -> dict:
    """The ``dataframe_split`` payload, with plain Python values (ints stay ints)."""
    payload = frame.to_dict(orient="split", index=False)
    return {"columns": payload["columns"], "data": payload["data"], **extra}


def records_of(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


def encode(document: object) -> bytes:
    """A JSON body; the stdlib writes NaN and Infinity tokens as MLflow accepts them."""
    if isinstance(document, bytes):
        return document
    return json.dumps(document).encode()


# ---------------------------------------------------------------------------
# The cases file: table-like cases as data (tests/serving/conformance_cases.yaml)
# ---------------------------------------------------------------------------

CASES_FILE = Path(__file__).with_name("conformance_cases.yaml")

# The parts of a body that the cases file names by a tag, built from a model's rows.
_PARTS = {
    "split": split_of,
    "records": records_of,
    "data": lambda frame: split_of(frame)["data"],
    "columns": lambda frame: list(frame.columns),
    "lists": lambda frame: frame.to_dict(orient="list"),
    "first_row": lambda frame: split_of(frame)["data"][0],
    "data_without_last_column": lambda frame: [row[:-1] for row in split_of(frame)["data"]],
}


@dataclass(frozen=True)
class FromRows:
    """A tagged part of a body (``!split {index: [1]}``), built from the model's valid rows."""

    part: str
    extra: dict

    def build(self, frame: pd.DataFrame) -> object:
        if self.part == "split":
            return split_of(frame, **self.extra)
        assert not self.extra, f"!{self.part} takes no keys"
        return _PARTS[self.part](frame)


class _CaseLoader(yaml.SafeLoader):
    """YAML with the cases file's tags."""


def _from_rows_constructor(part: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> FromRows:
        return FromRows(part, loader.construct_mapping(node, deep=True))

    return construct


for _part in _PARTS:
    _CaseLoader.add_constructor(f"!{_part}", _from_rows_constructor(_part))
_CaseLoader.add_constructor(
    "!exactly_one_key_of",
    lambda loader, node: exactly_one_key_message(loader.construct_sequence(node)),
)


def _built(node: object, frame: pd.DataFrame | None) -> object:
    if isinstance(node, FromRows):
        assert frame is not None, "a tagged part needs a model's rows"
        return node.build(frame)
    if isinstance(node, dict):
        return {key: _built(value, frame) for key, value in node.items()}
    if isinstance(node, list):
        return [_built(value, frame) for value in node]
    return node


def body_of(case: dict, frame: pd.DataFrame | None = None) -> bytes:
    """A case's body: ``raw`` as written (one character a byte), else ``body`` as JSON."""
    if "raw" in case:
        raw = case["raw"]
        if frame is not None:
            raw = raw.replace("$first_column", str(frame.columns[0]))
        return raw.encode("latin-1")
    return json.dumps(_built(case["body"], frame)).encode(case.get("encoding", "utf-8"))


CASES: dict[str, list] = yaml.load(CASES_FILE.read_text(), _CaseLoader)  # a SafeLoader with the file's tags


def cases(section: str) -> list:
    """A section's cases as parameters named by their ``id``."""
    return [pytest.param(case, id=case["id"]) for case in CASES[section]]


# ---------------------------------------------------------------------------
# Comparing answers
# ---------------------------------------------------------------------------


def _media(response) -> str:
    return response.headers.get("content-type", "").split(";")[0].strip()


def _canon(value: object) -> object:
    """Parsed JSON with NaN made comparable (NaN != NaN otherwise)."""
    if isinstance(value, float) and value != value:
        return "<NaN>"
    if isinstance(value, list):
        return [_canon(v) for v in value]
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    return value


def _show(response) -> str:
    text = response.text
    return f"{response.status_code} {response.headers.get('content-type')} {text[:700]!r}"


def assert_same_answer(ours, theirs, *, message: str | None = None, status: int | None = None):
    """mlscale's answer (``ours``) is MLflow's (``theirs``), as the protocol requires.

    ``message``: a regex both error messages must match in full, instead of being
    equal (for MLflow messages that embed a set). ``status``: what the checklist
    says MLflow answers; checked on MLflow's side so the expectation stays true.
    """
    context = f"\n  mlscale: {_show(ours)}\n  mlflow:  {_show(theirs)}"
    if status is not None:
        assert theirs.status_code == status, f"MLflow no longer answers {status}:{context}"
    assert ours.status_code == theirs.status_code, f"status differs:{context}"
    if 200 <= theirs.status_code < 300:
        assert _media(ours) == _media(theirs), f"content type differs:{context}"
        assert _canon(json.loads(ours.text)) == _canon(json.loads(theirs.text)), f"answers differ:{context}"
        return
    if _media(theirs) != "application/json":
        assert _media(ours) == _media(theirs), f"content type differs:{context}"
        assert ours.text == theirs.text, f"text differs:{context}"
        return
    assert _media(ours) == "application/json", f"content type differs:{context}"
    mine, reference = json.loads(ours.text), json.loads(theirs.text)
    if "error_code" not in reference:  # FastAPI's {"detail": ...} bodies
        assert mine == reference, f"bodies differ:{context}"
        return
    for key in ("error_code", "error_class", "sqlstate"):
        assert mine.get(key) == reference.get(key), f"{key} differs:{context}"
    assert ("stack_trace" in mine) == ("stack_trace" in reference), f"stack_trace differs:{context}"
    if message is None:
        assert mine["message"] == reference["message"], f"messages differ:{context}"
    else:
        assert re.fullmatch(message, reference["message"], re.S), (
            f"MLflow's message no longer matches {message!r}:{context}"
        )
        assert re.fullmatch(message, mine["message"], re.S), f"message differs:{context}"


# ---------------------------------------------------------------------------
# Extra models, built here
# ---------------------------------------------------------------------------

# The gated model waits on these (looked up by module name at predict time, so the
# pickled model finds this module's objects rather than copies).
STARTED = threading.Event()
GATE = threading.Event()
_GATE_WAIT_S = 10.0


def _behaviour_model():
    """A no-signature model whose input column ``kind`` says what it does."""
    import mlflow.pyfunc

    module_name = __name__
    gate_wait_s = _GATE_WAIT_S

    class Behaviour(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            import datetime
            import sys

            import numpy as np
            import pandas as pd
            from mlflow.exceptions import MlflowException
            from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

            kind = model_input["kind"].iloc[0]
            rows = len(model_input)
            if kind == "ok":
                return np.arange(rows, dtype=np.float64) + 0.5
            if kind == "raise":
                raise ValueError("this model does not like its input")
            if kind == "mlflow_error":
                raise MlflowException("a bare MLflow error from the model")
            if kind == "mlflow_invalid":
                raise MlflowException("an invalid value", error_code=INVALID_PARAMETER_VALUE)
            if kind == "float32":
                return np.array([0.1, 4.9985085, 0.17731822, -1e-3], dtype=np.float32)
            if kind == "nan":
                return np.array([np.nan, np.inf, -np.inf, 1.5])
            if kind == "float32_nan":
                return np.array([np.nan, 0.1], dtype=np.float32)
            if kind == "int":
                return np.array([1, -2, 2**40], dtype=np.int64)
            if kind == "bool":
                return np.array([True, False])
            if kind == "matrix":
                return np.array([[1.25, 2.5], [3.0, np.float32(0.1)]], dtype=np.float32)
            if kind == "fortran_matrix":
                return np.asfortranarray(np.array([[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]]))
            if kind == "3d":
                return np.arange(8, dtype=np.float32).reshape(2, 2, 2) / 3
            if kind == "0d_array":
                return np.array(1.25)
            if kind == "numpy_scalar":
                return np.float32(0.1)
            if kind == "uint64":
                return np.array([0, 2**64 - 1], dtype=np.uint64)
            if kind == "float16":
                return np.array([0.1, 65504], dtype=np.float16)
            if kind == "empty_array":
                return np.array([], dtype=np.float32)
            if kind == "series":
                return pd.Series([1.5, 2.5], name="pred")
            if kind == "series_unnamed":
                return pd.Series([1.5, 2.5])
            if kind == "frame":
                return pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [0.5, np.nan]})
            if kind == "dict":
                return {"a": np.array([1.0, 2.0]), "b": "x", "c": [1, 2]}
            if kind == "str":
                return "hello"
            if kind == "bytes":
                return b"\x00\x01 binary \xff"
            if kind == "datetime":
                return datetime.datetime(2024, 1, 2, 3, 4, 5)
            if kind == "list":
                return [1, "a", None, 2.5]
            if kind == "unicode":
                return ["héllo", "日本"]
            if kind == "unserializable":
                return object()
            if kind == "gate":
                module = sys.modules[module_name]
                module.STARTED.set()
                if not module.GATE.wait(gate_wait_s):
                    raise RuntimeError("the test never opened the gate")
                return np.array([1.0])
            raise KeyError(kind)

    return Behaviour()


def _echo_model():
    """A model with a params schema (and no input schema) that echoes what it got."""
    import mlflow.pyfunc

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return {
                "type": type(model_input).__name__,
                "input": model_input if isinstance(model_input, dict) else None,
                "params": params,
            }

    return Echo()


@pytest.fixture(scope="module")
def extra_paths(tmp_path_factory) -> dict[str, str]:
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    root = tmp_path_factory.mktemp("conformance_models")
    behaviour = str(root / "behaviour")
    mlflow.pyfunc.save_model(behaviour, python_model=_behaviour_model(), pip_requirements=[])
    echo = str(root / "echo")
    params = ParamSchema([ParamSpec("temperature", "double", 0.5), ParamSpec("tag", "string", "none")])
    mlflow.pyfunc.save_model(
        echo,
        python_model=_echo_model(),
        pip_requirements=[],
        signature=ModelSignature(inputs=None, params=params),
    )
    return {"behaviour": behaviour, "echo": echo}


@pytest.fixture(scope="module")
def extra_clients(extra_paths):
    with contextlib.ExitStack() as stack:
        yield {
            name: (
                stack.enter_context(mlscale_client(path)),
                stack.enter_context(mlflow_client(path)),
            )
            for name, path in extra_paths.items()
        }


@pytest.fixture(scope="module")
def both(clients, extra_clients):
    """``both(name, method, path, **kwargs)``: the same request to mlscale and MLflow."""
    pairs = {**clients, **extra_clients}

    def send(name: str, method: str, path: str, **kwargs):
        ours, theirs = pairs[name]
        return ours.request(method, path, **kwargs), theirs.request(method, path, **kwargs)

    return send


@pytest.fixture(scope="module")
def invoke(both):
    """POST a body to /invocations of both servers; documents are JSON-encoded."""

    def send(name: str, document: object, content_type: str | None = JSON_CT):
        headers = {} if content_type is None else {"content-type": content_type}
        return both(name, "POST", "/invocations", content=encode(document), headers=headers)

    return send


def native_calls(client) -> float:
    """How many predict calls mlscale's native fast path has made."""
    text = client.get("/metrics").text
    found = re.search(r'^mlscale_batch_rows_count\{path="native"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


# ---------------------------------------------------------------------------
# 2. Endpoints
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline"])
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param(c["method"], c["path"], c["status"], id=f"{c['method']}-{c['path']}-{c['status']}")
        for c in CASES["endpoints"]
    ],
)
def test_endpoints(both, name, method, path, status):
    ours, theirs = both(name, method, path)
    context = f"\n  mlscale: {_show(ours)}\n  mlflow:  {_show(theirs)}"
    assert theirs.status_code == status, context
    assert ours.status_code == theirs.status_code, context
    # /ping's "\n" and /version's bare 3.17.2 are not JSON, under a JSON content type.
    assert ours.content == theirs.content, context
    assert _media(ours) == _media(theirs) == "application/json", context
    if status == 405:
        assert ours.headers.get("allow") == theirs.headers.get("allow"), context


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/invocations/"), ("GET", "/ping/"), ("GET", "/health/"), ("GET", "/version/")],
)
def test_trailing_slash_reaches_the_endpoint(both, name, method, path):
    """Not a checklist row, but the drop-in rule: MLflow's FastAPI app redirects
    ``/invocations/`` to ``/invocations`` (307, body kept), so a client that posts to
    the slashed path works against MLflow and must work against mlscale."""
    document = {"dataframe_split": split_of(frame_for(name))}
    ours, theirs = both(
        name,
        method,
        path,
        content=encode(document),
        headers={"content-type": JSON_CT},
        follow_redirects=True,
    )
    if path.startswith("/invocations"):
        assert_same_answer(ours, theirs, status=200)
        return
    context = f"\n  mlscale: {_show(ours)}\n  mlflow:  {_show(theirs)}"
    assert theirs.status_code == 200, context
    assert ours.status_code == theirs.status_code, context
    assert ours.content == theirs.content, context


def test_ping_and_version_bodies(both):
    ping, _ = both("xgboost", "GET", "/ping")
    assert ping.content == b"\n"
    version, _ = both("xgboost", "GET", "/version")
    from mlflow.version import VERSION

    assert version.text == VERSION  # unquoted, under application/json, as MLflow


def test_not_found_and_not_allowed_bodies(both):
    missing, _ = both("lightgbm", "GET", "/nope")
    assert missing.json() == {"detail": "Not Found"}
    wrong, _ = both("lightgbm", "GET", "/invocations")
    assert wrong.json() == {"detail": "Method Not Allowed"}


# ---------------------------------------------------------------------------
# 3. Content-Type
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("content_type", CASES["json_content_types_accepted"])
def test_json_content_types_accepted(invoke, name, content_type):
    document = {"dataframe_split": split_of(frame_for(name))}
    assert_same_answer(*invoke(name, document, content_type), status=200)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_csv_accepted(invoke, name):
    body = frame_for(name, rows=4).to_csv(index=False).encode()
    assert_same_answer(*invoke(name, body, CSV_CT), status=200)


@pytest.mark.parametrize("name", SIGNED)
def test_csv_with_shuffled_columns(invoke, name):
    frame = frame_for(name, rows=4)
    body = frame[list(reversed(frame.columns))].to_csv(index=False).encode()
    assert_same_answer(*invoke(name, body, CSV_CT), status=200)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_parquet_accepted(invoke, name):
    buffer = io.BytesIO()
    frame_for(name, rows=4).to_parquet(buffer)
    assert_same_answer(*invoke(name, buffer.getvalue(), PARQUET_CT), status=200)


@pytest.mark.parametrize("name", F_SIGNED)
def test_csv_value_that_cannot_be_cast(invoke, name):
    body = b"f0,f1,f2\n1.5,2.0,abc\n"
    ours, theirs = invoke(name, body, CSV_CT)
    assert_same_answer(ours, theirs, status=400)
    assert theirs.json()["message"].startswith("Failed to parse input as a Pandas DataFrame")
    assert "stack_trace" in theirs.json()


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline", "no_signature"])
@pytest.mark.parametrize("case", cases("bad_csv_and_parquet_bodies"))
def test_bad_csv_and_parquet_bodies(invoke, name, case):
    ours, theirs = invoke(name, body_of(case), case["content_type"])

    assert 400 <= theirs.status_code < 500
    assert_same_answer(ours, theirs)


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline"])
@pytest.mark.parametrize("content_type", CASES["content_types_rejected"], ids=lambda ct: ct or "empty")
def test_content_types_rejected_with_415(invoke, name, content_type):
    document = {"dataframe_split": split_of(frame_for(name))}
    ours, theirs = invoke(name, document, content_type)
    assert_same_answer(ours, theirs, status=415)
    assert _media(theirs) == "text/plain"


def test_415_messages_are_mlflows(invoke):
    document = {"dataframe_split": split_of(frame_for("xgboost"))}
    ours, _ = invoke("xgboost", document, "application/json; charset=latin-1")
    assert ours.text == "The scoring server only supports UTF-8"
    ours, _ = invoke("xgboost", document, "application/json; format=pandas-split")
    assert ours.text.startswith("Unrecognized content type parameters: format. IMPORTANT:")
    ours, _ = invoke("xgboost", document, "Application/JSON")
    assert ours.text == (
        "This predictor only supports the following content types: Types: "
        "['text/csv', 'application/json', 'application/vnd.apache.parquet']. "
        "Got 'Application/JSON'."
    )


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline"])
def test_missing_content_type_is_a_clear_415(invoke, name):
    """Better than MLflow on purpose: MLflow crashes (500) on a missing header."""
    document = {"dataframe_split": split_of(frame_for(name))}
    ours, theirs = invoke(name, document, content_type=None)
    assert theirs.status_code == 500  # MLflow: 'NoneType' has no attribute 'split'
    assert ours.status_code == 415
    assert "Content-Type" in ours.text
    assert "application/json" in ours.text


# ---------------------------------------------------------------------------
# 4. JSON body
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("case", cases("json_bodies"))
def test_json_bodies(invoke, name, case):
    status = case.get("status")
    if isinstance(status, dict):  # per model, "*" for the others
        status = status.get(name, status["*"])
    body = body_of(case, frame_for(name))
    assert_same_answer(*invoke(name, body), status=status, message=case.get("message"))


def test_json_error_messages_are_mlflows(invoke):
    """A few rows' exact words, as listed in the checklist."""
    ours, _ = invoke("xgboost", [1, 2])
    assert ours.json()["message"].endswith("Received a list.")
    assert ours.json()["error_code"] == "BAD_REQUEST"
    ours, _ = invoke("xgboost", 5)
    assert ours.json()["message"].endswith("Received unexpected input type '<class 'int'>.")
    ours, _ = invoke("xgboost", b"{")
    assert ours.json()["message"].startswith(
        "Invalid input. Ensure that input is a valid JSON formatted string. Error: "
    )
    ours, _ = invoke("xgboost", {"dataframe_split": [[1, 2, 3]]})
    assert ours.json()["message"] == ("Invalid input. Dataframe split format must be a dictionary. Got list.")
    ours, _ = invoke("xgboost", {"dataframe_records": {"f0": [1]}})
    assert ours.json()["message"] == (
        "Invalid input. Dataframe records format must be a list of records. Got dictionary."
    )
    ragged = {"dataframe_split": {"columns": ["f0", "f1", "f2"], "data": [[1.0, 2.0]]}}
    ours, _ = invoke("xgboost", ragged)
    assert ours.json()["message"] == (
        "Invalid input. Provided dataframe_split field is not a valid dataframe representation"
        " in 'split' format. Error: '3 columns passed, passed data had 2 columns'"
    )


@pytest.mark.parametrize("name", SIGNED)
def test_inputs_2d_list_with_named_signature_is_rejected(invoke, name):
    frame = frame_for(name)
    ours, theirs = invoke(name, {"inputs": frame.to_numpy().tolist()})
    assert_same_answer(ours, theirs, status=400)
    if name in F_SIGNED:
        assert "Model is missing inputs ['f0', 'f1', 'f2']" in theirs.json()["message"]


@pytest.mark.parametrize("key", ["inputs", "instances"])
def test_inputs_2d_list_without_signature_is_accepted(invoke, key):
    frame = frame_for("no_signature")
    assert_same_answer(*invoke("no_signature", {key: frame.to_numpy().tolist()}), status=200)


@pytest.mark.parametrize("case", cases("params_with_a_params_schema"))
def test_params_with_a_params_schema(invoke, case):
    status = case["status"]
    ours, theirs = invoke("echo", body_of(case))

    assert_same_answer(ours, theirs, status=status)
    if status == 200:
        params = theirs.json()["predictions"]["params"]
        assert set(params) == {"temperature", "tag"}  # unknown dropped, missing defaulted


@pytest.mark.parametrize("case", cases("scalar_and_1d_inputs"))
def test_scalar_and_1d_inputs_on_a_model_that_takes_them(invoke, case):
    """A model without an input schema takes whatever ``inputs`` holds, scalars included."""
    assert_same_answer(*invoke("echo", body_of(case)))


@pytest.mark.parametrize("content_type", [CSV_CT, PARQUET_CT])
def test_csv_and_parquet_carry_no_params(invoke, content_type):
    frame = pd.DataFrame({"a": [1.5, 2.5], "b": [1, 2]})
    body = frame.to_csv(index=False).encode() if content_type == CSV_CT else _parquet(frame)
    ours, theirs = invoke("echo", body, content_type)
    assert_same_answer(ours, theirs, status=200)
    assert ours.json()["predictions"]["params"] == {"temperature": 0.5, "tag": "none"}


def test_params_error_messages(invoke):
    ours, _ = invoke("echo", {"inputs": [[1, 2]], "params": "x"})
    assert ours.json()["message"].endswith("Parameters must be a dictionary. Got type 'str'.")
    ours, _ = invoke("echo", {"inputs": [[1, 2]], "params": {"temperature": "hot"}})
    assert "Invalid parameters found: {" in ours.json()["message"]


@pytest.mark.parametrize("case", cases("llm_inputs"))
def test_llm_inputs_are_passed_raw_and_unwrapped(invoke, case):
    ours, theirs = invoke("echo", body_of(case))

    assert_same_answer(ours, theirs, status=200)
    assert "predictions" not in theirs.json()  # the unified LLM format has no wrapper


# ---------------------------------------------------------------------------
# 5. Schema enforcement
# ---------------------------------------------------------------------------


def _split_rows(*rows, columns=("f0", "f1", "f2")) -> dict:
    return {"dataframe_split": {"columns": list(columns), "data": [list(r) for r in rows]}}


def _records(*records) -> dict:
    return {"dataframe_records": list(records)}


@pytest.mark.parametrize("name", F_SIGNED)
@pytest.mark.parametrize("case", cases("schema_enforcement"))
def test_schema_enforcement(invoke, name, case):
    assert_same_answer(*invoke(name, body_of(case)), status=case.get("status"))


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def _typed(**columns) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(values, dtype=dtype) for name, (values, dtype) in columns.items()})


@pytest.mark.parametrize("name", F_SIGNED)
@pytest.mark.parametrize("case", cases("schema_enforcement_of_typed_columns"))
def test_schema_enforcement_of_typed_columns(invoke, name, case):
    """Parquet is not cast at parse time: these reach ``_enforce_schema`` as typed."""
    frame = _typed(**{column: tuple(spec) for column, spec in case["frame"].items()})
    assert_same_answer(*invoke(name, _parquet(frame), PARQUET_CT), status=case.get("status"))


def test_incompatible_types_message(invoke):
    frame = _typed(f0=([1.5], "float64"), f1=([2.0], "float64"), f2=([3.7], "float64"))
    ours, _ = invoke("xgboost", _parquet(frame), PARQUET_CT)
    assert "Incompatible input types for column f2" in ours.json()["message"]


def test_schema_error_details(invoke):
    """The checklist's codes for the two enforcement stages."""
    ours, theirs = invoke("xgboost", _split_rows([1.0, 2.0, None]))
    for answer in (ours, theirs):
        body = answer.json()
        assert body["error_code"] == "BAD_REQUEST"
        assert body["message"].startswith(
            "Invalid input. Data is not compatible with model signature. "
            "Failed to convert column f2 to type 'int64'. Error: '"
        )
    ours, theirs = invoke("xgboost", _split_rows([1.0, 2.0], columns=("f0", "f1")))
    for answer in (ours, theirs):
        body = answer.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert body["error_class"] == "SCHEMA_ENFORCEMENT_FAILED"
        assert body["message"].startswith("Failed to predict data '")
        assert body["message"].endswith("Model is missing inputs ['f2'].")


@pytest.mark.parametrize("name", ["xgboost", "custom_dataframe"])
def test_empty_data_answers_empty_predictions(invoke, name):
    ours, theirs = invoke(name, _split_rows())
    assert_same_answer(ours, theirs, status=200)
    assert ours.json() == {"predictions": []}


@pytest.mark.parametrize("case", cases("schema_enforcement_string_column"))
def test_schema_enforcement_string_column(invoke, case):
    assert_same_answer(*invoke("sklearn_pipeline", body_of(case)), status=case.get("status"))


# ---------------------------------------------------------------------------
# The fast path answers exactly what MLflow answers, on many rows
# ---------------------------------------------------------------------------


def _many_rows(seed: int, rows: int = 50) -> pd.DataFrame:
    """Random rows: full-precision doubles, int-valued floats and ints in the long column."""
    rng = np.random.default_rng(seed)
    f2 = rng.integers(-3, 8, size=rows)
    return pd.DataFrame(
        {
            "extra": rng.normal(size=rows),
            "f1": rng.uniform(-5, 15, size=rows),
            "f2": [float(v) if i % 2 else int(v) for i, v in enumerate(f2)],
            "f0": rng.normal(scale=3, size=rows),
            "more": rng.integers(0, 100, size=rows),
        },
        dtype=object,
    )


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _many_split(frame: pd.DataFrame, seed: int) -> dict:
    columns = list(np.random.default_rng(seed).permutation(frame.columns))
    data = [[_plain(frame.at[i, c]) for c in columns] for i in frame.index]
    return {"dataframe_split": {"columns": columns, "data": data}}


def _many_records(frame: pd.DataFrame, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    records = []
    for i in frame.index:
        columns = list(rng.permutation(frame.columns))
        records.append({c: _plain(frame.at[i, c]) for c in columns})
    return {"dataframe_records": records}


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("orient", ["split", "records"])
@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda seed: f"seed{seed}")
def test_fast_path_many_rows(clients, invoke, name, orient, seed):
    frame = _many_rows(seed)
    document = (_many_split if orient == "split" else _many_records)(frame, seed)
    mlscale, _ = clients[name]
    before = native_calls(mlscale)
    ours, theirs = invoke(name, document)
    assert_same_answer(ours, theirs, status=200)
    assert len(ours.json()["predictions"]) == len(frame)
    assert native_calls(mlscale) == before + 1, "the request did not take the native fast path"


def _edge_rows() -> list[list]:
    """Values at the edges of what a double or a float32 holds."""
    return [
        [0.1, 0.2, 0],
        [-0.0, 0.0, -0],
        [1e300, -1e300, 1],
        [5e-324, 2.2250738585072014e-308, 2],
        [3.4028235e38, 3.4028236e38, 3],
        [1.0000000000000002, 0.30000000000000004, 4],
        [123456789.123456789, -9.87654321e-5, 5],
        [1e-45, 1.401298464324817e-45, 2**52],
        [4.9985085, 0.17731822, -(2**53)],
    ]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("orient", ["split", "records"])
def test_fast_path_edge_values(clients, invoke, name, orient):
    rows = _edge_rows()
    if orient == "split":
        document = _split_rows(*rows)
    else:
        document = _records(*({"f0": a, "f1": b, "f2": c} for a, b, c in rows))
    mlscale, _ = clients[name]
    before = native_calls(mlscale)
    assert_same_answer(*invoke(name, document), status=200)
    assert native_calls(mlscale) == before + 1, "the request did not take the native fast path"


@pytest.mark.parametrize(
    ("name", "rows"),
    [*((name, 200) for name in NUMERIC), ("xgboost", 6000)],
    ids=lambda v: f"{v}-rows" if isinstance(v, int) else v,
)
def test_fast_path_large_requests(clients, invoke, name, rows):
    """Past 64 rows the native call leaves the event loop; past 256 KiB so does decoding."""
    frame = _many_rows(rows, rows=rows)
    document = _many_split(frame, rows)
    mlscale, _ = clients[name]
    before = native_calls(mlscale)
    ours, theirs = invoke(name, document)
    assert_same_answer(ours, theirs, status=200)
    assert native_calls(mlscale) == before + 1, "the request did not take the native fast path"


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline"])
def test_chunked_body(clients, name):
    """A body without Content-Length (chunked) is read whole, as MLflow reads it."""
    body = encode({"dataframe_split": split_of(frame_for(name, rows=8))})
    answers = [
        client.post(
            "/invocations",
            content=iter([body[:10], body[10:50], body[50:]]),
            headers={"content-type": JSON_CT},
        )
        for client in clients[name]
    ]
    assert_same_answer(*answers, status=200)


@pytest.mark.parametrize("name", NUMERIC)
def test_fast_path_one_row_at_a_time(clients, invoke, name):
    """The common case of the reference scenario: single rows, one after another."""
    frame = _many_rows(7, rows=10)
    mlscale, _ = clients[name]
    before = native_calls(mlscale)
    for seed in range(len(frame)):
        document = _many_split(frame.iloc[[seed]].reset_index(drop=True), seed)
        assert_same_answer(*invoke(name, document), status=200)
    assert native_calls(mlscale) == before + len(frame), "not every row took the fast path"


def test_xgboost_float32_outputs_are_widened_like_mlflow(invoke):
    """xgboost predicts float32; MLflow writes the widened double (e.g. 4.998508453369141)."""
    document = {"dataframe_split": split_of(small_frame(20, seed=0))}
    ours, theirs = invoke("xgboost", document)
    assert_same_answer(ours, theirs, status=200)
    predictions = ours.json()["predictions"]
    widened = [float(np.float32(v)) for v in predictions]
    assert predictions == widened  # each value is exactly a float32 widened to double
    assert any(len(repr(v)) > 12 for v in predictions)  # not shortest-float32 text


# ---------------------------------------------------------------------------
# Legacy MLflow 1.x bare split body
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def legacy_clients(model_paths):
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(mlscale_client(model_paths[name], accept_legacy_split=True))
            for name in ["xgboost", "sklearn_pipeline", "custom_dataframe"]
        }


def _bare_split(frame: pd.DataFrame, **extra) -> dict:
    # What `df.to_json(orient="split")` sends: columns, index and data, no wrapper.
    return {**json.loads(frame.to_json(orient="split")), **extra}


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline", "custom_dataframe"])
def test_legacy_split_rejected_by_default(invoke, name):
    ours, theirs = invoke(name, _bare_split(frame_for(name)))
    assert_same_answer(ours, theirs, status=400, message=exactly_one_key_message([]))
    assert ours.json()["error_code"] == "BAD_REQUEST"


@pytest.mark.parametrize("name", ["xgboost", "sklearn_pipeline", "custom_dataframe"])
@pytest.mark.parametrize("with_index", [True, False], ids=["with-index", "no-index"])
def test_legacy_split_accepted_on_request(legacy_clients, invoke, name, with_index):
    frame = frame_for(name, rows=5)
    bare = _bare_split(frame)
    if not with_index:
        bare.pop("index")
    ours = legacy_clients[name].post("/invocations", content=encode(bare), headers={"content-type": JSON_CT})
    _, theirs = invoke(name, {"dataframe_split": bare})  # MLflow's answer to the wrapped form
    assert_same_answer(ours, theirs, status=200)


@pytest.mark.parametrize("case", cases("legacy_opt_in_leaves_other_bodies_alone"))
def test_legacy_opt_in_leaves_other_bodies_alone(legacy_clients, invoke, case):
    body = body_of(case)
    ours = legacy_clients["xgboost"].post("/invocations", content=body, headers={"content-type": JSON_CT})
    _, theirs = invoke("xgboost", body)
    assert_same_answer(ours, theirs, message=case.get("message"))


# ---------------------------------------------------------------------------
# 6. Errors
# ---------------------------------------------------------------------------


def _kind(kind: str, rows: int = 1) -> dict:
    return {"dataframe_records": [{"kind": kind} for _ in range(rows)]}


def test_model_raising_an_ordinary_exception_is_a_400(invoke):
    ours, theirs = invoke("behaviour", _kind("raise"))
    assert_same_answer(ours, theirs, status=400)
    body = ours.json()
    assert body["error_code"] == "BAD_REQUEST"
    assert body["message"].startswith("Encountered an unexpected error while evaluating the model.")
    assert "this model does not like its input" in body["stack_trace"]


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("mlflow_error", 500, "INTERNAL_ERROR"), ("mlflow_invalid", 400, "INVALID_PARAMETER_VALUE")],
)
def test_model_raising_an_mlflow_exception_keeps_its_code(invoke, kind, status, code):
    ours, theirs = invoke("behaviour", _kind(kind))
    assert_same_answer(ours, theirs, status=status)
    assert ours.json()["error_code"] == code
    assert ours.json()["message"].startswith("Failed to predict data '")


def test_model_raising_on_a_native_path_model(invoke):
    """sklearn's Ridge rejects NaN: the native path must answer MLflow's 400 too."""
    assert_same_answer(*invoke("sklearn_numeric", _split_rows([None, 1.0, 2])), status=400)


def test_output_that_cannot_be_serialized_is_a_500(invoke):
    ours, theirs = invoke("behaviour", _kind("unserializable"))
    assert theirs.status_code == 500 and _media(theirs) == "text/plain"
    assert ours.status_code == 500
    # mlscale's body may be clearer than MLflow's "Internal Server Error", not vaguer.
    assert "object" in ours.text


@pytest.fixture
def gate():
    STARTED.clear()
    GATE.clear()
    yield
    GATE.set()  # never leave a model thread waiting


def test_timeout_is_a_504_with_a_json_error(extra_paths, gate):
    """Better than MLflow on purpose: MLflow's 504 body is plain text under a JSON type."""
    with mlscale_client(extra_paths["behaviour"], timeout_s=0.2) as client:
        response = client.post(
            "/invocations", content=encode(_kind("gate")), headers={"content-type": JSON_CT}
        )
        GATE.set()
        assert response.status_code == 504
        assert _media(response) == "application/json"
        body = response.json()
        assert body["error_code"] == "DEADLINE_EXCEEDED"
        assert "Request processing time exceeded limit" in body["message"]


def test_overload_is_a_503_with_retry_after(extra_paths, gate):
    """Better than MLflow on purpose: a bounded queue instead of an unbounded one."""
    from mlscale.serving.batcher import BatchSettings

    def post(client, kind):
        return client.post("/invocations", content=encode(_kind(kind)), headers={"content-type": JSON_CT})

    settings = BatchSettings(max_queue=1)
    with (
        mlscale_client(extra_paths["behaviour"], batch=settings) as client,
        concurrent.futures.ThreadPoolExecutor(3) as pool,
    ):
        first = pool.submit(post, client, "gate")
        assert STARTED.wait(_GATE_WAIT_S), "the gated request never reached the model"
        # The model is busy: one of these two waits in the queue, the other finds it full.
        others = [pool.submit(post, client, "ok") for _ in range(2)]
        done, _ = concurrent.futures.wait(
            others, timeout=_GATE_WAIT_S, return_when=concurrent.futures.FIRST_COMPLETED
        )
        GATE.set()
        assert done, "neither request was turned away while the queue was full"
        rejected = next(iter(done)).result()
        assert rejected.status_code == 503
        assert rejected.headers.get("retry-after")
        assert rejected.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
        assert first.result().status_code == 200
        assert sorted(f.result().status_code for f in others) == [200, 503]


# ---------------------------------------------------------------------------
# Body size limit (mlscale only; MLflow has none)
# ---------------------------------------------------------------------------


def test_body_over_the_limit_is_a_413(model_paths, invoke):
    frame = small_frame(40, seed=3)
    big = encode({"dataframe_split": split_of(frame)})
    small = encode({"dataframe_split": split_of(frame.head(2))})
    assert len(small) < 1000 < len(big)
    with mlscale_client(model_paths["xgboost"], max_body_bytes=1000) as client:
        for content in (big, iter([big[:600], big[600:]])):  # declared length, then chunked
            response = client.post("/invocations", content=content, headers={"content-type": JSON_CT})
            assert response.status_code == 413
            assert _media(response) == "application/json"
            body = response.json()
            assert body["error_code"]
            assert "1000" in body["message"]
        under = client.post("/invocations", content=small, headers={"content-type": JSON_CT})
    _, theirs = invoke("xgboost", small)
    assert_same_answer(under, theirs, status=200)
    _, theirs = invoke("xgboost", big)
    assert theirs.status_code == 200  # MLflow has no limit


# ---------------------------------------------------------------------------
# 7. Output encoding
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CASES["output_kinds"])
def test_output_encoding(invoke, kind):
    ours, theirs = invoke("behaviour", _kind(kind))
    assert_same_answer(ours, theirs, status=200)


def test_output_encoding_details(invoke):
    ours, _ = invoke("behaviour", _kind("float32"))
    assert ours.json()["predictions"][0] == 0.10000000149011612
    ours, _ = invoke("behaviour", _kind("nan"))
    assert "NaN" in ours.text and "Infinity" in ours.text and "-Infinity" in ours.text
    ours, _ = invoke("behaviour", _kind("series"))
    assert ours.json() == {"predictions": [{"pred": 1.5}, {"pred": 2.5}]}
    ours, _ = invoke("behaviour", _kind("series_unnamed"))
    assert ours.json() == {"predictions": [{"0": 1.5}, {"0": 2.5}]}
    ours, _ = invoke("behaviour", _kind("str"))
    assert ours.json() == {"predictions": "hello"}
    ours, _ = invoke("behaviour", _kind("datetime"))
    assert ours.json() == {"predictions": "2024-01-02T03:04:05"}
    ours, _ = invoke("behaviour", _kind("bytes"))
    assert ours.json()["predictions"].endswith("\n")
    ours, _ = invoke("behaviour", _kind("unicode"))
    assert ours.content.isascii()  # json.dump's ensure_ascii, as MLflow writes it


@pytest.mark.parametrize("rows", [1, 3, 20])
def test_dataframe_output_as_records(invoke, rows):
    document = {"dataframe_split": split_of(small_frame(rows, seed=5))}
    ours, theirs = invoke("custom_dataframe", document)
    assert_same_answer(ours, theirs, status=200)
    assert all(set(row) == {"total", "label"} for row in ours.json()["predictions"])
