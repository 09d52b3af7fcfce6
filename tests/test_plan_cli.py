"""`mlscale plan`'s own flags: every bad value is a usage error naming the flag, checked
before anything is measured. No servers: the measuring is replaced by a tripwire."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import mlscale.capacity.planner as planner
import mlscale.capacity.pods as pods
from mlscale.cli.main import main


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
    tests/test_cli.py's to check."""

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
