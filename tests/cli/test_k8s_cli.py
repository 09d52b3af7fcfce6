"""`mlscale k8s render`'s targets and policies at the command line: what a user types,
what they read, and that the in-flight target written is the one `mlscale simulate` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from mlscale.cli.main import main
from mlscale.k8s.inflight import threshold_text
from mlscale.simulate.inflight import plan_inflight_target
from tests.k8s.test_kserve import PLAN, measured_plan


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def plan_file(tmp_path) -> Path:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(measured_plan()))
    return path


def test_render_help_explains_targets_and_policies():
    result = cli("k8s", "render", "--help")
    assert result.exit_code == 0
    for text in (
        "--target [kustomize|kserve]",
        "--policy [cpu|inflight]",
        "--inflight-via [keda|prometheus-adapter]",
        "--storage-uri",
        "--prometheus-url",
        "/mnt/models",
        "80 % of its capacity at the SLA",
    ):
        assert text in " ".join(result.output.split()), text


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--inflight-via", "keda"],
            "--inflight-via chooses how to scale on requests in flight: add --policy",
        ),
        (["--prometheus-url", "http://p"], "--prometheus-url is for --policy inflight"),
        (["--target", "kserve", "--overlay", "local"], "not an overlay of deploy/: drop --overlay local"),
        (["--target", "kserve", "--model-uri", "models:/m/1"], "serves the model at --storage-uri"),
        (
            ["--target", "kserve", "--policy", "inflight", "--inflight-via", "prometheus-adapter"],
            "--inflight-via prometheus-adapter is for the kustomize target",
        ),
        (["--storage-uri", "gs://b/m"], "--storage-uri and --name are for --target kserve"),
        (["--target", "helm"], "Invalid value for '--target'"),
    ],
)
def test_render_refuses_options_that_do_not_go_together(tmp_path, plan_file, args, message):
    result = cli("k8s", "render", "--plan", str(plan_file), "--out", str(tmp_path / "out"), *args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_inflight_on_a_plan_without_steps_is_a_clear_error(tmp_path, plan_file):
    data = measured_plan()
    data["measurements"][0]["steps"] = []
    plan_file.write_text(json.dumps(data))
    result = cli(
        "k8s", "render", "--plan", str(plan_file), "--out", str(tmp_path / "o"), "--policy", "inflight"
    )
    assert result.exit_code != 0
    assert "no valid step" in result.output and "Traceback" not in result.output


def test_the_rendered_threshold_is_the_target_simulate_runs(tmp_path, plan_file):
    """One number: the ScaledObject's threshold, the KServe metric's value and the HPA
    target `mlscale simulate --policy inflight` runs with for the same plan."""
    out = tmp_path / "keda"
    result = cli("k8s", "render", "--plan", str(plan_file), "--out", str(out), "--policy", "inflight")
    assert result.exit_code == 0, result.output
    threshold = yaml.safe_load((out / "scaledobject.yaml").read_text())["spec"]["triggers"][0]["metadata"][
        "threshold"
    ]
    kserve = tmp_path / "kserve"
    result = cli(
        "k8s",
        "render",
        "--plan",
        str(plan_file),
        "--out",
        str(kserve),
        "--target",
        "kserve",
        "--policy",
        "inflight",
    )
    assert result.exit_code == 0, result.output
    isvc = yaml.safe_load((kserve / "inferenceservice.yaml").read_text())
    value = isvc["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["target"]["value"]

    profile = tmp_path / "profile.csv"
    profile.write_text("time_s,users\n0,50\n300,400\n")
    sim = tmp_path / "sim"
    result = cli(
        "simulate", "--plan", str(plan_file), "--profile", str(profile), "--duration", "600",
        "--policy", "inflight", "--out", str(sim),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    policy = json.loads((sim / "summary.json").read_text())["policy"]
    assert policy["metric"] == "inflight"
    assert f"at {policy['target']:g} requests in flight per pod" in result.output  # said, not only written
    assert (
        threshold == value == threshold_text(policy["target"]) == threshold_text(plan_inflight_target(PLAN))
    )
    assert policy["manifest"]["metrics"][0]["external"]["target"]["averageValue"] == threshold
    assert f"{policy['target']:g} requests in flight per pod" in " ".join(
        cli(
            "k8s", "render", "--plan", str(plan_file), "--out", str(out), "--policy", "inflight"
        ).output.split()
    )


def test_simulate_inflight_without_a_target_or_a_plan_says_what_to_give(tmp_path):
    result = cli("simulate", "--daily", "100", "--policy", "inflight", "--out", str(tmp_path / "o"))
    assert result.exit_code != 0
    assert "--policy inflight needs --inflight-target" in result.output and "or a --plan" in result.output
