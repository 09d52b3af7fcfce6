"""`mlscale plan`'s own flags: every bad value is a usage error naming the flag, checked
before anything is measured. No servers: the measuring is replaced by a tripwire."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import mlscale.capacity.planner as planner
import mlscale.capacity.pods as pods
from mlscale.capacity.settings import PlanRequest, model_check_line, plan_settings, resized_from
from mlscale.cli.main import main
from mlscale.errors import ConfigurationError
from mlscale.schemas.plan import CapacityFit, LoadModel
from tests.k8s.test_k8s import PLAN


@pytest.fixture
def two_cores_no_measuring(monkeypatch):
    """A 2-core machine with writable cgroups, whose measuring must never start."""
    measured = []
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr(pods, "quota_supported", lambda: True)
    monkeypatch.setattr(planner, "quota_supported", lambda: True)
    monkeypatch.setattr(planner, "_measure_sizes", lambda *args: measured.append(args))
    return measured


GOOD = ["-m", "models:/x/1", "--target-users", "100"]


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        # A size this machine cannot run, after sizes it can: refused before any of them.
        (["--cpus", "0.5,1,2"], "--cpus 2"),
        (["--cpus", "nan"], "--cpus"),
        (["--cpus", "inf"], "--cpus"),
        (["--cpus", "-1"], "--cpus"),
        (["--cpus", "lots"], "--cpus"),
        (["--workers-per-pod", ""], "--workers-per-pod"),
        (["--workers-per-pod", "0"], "--workers-per-pod"),
        (["--workers-per-pod", "1.5"], "--workers-per-pod"),
        (["--node-type", "e2-huge-9"], "--node-type 'e2-huge-9'"),
        # A 1-CPU pod cannot fit a 2-vCPU node whose DaemonSets take most of it.
        (["--node-type", "e2-standard-2", "--daemonset-cpu", "1500"], "--daemonset-cpu 1500"),
        (["--cpus", "0.5,1", "--node-type", "e2-standard-2", "--daemonset-cpu", "1000"], "--node-type"),
        (["--price-per-node-hour", "-1"], "--price-per-node-hour"),
        (["--price-per-node-hour", "nan"], "--price-per-node-hour"),
        (["--start-load", "inf"], "--start-load"),
        (["--start-load", "999999"], "--start-load"),
        (["--think-time", "nan"], "--think-time"),
    ],
)
def test_a_bad_plan_flag_is_a_usage_error_before_measuring(tmp_path, two_cores_no_measuring, args, flag):
    out = tmp_path / "plan"
    result = CliRunner().invoke(main, ["plan", *GOOD, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert flag in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert two_cores_no_measuring == [] and not out.exists()


@pytest.mark.parametrize("value", ["inf", "nan", "1e400", "-5", "0", "many"])
@pytest.mark.parametrize("flag", ["--target-users", "--target-rps"])
def test_a_target_must_be_a_finite_positive_number(tmp_path, two_cores_no_measuring, flag, value):
    result = CliRunner().invoke(
        main, ["plan", "-m", "models:/x/1", flag, value, "--out", str(tmp_path / "plan")]
    )
    assert result.exit_code == 2, result.output
    assert flag in result.output and "Traceback" not in result.output
    assert two_cores_no_measuring == []


@pytest.mark.parametrize("sizes", [["--cpus", "0.5,1"], ["--workers-per-pod", "1,2"]])
def test_a_running_server_is_one_size(tmp_path, two_cores_no_measuring, sizes):
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "--url",
            "http://127.0.0.1:9",
            "--target-users",
            "10",
            *sizes,
            "--out",
            str(tmp_path / "plan"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "--url measures the running server as it is, so it takes one size, not 2" in result.output
    assert two_cores_no_measuring == []


def test_good_flags_reach_the_measuring(tmp_path, two_cores_no_measuring, monkeypatch):
    """The tripwire itself: valid flags (fractional and whole sizes) get past the checks.
    The measuring is where the command stops (exit status 0): what a plan prints is
    tests/cli/test_cli.py's to check."""

    def measure_then_stop(*args):
        two_cores_no_measuring.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(planner, "_measure_sizes", measure_then_stop)
    result = CliRunner().invoke(
        main,
        [
            "plan",
            *GOOD,
            "--cpus",
            "250m,1",
            "--workers-per-pod",
            "1,2",
            "--price-per-node-hour",
            "0.2",
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert result.exit_code == 0, result.output
    (call,) = two_cores_no_measuring
    assert [(p.cpu, p.workers) for p in call[0].pods] == [(0.25, 1), (0.25, 2), (1.0, 1), (1.0, 2)]


# -- the flags as the planner's settings (mlscale.capacity.settings) ---------------------


def test_a_request_becomes_the_planners_settings():
    request = PlanRequest(
        sla="p95<1s", kind="users", target=100, out_dir="o", cpus="0.5,1", url="http://h:1/", quick=True
    )
    settings = plan_settings(request)
    assert (settings.url, settings.step_s, settings.precision, settings.max_steps) == (
        "http://h:1",
        4.0,
        0.25,
        12,
    )
    assert [spec.cpu for spec in settings.pods] == [0.5, 1.0]
    assert settings.signature_of is None
    full = plan_settings(
        PlanRequest(sla="p95<1s", kind="rps", target=5, out_dir="o", model_uri="m", from_signature=True)
    )
    assert (full.step_s, full.precision, full.max_steps, full.signature_of) == (20.0, 0.1, 16, "m")


def test_re_sizing_keeps_the_earlier_plans_sla_and_load_model():
    earlier = PLAN.model_copy(
        update={
            "sla": PLAN.sla.model_copy(update={"expr": "p99<500ms"}),
            "load_model": LoadModel(kind="users", think_time_s=2.0, mix="1:90,100:10"),
            "quick": False,
        }
    )
    asked = PlanRequest(sla="p95<1s", kind="users", target=10, out_dir="o", quick=True, rows_per_request=5)
    request = resized_from(asked, earlier)
    assert (request.sla, request.think_time_s, request.rows_per_request, request.mix, request.quick) == (
        "p99<500ms",
        2.0,
        1,
        "1:90,100:10",
        False,
    )
    assert (request.target, request.out_dir) == (10, "o")


def test_the_model_check_is_one_line():
    assert model_check_line(CapacityFit()) == "Model: not fitted."
    assert model_check_line(CapacityFit(note="one size")) == "Model: one size."
    size = CapacityFit(
        holdout_error=0.124,
        holdout=None,
        holdout_cpu=1.0,
        holdout_predicted_load=7000.4,
        holdout_measured_load=8000,
    )
    assert model_check_line(size) == (
        "Model check: 1 CPU predicted from the other sizes: 7000 against 8000 measured, 12.4 % hold-out error."
    )
    assert model_check_line(size.model_copy(update={"holdout": "step"})).startswith(
        "Model check: the 1-CPU capacity read without its nearest load step: 7000"
    )


def test_plan_drives_the_v2_endpoint_of_its_own_servers_or_of_a_named_url():
    own = plan_settings(
        PlanRequest(
            sla="p95<1s", kind="users", target=5, out_dir="o", model_uri="models:/wine/2", protocol="v2"
        )
    )
    assert (own.path, own.body_format, own.protocol) == ("/v2/models/wine/infer", "v2", "v2")
    running = plan_settings(
        PlanRequest(
            sla="p95<1s",
            kind="users",
            target=5,
            out_dir="o",
            url="http://h:1",
            protocol="v2",
            model_name="w q",
        )
    )
    assert (running.path, running.body_format) == ("/v2/models/w%20q/infer", "v2")
    mlflow = plan_settings(PlanRequest(sla="p95<1s", kind="users", target=5, out_dir="o", url="http://h:1"))
    assert (mlflow.path, mlflow.body_format, mlflow.protocol) == ("/invocations", "split", "mlflow")


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"url": "http://h:1", "protocol": "v2"}, "needs the model's name"),
        ({"model_uri": "m", "protocol": "v2", "model_name": "x"}, "--model-name is for --url"),
        ({"url": "http://h:1", "model_name": "x"}, "use it with --protocol v2"),
    ],
)
def test_plan_protocol_mistakes_name_the_flag(given, says):
    with pytest.raises(ConfigurationError, match=says):
        plan_settings(PlanRequest(sla="p95<1s", kind="users", target=5, out_dir="o", **given))


def test_re_sizing_keeps_the_protocol_measured():
    earlier = PLAN.model_copy(update={"load_model": LoadModel(kind="users", protocol="v2")})
    request = resized_from(PlanRequest(sla="p95<1s", kind="users", target=10, out_dir="o"), earlier)
    assert request.protocol == "v2"
    assert plan_settings(request).protocol == "v2"  # nothing measured: no name needed
