"""Whole simulations: the reference's experiments replayed, the files, the command,
the comparison of policies, and the speed of a long run."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import time

import pytest
from click.testing import CliRunner

from mlscale.cli.main import main
from mlscale.loadtest.shapes import steps
from mlscale.schemas.plan import parse_plan
from mlscale.schemas.simulation import SimulationSummary
from mlscale.simulate.calibration import reference_pod
from mlscale.simulate.cluster import Cluster
from mlscale.simulate.engine import COLUMNS, simulate
from mlscale.simulate.presets import PRESETS, build_preset, run_experiment, run_preset
from mlscale.simulate.profile import daily_shape
from mlscale.simulate.queue import PodModel
from mlscale.simulate.results import summarize
from mlscale.simulate.settings import (
    HpaSettings,
    ManualScaling,
    NodePool,
    SimSettings,
    apply_overrides,
)
from tests.simulate.test_service import sizing_block, synthetic_plan


@pytest.fixture(scope="module")
def reference_runs():
    return {name: run_experiment(build_preset(name)) for name in PRESETS}


def kinds(summary: dict, kind: str) -> list[float]:
    return [e.time_s for e in summary.events if e.kind == kind]


def test_cluster_autoscaler_adds_nodes_about_a_minute_after_pods_go_pending(reference_runs):
    _, summary = reference_runs["reference-cluster-autoscaler"]
    pending = kinds(summary, "pods_pending")[0]
    first_node = min(t for t in kinds(summary, "node_ready") if t >= pending)
    assert 50 <= first_node - pending <= 150
    assert summary.scale_up_delay_s == first_node - pending
    assert summary.max_nodes == 5  # 12 pods need 5 nodes, as the reference found


def test_cluster_autoscaler_is_back_to_three_nodes_about_15_minutes_after_the_load_falls(reference_runs):
    run, summary = reference_runs["reference-cluster-autoscaler"]
    fall = kinds(summary, "load_fall")[0]
    removed = kinds(summary, "node_removed")
    assert len(removed) == 2 and removed[0] == removed[1]  # empty nodes go together
    assert 12 * 60 <= removed[-1] - fall <= 18 * 60
    assert summary.scale_down_s == removed[-1] - fall
    # The HPA drops straight to 1 replica about 5 minutes after the load fell.
    drop = [
        e
        for e in summary.events
        if (e.kind == "hpa_scale" and e.detail.endswith("metric 4)"))
        or (e.kind == "hpa_scale" and "-> 1 replicas" in e.detail)
    ]
    assert drop and 300 <= drop[0].time_s - fall <= 360
    assert run.columns["nodes"][-1] == 3


def test_hpa_alone_fills_the_cluster_and_pods_stay_pending(reference_runs):
    run, summary = reference_runs["reference-hpa"]
    assert summary.max_nodes == 3 and summary.scale_up_delay_s is None
    assert summary.max_pods_pending > 0
    fall = int(summary.load_fall_s)
    peak = slice(fall - 600, fall)
    assert run.columns["pods_pending"][peak].min() > 0  # Pending until the load falls
    assert run.columns["pods_ready"][peak].max() == 8  # three nodes hold 8 pods
    assert summary.sla_violation_s > reference_runs["reference-cluster-autoscaler"][1].sla_violation_s


def test_manual_phases_cost_more_as_pods_are_added(reference_runs):
    run, summary = reference_runs["reference-manual"]
    assert [e.detail for e in summary.events if e.kind == "manual_scale"] == [
        "1 -> 4 replicas",
        "4 -> 8 replicas",
        "8 -> 14 replicas",
    ]
    p95 = run.columns["p95_ms"]
    # One pod cannot carry a quarter of the peak; fourteen pods carry all of it.
    assert p95[300] > 1000 and p95[-1] < 1000
    assert run.columns["nodes_billed"][-1] == 5


def test_run_preset_writes_the_files(tmp_path):
    summary = run_preset("reference-cluster-autoscaler", str(tmp_path))
    for key in (
        "sla_violation_s",
        "node_hours",
        "cost",
        "max_pods_pending",
        "events",
        "scale_up_delay_s",
        "scale_down_s",
    ):
        assert key in summary.to_json_dict()
    assert all({"time_s", "kind", "detail"} <= set(e.model_dump()) for e in summary.events)
    with open(tmp_path / "timeseries.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4500 and set(COLUMNS) <= set(rows[0])
    assert json.loads((tmp_path / "summary.json").read_text())["scale_down_s"] == summary.scale_down_s
    page = (tmp_path / "report.html").read_text()
    assert "<script src" not in page and "Plotly.newPlot" in page  # self-contained
    assert "reference-cluster-autoscaler" in page


def test_a_preset_with_a_plan_keeps_the_experiment_s_shape():
    plan = {
        "sla": {"expr": "p95<1s", "percentile": "p95", "limit_ms": 1000.0},
        "load_model": {"kind": "users", "think_time_s": 1.0},
        "measurements": [],
        "model": {"latency": {"servers": 1, "service_rate_per_s": 40.0, "delay_ms": 2.0}},
        "sizing": sizing_block(0.5, 1, 20, memory_per_pod_mib=256),
    }
    experiment = build_preset("reference-cluster-autoscaler", parse_plan(plan))
    assert experiment.settings.pod.cpu_request_m == 500
    # The reference's rule: at most 1.5 times the pods its three nodes hold, counted here
    # by the simulated scheduler on three Ready nodes of the experiment's pool.
    three = Cluster(experiment.settings.pool, experiment.settings.pod)
    for _ in range(3):
        three.add_node(0.0, ready_now=True)
    three.create_pods(200, 0.0)
    held = three.schedule(0.0)
    assert 3 < held < 200
    assert experiment.settings.hpa.max_replicas == math.ceil(1.5 * held)
    _, summary = run_experiment(experiment)
    assert summary.max_pods_pending > 0 and summary.max_nodes > 3
    assert 50 <= summary.scale_up_delay_s <= 150


def test_open_loop_overload_builds_a_backlog_that_drains():
    model = PodModel(servers=1, service_rate=10.0)
    settings = SimSettings(hpa=None, manual=ManualScaling(replicas=((0.0, 2),)), initial_replicas=2)
    run = simulate(settings, steps("rps", "60:10,60:30,120:10"), model)
    p95 = run.columns["p95_ms"]
    assert p95[59] < 1000
    assert p95[119] > p95[70] > 1000  # the queue ages while the overload lasts
    assert p95[-1] < 1000  # and drains once capacity returns
    assert run.columns["in_flight"][119] > 500


def test_a_fixed_deployment_does_not_scale():
    settings = SimSettings(hpa=None, manual=ManualScaling(replicas=((0.0, 3),)), initial_replicas=3)
    run = simulate(settings, steps("users", "300:20"), reference_pod())
    assert set(run.columns["pods_ready"].tolist()) == {3.0}
    assert not [e for e in run.events if e.kind == "hpa_scale"]


def test_the_in_flight_policy_scales_on_requests_in_flight():
    settings = SimSettings(
        hpa=HpaSettings(metric="inflight", target=2.0, min_replicas=1, max_replicas=20),
        pool=NodePool(min_nodes=3, max_nodes=8),
        initial_replicas=1,
    )
    run = simulate(settings, steps("users", "900:60"), reference_pod())
    ready = run.columns["pods_ready"]
    assert ready[-1] > 3
    assert run.columns["in_flight"][-1] / ready[-1] < 2.5


def test_overrides_reach_the_settings():
    settings = apply_overrides(
        SimSettings(),
        [
            "hpa.tolerance=0.2",
            "pool.provision_s=90",
            "metrics.resolution_s=15",
            "autoscaler.scale_down_unneeded_s=300",
            "pool.system_cpu_m=900,0",
        ],
    )
    assert (settings.hpa.tolerance, settings.pool.provision_s, settings.metrics.resolution_s) == (
        0.2,
        90.0,
        15.0,
    )
    assert settings.autoscaler.scale_down_unneeded_s == 300.0 and settings.pool.system_cpu_m == (900, 0)


def test_a_shorter_unneeded_time_brings_the_nodes_back_sooner(reference_runs):
    experiment = build_preset("reference-cluster-autoscaler")
    faster = dataclasses.replace(
        experiment, settings=apply_overrides(experiment.settings, ["autoscaler.scale_down_unneeded_s=300"])
    )
    _, summary = run_experiment(faster)
    base = reference_runs["reference-cluster-autoscaler"][1].scale_down_s
    assert summary.scale_down_s == base - 300


def test_a_day_at_scale_runs_fast():
    """A smaller version of benchmarks/simulate_bench.py: 6 hours, up to 600 pods."""
    model = PodModel(servers=4, service_rate=20.0)
    settings = SimSettings(
        pool=NodePool(machine_type="e2-standard-16", min_nodes=5, max_nodes=60),
        hpa=HpaSettings(target=80, min_replicas=20, max_replicas=600),
    )
    shape = daily_shape(30_000, hours=6.0, peak_hour=3.0)
    started = time.perf_counter()
    run = simulate(settings, shape, model)
    elapsed = time.perf_counter() - started
    summary = summarize(run)
    assert len(run.columns["time_s"]) == 6 * 3600
    assert summary.max_pods_ready > 300 and summary.sla_violation_s < 60
    assert elapsed < 6.0, f"6 simulated hours took {elapsed:.1f} s (expected ~1 s)"


def cli(*args):
    return CliRunner().invoke(main, ["simulate", *args])


def test_cli_help_explains_every_option():
    result = cli("--help")
    assert result.exit_code == 0
    for option in (
        "--preset",
        "--profile",
        "--plan",
        "--max-pods",
        "--max-nodes",
        "--compare",
        "--behavior",
        "--metrics-resolution",
        "--node-provision-time",
        "--set",
        "--list-settings",
        "--out",
    ):
        assert option in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--preset", "nope"], "Unknown preset 'nope'"),
        (["--profile", "/does/not/exist.csv"], "Cannot read the profile"),
        ([], "Give the load as one of"),
        (["--preset", "reference-hpa", "--plan", "/does/not/exist.json"], "Cannot read the plan"),
        (["--preset", "reference-hpa", "--set", "hpa.bogus=1"], "unknown setting"),
        (["--preset", "reference-hpa", "--behavior", "{scaleUp: 3}"], "Cannot read behavior.scaleUp"),
        (["--daily", "100", "--policy", "inflight"], "needs --inflight-target"),
        (["--daily", "100", "--sla", "errors<1%"], "percentile bound"),
    ],
)
def test_cli_bad_input_is_one_clear_line(args, message, tmp_path):
    result = cli(*args, "--out", str(tmp_path))
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_bad_plan_and_profile_files(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({**synthetic_plan(PodModel(servers=1, service_rate=100.0)), "sizing": None}))
    result = cli("--preset", "reference-hpa", "--plan", str(plan), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "no sizing" in result.output
    # Not a plan at all: the schema names the first field missing, in one line.
    plan.write_text('{"sizing": null}')
    result = cli("--preset", "reference-hpa", "--plan", str(plan), "--out", str(tmp_path / "o"))
    assert (
        result.exit_code == 1
        and "is not a plan written by `mlscale plan`: sla: Field required" in result.output
    )
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    profile = tmp_path / "p.csv"
    profile.write_text("time_s,users\n0,abc\n")
    result = cli("--profile", str(profile), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "not numbers" in result.output


def test_cli_runs_a_profile_with_limits(tmp_path):
    profile = tmp_path / "p.csv"
    profile.write_text("time_s,users\n0,10\n300,90\n1200,5\n")
    out = tmp_path / "out"
    result = cli(
        "--profile",
        str(profile),
        "--duration",
        "2400",
        "--max-pods",
        "6",
        "--max-nodes",
        "4",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    summary = SimulationSummary.model_validate_json((out / "summary.json").read_text())
    assert summary.max_pods_ready <= 6 and summary.max_nodes <= 4
    assert summary.policy["manifest"]["maxReplicas"] == 6
    assert "simulated in" in result.output


def test_cli_compare_names_the_cheapest_policy_that_meets_the_sla(tmp_path):
    out = tmp_path / "cmp"
    result = cli(
        "--preset",
        "reference-cluster-autoscaler",
        "--max-nodes",
        "8",
        "--max-pods",
        "20",
        "--compare",
        "--allowed-violation",
        "20",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    comparison = json.loads((out / "compare.json").read_text())
    names = [row["name"] for row in comparison["policies"]]
    assert names == ["cpu-80", "cpu-60", "inflight", "cpu-70-tuned"]
    meeting = [row for row in comparison["policies"] if row["meets_sla"]]
    assert meeting and comparison["best"] == min(meeting, key=lambda r: r["cost"])["name"]
    assert "HPA values:" in result.output and (out / comparison["best"] / "report.html").exists()
    assert (out / "report.html").exists()
