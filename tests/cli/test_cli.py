"""The command line: what a user types, what they read, and the exit status."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

import mlscale.serving.server as server
from mlscale.cli.main import main
from mlscale.errors import ConfigurationError, MlscaleError
from mlscale.k8s.validate import RenderError
from mlscale.protocol.errors import Overloaded, PayloadTooLarge, ServingError


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("train", "serve", "loadtest", "plan", "k8s", "simulate", "demo"):
        assert command in result.output


def test_serve_help_documents_the_mlflow_flags():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    for flag in (
        "-m, --model-uri",
        "-h, --host",
        "-p, --port",
        "-w, --workers",
        "-t, --timeout",
        "MLFLOW_MODELS_WORKERS",
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT",
        "--no-conda",
    ):
        assert flag in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env-manager", "conda"], "--env-manager conda is not supported"),
        (["--max-body-size", "lots"], "'lots' is not a size"),
        (["--port", "70000"], "70000 is not in the range"),
        (["--workers", "0"], "0 is not in the range"),
        (["--timeout", "0"], "Invalid value for '-t' / '--timeout'"),
    ],
)
def test_bad_serve_flags_are_usage_errors(args, message):
    result = CliRunner().invoke(main, ["serve", "-m", "models:/x/1", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_serve_requires_a_model():
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "Missing option '-m' / '--model-uri'" in result.output


def test_mlflow_environment_variables_set_the_defaults(monkeypatch):
    """MLFLOW_MODELS_WORKERS and friends reach the settings, as in `mlflow models serve`."""

    seen = {}
    monkeypatch.setattr(server, "serve", lambda settings: seen.setdefault("s", settings) and 0)
    env = {
        "MLFLOW_MODELS_WORKERS": "3",
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "7",
        "MLFLOW_PORT": "6001",
        "MLFLOW_HOST": "0.0.0.0",
    }
    result = CliRunner().invoke(main, ["serve", "-m", "m"], env=env)
    assert result.exit_code == 0, result.output
    settings = seen["s"]
    assert (settings.workers, settings.timeout_s, settings.port, settings.host) == (3, 7, 6001, "0.0.0.0")


def test_serve_model_name_reaches_the_settings_and_help_documents_v2(monkeypatch):
    seen = {}
    monkeypatch.setattr(server, "serve", lambda settings: seen.setdefault("s", settings) and 0)
    result = CliRunner().invoke(main, ["serve", "-m", "models:/wine/2", "--model-name", "fraud"])
    assert result.exit_code == 0, result.output
    assert seen["s"].v2_model_name == "fraud" and seen["s"].v2_model_version == "2"
    seen.clear()
    CliRunner().invoke(main, ["serve", "-m", "models:/wine/2"], env={"MLSCALE_MODEL_NAME": ""})
    assert seen["s"].v2_model_name == "wine"
    help_text = CliRunner().invoke(main, ["serve", "--help"]).output
    for text in ("--model-name", "/v2/models/NAME/infer", "/v2/health/ready", "MLSCALE_MODEL_NAME"):
        assert text in help_text


@pytest.mark.slow
def test_train_prints_the_registered_uri_last(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = subprocess.run(
        [sys.executable, "-m", "mlscale", "train", "--tracking-uri", uri, "--name", "wine-cli"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "models:/wine-cli/1"
    assert "rmse=" in run.stderr

    # heavy: mlflow (1.5 s) only for the test that reads the registry back
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    version = client.get_model_version("wine-cli", "1")
    logged = client.get_run(version.run_id).data
    assert set(logged.metrics) == {"rmse", "mae", "r2"}
    assert logged.params["max_depth"] == "10" and logged.params["random_state"] == "42"


def test_train_rejects_data_without_a_target(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(
        main, ["train", "--data", str(bad), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    )
    assert result.exit_code == 1
    assert "has no 'quality' column" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Say how much load"),
        (["--users", "5", "--rate", "10"], "not both"),
        (["--steps", "60"], "Cannot read the step '60'"),
        (["--users", "5", "--sla", "p95>1s"], "Cannot read the SLA term 'p95>1s'"),
        (["--users", "5", "--mix", "1:x"], "Cannot read '1:x' in --mix"),
        (["--spike", "1:2"], "--spike takes BASE:PEAK:AT:WIDTH"),
    ],
)
def test_bad_loadtest_flags_say_what_to_do(args, message, tmp_path):
    result = CliRunner().invoke(
        main, ["loadtest", "--host", "http://127.0.0.1:9", "--out", str(tmp_path), *args]
    )
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_loadtest_needs_a_url():
    result = CliRunner().invoke(main, ["loadtest", "--host", "localhost:5000", "--users", "1"])
    assert result.exit_code == 1
    assert "--host must be a URL such as http://127.0.0.1:5000" in result.output


def _earlier_plan(tmp_path):
    # heavy: test_capacity imports the planner and its fixtures (1 s)
    from tests.capacity.test_capacity import _measurement

    plan = {
        "sla": {"expr": "p95<1s", "percentile": "p95", "limit_ms": 1000.0},
        "load_model": {"kind": "users", "think_time_s": 1.0},
        "quick": False,
        "measurements": [_measurement(c) for c in (0.25, 0.5, 1.0)],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def test_a_plan_is_resized_from_an_earlier_one_without_measuring(tmp_path):
    out = tmp_path / "resized"
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "--from-plan",
            str(_earlier_plan(tmp_path)),
            "--target-users",
            "2000",
            "--node-type",
            "e2-standard-8",
            "--price-per-node-hour",
            "0.27",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    sizing = plan["sizing"]
    assert "2000 concurrent users at p95 < 1 s need" in result.output
    assert sizing["node_type"] == "e2-standard-8" and sizing["target_users"] == 2000
    assert sizing["monthly_cost"] == pytest.approx(sizing["nodes"] * 0.27 * 730)
    assert plan["model"]["holdout_error"] is not None  # refitted from the three sizes


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-rps", "10"], "measured users: give --target-users"),
        (["--target-users", "10", "--url", "http://127.0.0.1:9"], "measures nothing"),
    ],
)
def test_bad_re_sizing_says_what_to_do(tmp_path, args, message):
    result = CliRunner().invoke(
        main, ["plan", "--from-plan", str(_earlier_plan(tmp_path)), *args, "--out", str(tmp_path / "out")]
    )
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("content", "message"), [(None, "Cannot read the plan"), ('{"a": 1}', "is not a plan written by")]
)
def test_a_bad_earlier_plan_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    result = CliRunner().invoke(main, ["plan", "--from-plan", str(path), "--target-users", "5"])
    assert result.exit_code == 1 and message in result.output, result.output


# -- one error tree, translated in one place ---------------------------------------------


def test_every_project_error_is_an_mlscale_error():
    for error in (ConfigurationError, RenderError, ServingError, PayloadTooLarge, Overloaded):
        assert issubclass(error, MlscaleError)
    # Still the server's error, answered as before: status, MLflow's error JSON, headers.
    overloaded = Overloaded("the queue is full", retry_after_s=2)
    assert (overloaded.status, overloaded.exit_code) == (503, 1)
    assert json.loads(overloaded.body) == {
        "error_code": "TEMPORARILY_UNAVAILABLE",
        "message": "the queue is full",
    }
    assert overloaded.extra_headers == [(b"retry-after", b"2")]


def test_an_mlscale_error_becomes_its_message_and_its_exit_code():
    class Unreachable(MlscaleError):
        exit_code = 3

    @click.command("fails")
    @click.option("--code", type=int, default=None)
    def fails(code: int | None) -> None:
        raise Unreachable("the thing is unreachable: start it") if code else MlscaleError("plain")

    main.add_command(fails)
    try:
        result = CliRunner().invoke(main, ["fails", "--code", "3"])
        assert (result.exit_code, result.output) == (3, "Error: the thing is unreachable: start it\n")
        result = CliRunner().invoke(main, ["fails"])
        assert (result.exit_code, result.output) == (1, "Error: plain\n")
    finally:
        main.commands.pop("fails")
