"""One real, short plan against a real mlscale server, through its V2 infer endpoint
(`mlscale plan --protocol v2`; the demo and the README plan through /invocations)."""

from __future__ import annotations

import json
import math
import os

import pytest

from mlscale.capacity.planner import PlanSettings, run_plan
from mlscale.capacity.pods import PodSpec
from mlscale.loadtest.bodies import v2_infer_path
from mlscale.loadtest.sla import parse_sla
from mlscale.protocol.names import default_model_name
from mlscale.schemas.plan import Plan
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.slow


def test_a_quick_plan_against_a_running_server(tmp_path, model_paths):
    with ServerProcess("-m", model_paths["xgboost"]) as server:
        server.wait_ready()
        settings = PlanSettings(
            sla=parse_sla("p95<1s"),
            kind="users",
            target=40,
            out_dir=str(tmp_path),
            pods=(PodSpec(1.0, 1),),
            url=server.url,
            think_time_s=0.02,
            step_s=2.0,
            precision=0.5,
            start_load=4,
            ceiling=16,
            max_steps=5,
            quick=True,
            signature_of=model_paths["xgboost"],
            protocol="v2",
            path=v2_infer_path(default_model_name(model_paths["xgboost"])),
            body_format="v2",
        )
        lines: list[str] = []
        plan = run_plan(settings, say=lines.append)
        infer = server.metric("mlscale_requests_total", endpoint="infer", status="200")
        invocations = server.metric("mlscale_requests_total", endpoint="invocations", status="200")
    # Every step drove the V2 endpoint, and the plan says which protocol it measured.
    assert infer >= sum(s.requests or 0 for s in plan.measurements[0].steps) > 0 and not invocations
    assert plan.load_model.protocol == "v2"
    measured = plan.measurements[0]
    # The search's ceiling, far below this server's capacity, even on a busy machine.
    assert measured.max_users == 16, "\n".join(lines)
    # Four-fold while the p95 is under a tenth of the limit (it is, here), else doubling.
    first = measured.steps[0]
    assert first.latency_ms is not None
    expected = [4, 16] if first.latency_ms < 100 else [4, 8, 16]
    assert [s.load for s in measured.steps] == expected
    assert all(s.meets and s.valid for s in measured.steps)
    # A p95 needs 100 requests (five beyond it); a step with fewer is flagged, not trusted.
    for step in measured.steps:
        assert step.requests is not None
        assert step.min_requests == 100
        assert step.enough_requests == (step.requests >= 100)
    assert list(measured.few_requests_at) == [s.load for s in measured.steps if (s.requests or 0) < 100]
    assert measured.max_rps > 0 and measured.p95_ms_at_max is not None and measured.p95_ms_at_max < 1000
    sizing = plan.sizing
    assert sizing is not None
    # Self-consistent: 40 users at 80 % of 16 per pod need 4 pods; they fit the nodes.
    assert sizing.pods == 4 and sizing.pods <= sizing.pods_per_node * sizing.nodes
    assert sizing.hpa.max_replicas >= sizing.pods
    # A running server (--url): its CPU is not a pod's, so the HPA target is the default;
    # its memory is this machine's server's, measured, with half again on top.
    assert sizing.hpa.target_cpu_utilization == 80
    assert "CPU not measured" in sizing.hpa_target_reason
    peak = measured.peak_rss_mb
    assert peak is not None and peak > 50 and sizing.memory_reason.startswith("measured")
    assert sizing.memory_per_pod_mib == max(256, 64 * math.ceil(peak * 1.5 / 64))
    # plan.json is the plan, through its schema: it validates and round-trips to the same
    # JSON (tests/schemas/test_schemas.py checks the schema itself on synthetic plans).
    text = (tmp_path / "plan.json").read_text(encoding="utf-8")
    assert json.loads(text) == plan.to_json_dict()
    read_back = Plan.model_validate_json(text)
    assert read_back == plan
    assert read_back.model_dump(mode="json", by_alias=True, exclude_unset=True) == json.loads(text)
    assert read_back.to_json() == text
    assert os.path.getsize(tmp_path / "plan.html") > 0
    assert any("capacity: 16 users" in line for line in lines)
