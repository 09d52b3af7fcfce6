"""The typed contracts: plan.json's published JSON Schema, round trips, old and bad plans."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlscale.capacity.planner import PlanSettings, _assemble, read_plan, write_plan
from mlscale.capacity.pods import PodSpec
from mlscale.errors import ConfigurationError
from mlscale.loadtest.sla import parse_sla
from mlscale.schemas import (
    PLAN_SCHEMA_VERSION,
    LoadTestSummary,
    Plan,
    PlanFileError,
    parse_loadtest_summary,
    parse_plan,
    plan_json_schema_text,
    read_plan_file,
)
from tests.capacity.test_capacity import _measured

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "docs" / "plan.schema.json"


def _settings(out_dir: str = "unused") -> PlanSettings:
    return PlanSettings(
        sla=parse_sla("p95<1s"),
        kind="users",
        target=1000,
        out_dir=out_dir,
        pods=(PodSpec(0.25), PodSpec(0.5), PodSpec(1.0)),
        url="http://x",
    )


@pytest.mark.slow  # runs `python -m mlscale.schemas`
def test_the_published_schema_is_the_models():
    assert PUBLISHED.read_text(encoding="utf-8") == plan_json_schema_text(), (
        "docs/plan.schema.json is stale: regenerate it with "
        "`python -m mlscale.schemas > docs/plan.schema.json`"
    )
    printed = subprocess.run(
        [sys.executable, "-m", "mlscale.schemas"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert printed.stdout == plan_json_schema_text() and printed.stderr == ""
    schema = json.loads(printed.stdout)
    assert schema["title"] == "mlscale plan.json" and "schema_version" in schema["properties"]


def test_a_written_plan_validates_and_round_trips(tmp_path):
    """The writer's plan.json: the schema reads it, and writes back the same JSON, text
    included. (The real `mlscale plan` run of tests/capacity/test_plan_run.py checks its own file
    the same way.)"""
    measurements = [_measured(0.25), _measured(0.5), _measured(1.0)]
    written = write_plan(_settings(str(tmp_path)), measurements)
    text = (tmp_path / "plan.json").read_text(encoding="utf-8")
    assert json.loads(text)["schema_version"] == PLAN_SCHEMA_VERSION
    plan = Plan.model_validate_json(text)
    assert plan == written
    # Every key a plan holds is set, so the dump is the file's JSON.
    assert plan.model_dump(mode="json", by_alias=True, exclude_unset=True) == json.loads(text)
    assert plan.to_json() == text
    assert read_plan(str(tmp_path / "plan.json")) == written
    assert (tmp_path / "plan.html").stat().st_size > 0


def test_the_layout_is_the_one_written_before_the_schema():
    """Same keys as before the schema, in the same places, plus schema_version."""
    data = _assemble(_settings(), [_measured(0.25), _measured(0.5), _measured(1.0)]).to_json_dict()
    assert list(data) == [
        "schema_version",
        "sla",
        "load_model",
        "quick",
        "measurements",
        "model",
        "sizing",
        "sizing_error",
    ]
    # plus the protocol measured, since the Open Inference Protocol (optional: "mlflow").
    assert list(data["load_model"]) == ["kind", "think_time_s", "rows_per_request", "mix", "protocol"]
    assert {"lambda", "sigma", "kappa", "tail", "holdout_error", "predicted"} <= set(data["model"])
    assert "lam" not in data["model"]
    assert set(data["sizing"]["hpa"]) == {"min_replicas", "max_replicas", "target_cpu_utilization"}
    assert "target_users" in data["sizing"] and "target_rps" not in data["sizing"]


def test_an_older_plan_without_a_version_loads(tmp_path):
    older = _assemble(_settings(), [_measured(0.25)]).to_json_dict()
    del older["schema_version"]
    # Plans before these keys existed: no rows per request, mix or sizing reasons.
    del older["load_model"]["rows_per_request"], older["load_model"]["mix"], older["sizing_error"]
    del older["load_model"]["protocol"]
    del older["sizing"]["hpa_target_reason"], older["sizing"]["memory_reason"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(older, indent=2), encoding="utf-8")
    plan = read_plan_file(str(path))
    assert plan.schema_version == PLAN_SCHEMA_VERSION and plan.load_model.rows_per_request == 1
    assert plan.load_model.protocol == "mlflow"  # what every plan before V2 measured
    assert plan.sizing is not None and plan.sizing.pods > 0
    # Written again, it keeps the keys it had, and gains its version.
    assert json.loads(plan.to_json()) == {"schema_version": PLAN_SCHEMA_VERSION, **older}


def test_a_plan_from_a_newer_mlscale_says_what_to_do():
    data = _assemble(_settings(), [_measured(0.25)]).to_json_dict()
    with pytest.raises(PlanFileError, match=r"schema version 2, written by a newer mlscale.*upgrade mlscale"):
        parse_plan({**data, "schema_version": 2})
    with pytest.raises(PlanFileError, match="not a version number"):
        parse_plan({**data, "schema_version": "1"})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p["sizing"].update(pods="3"), "sizing.pods: Input should be a valid integer"),
        (lambda p: p["sizing"]["hpa"].pop("max_replicas"), "sizing.hpa.max_replicas: Field required"),
        (lambda p: p["measurements"][0]["steps"][1].update(rps=None), "measurements.0.steps.1.rps"),
        (lambda p: p["load_model"].update(kind="qps"), "load_model.kind: Input should be 'users' or 'rps'"),
        (lambda p: p.update(sla="p95<1s"), "sla: Input should be a valid dictionary"),
        # A key this version does not know: a typo, or a newer layout without its version.
        (lambda p: p["sizing"].update(pod=3), "sizing.pod: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_plan_is_a_clear_error_naming_the_field(tmp_path, change, field):
    data = _assemble(_settings(), [_measured(0.25)]).to_json_dict()
    change(data)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ConfigurationError) as caught:
        read_plan_file(str(path))
    message = str(caught.value)
    assert field in message and "Run `mlscale plan`" in message and str(path) in message
    assert len(message.splitlines()) == 1


def test_not_a_plan_at_all(tmp_path):
    with pytest.raises(PlanFileError, match="No plan at"):
        read_plan_file(str(tmp_path / "missing.json"))
    (tmp_path / "plan.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PlanFileError, match=r"is not valid JSON \(line 1\)"):
        read_plan_file(str(tmp_path))  # the folder `mlscale plan --out` wrote
    with pytest.raises(PlanFileError, match="expected a JSON object"):
        parse_plan([1, 2])


def test_a_plan_is_frozen():
    plan = _assemble(_settings(), [_measured(0.25)])
    with pytest.raises(Exception, match="frozen"):
        plan.quick = True  # type: ignore[misc]


def test_a_load_test_summary_reads_through_its_schema():
    summary = {
        "requests": 10,
        "failures": 1,
        "error_rate": 0.1,
        "rps": 5.0,
        "duration_s": 2.0,
        "latency_ms": {"p50": 1.0, "p95": 2.0, "mean": 1.2},
        "by_kind": {"predict": {"requests": 10, "failures": 1, "latency_ms": {"p50": 1.0}}},
        "errors": [{"kind": "predict", "error": "HTTP 500", "count": 1}],
        "valid": True,
        "problems": [],
        "sla": {
            "expr": "p95<1s",
            "met": True,
            "checks": [{"bound": "p95 < 1000 ms", "value": 2.0, "met": True}],
        },
        "config": {"host": "http://x"},
    }
    parsed = parse_loadtest_summary(summary)
    assert parsed.sla is not None and parsed.sla.met and parsed.errors[0].count == 1
    assert parsed.to_json_dict() == {"schema_version": 1, **summary}
    assert parse_loadtest_summary(parsed) is parsed
    with pytest.raises(ConfigurationError, match="requests: Field required"):
        parse_loadtest_summary({k: v for k, v in summary.items() if k != "requests"})
    assert isinstance(LoadTestSummary.model_validate_json(parsed.to_json()), LoadTestSummary)
