"""``mlscale serve --env-manager uv|virtualenv``: the model's own environment.

The decisions (python_env.yaml, requirements, the cache key, the interpreter,
the commands) are pure functions, tested here one by one; the cache is tested
with stand-in builds; and the wine model is served for real from environments
that uv and venv + pip build from PyPI, against the same model served locally.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from mlscale.cli.main import main
from mlscale.model import environment as env
from mlscale.model.envbuild import EnvironmentCache, find_interpreters, read_model_environment
from mlscale.model.environment import Interpreter, ModelEnvironmentError
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
CURRENT = ".".join(map(str, sys.version_info[:3]))
DECLARED = [
    "mlflow<4,>=3.10",
    "click>=8.1",
    "numpy>=1.26",
    "pandas>=2.1",
    "orjson>=3.9",
    'uvloop>=0.19; sys_platform != "win32"',
    "Prometheus_Client>=0.20",
    "locust>=2.30",
    "xgboost>=2.0",
    'pytest>=8; extra == "test"',
]


# --- python_env.yaml and requirements ---------------------------------------------------


def test_python_env_is_read_as_written():
    text = "python: 3.10\nbuild_dependencies:\n- pip==24.0\n- wheel\ndependencies:\n- -r requirements.txt\n"
    # 3.10 stays "3.10": a YAML float would read 3.1.
    assert env.parse_python_env(text) == ("3.10", ["pip==24.0", "wheel"], ["-r requirements.txt"])
    assert env.parse_python_env("python: 3.11.7\n") == ("3.11.7", [], [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dependencies: []\n", "does not say which Python"),
        ("python: three\n", "not a version such as 3.11.7"),
        ("python: 3.11\ndependencies: numpy\n", "must be lists"),
        ("python: [3.11\n", "not valid YAML"),
    ],
)
def test_a_broken_python_env_is_a_clear_error(text, message):
    with pytest.raises(ModelEnvironmentError, match=message):
        env.parse_python_env(text)


def test_requirement_lines_drop_comments_and_join_continuations():
    text = (
        "# pinned\nnumpy==2.0  # inline\n\npandas>=2 \\\n  ; python_version >= '3.9'\n"
        "git+https://example.com/repo.git#egg=thing\n"
    )
    assert env.requirement_lines(text) == [
        "numpy==2.0",
        "pandas>=2    ; python_version >= '3.9'",
        "git+https://example.com/repo.git#egg=thing",
    ]


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("numpy==2.0", "numpy"),
        ("Scikit_Learn>=1.3", "scikit-learn"),
        ("mlflow[extras]==3.1 ; python_version>'3'", "mlflow"),
        ("xgboost==3.2.0 --hash=sha256:abc", "xgboost"),
        ("thing @ https://example.com/t.whl", "thing"),
        ("-r requirements.txt", None),
        ("wheels/pkg-1.0-py3-none-any.whl", None),
        ("https://x/y.whl", None),
    ],
)
def test_requirement_names(line, name):
    assert env.requirement_name(line) == name


def test_included_files_and_model_files():
    assert env.included_file("-r requirements.txt") == "requirements.txt"
    assert env.included_file("--constraint=constraints.txt") == "constraints.txt"
    assert env.included_file("numpy") is None
    assert env.is_model_file("wheels/pkg-1.0-py3-none-any.whl")
    assert not any(map(env.is_model_file, ["numpy==2", "-r x.txt", "https://x/y.whl", "/abs/y.whl"]))


def test_the_models_pins_win_over_the_serving_requirements():
    serving = env.select_serving(DECLARED, {"mlflow", "numpy", "xgboost"})
    # The model's mlflow and numpy stay; load-test packages, flavours and extras never come in.
    assert serving == [
        "click>=8.1",
        "pandas>=2.1",
        "orjson>=3.9",
        'uvloop>=0.19; sys_platform != "win32"',
        "Prometheus_Client>=0.20",
    ]
    assert "mlflow<4,>=3.10" in env.select_serving(DECLARED, set())


def test_pins_outside_mlscales_ranges_are_noted():
    model = ["mlflow==2.9.0", "numpy==2.4.6", "xgboost==1.0", "-r requirements.txt"]
    notes = env.pin_conflicts(model, DECLARED)
    assert len(notes) == 1 and "mlflow==2.9.0" in notes[0] and "mlflow<4,>=3.10" in notes[0]


def test_servings_packages_are_the_server_images_but_the_flavours():
    lines = (ROOT / "docker" / "server-requirements.txt").read_text().splitlines()
    names = {env.requirement_name(line) for line in env.requirement_lines("\n".join(lines))}
    assert names - {"xgboost", "scikit-learn"} == set(env.SERVING_PACKAGES)


def test_a_python_mlscale_cannot_run_on_is_refused_with_what_to_do():
    message = env.python_support_error("models:/m/1", "3.9.18", ">=3.11")
    assert "Python 3.9.18" in message and "--env-manager local" in message and ">=3.11" in message
    assert env.python_support_error("m", "3.11", ">=3.11") is None
    assert env.python_support_error("m", "3.13.0", ">=3.11") is None
    assert env.python_support_error("m", "3.9", None) is None


def test_reading_a_local_model_follows_its_requirements_files(tmp_path):
    (tmp_path / "MLmodel").write_text(
        "flavors:\n  python_function:\n    env:\n      virtualenv: env/py.yaml\n"
    )
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / "py.yaml").write_text(
        "python: 3.11.7\nbuild_dependencies: [pip]\ndependencies: ['-r env/reqs.txt', '-c env/pins.txt']\n"
    )
    (tmp_path / "env" / "reqs.txt").write_text("numpy==2.0\n-r more.txt\n")
    (tmp_path / "env" / "more.txt").write_text("pandas\nwheels/thing-1.0-py3-none-any.whl\n")
    (tmp_path / "env" / "pins.txt").write_text("numpy<3\n")
    model = read_model_environment(str(tmp_path), str(tmp_path / "work"))
    assert model.python == "3.11.7" and model.requirements == ("-r env/reqs.txt", "-c env/pins.txt")
    assert set(model.files) == {"env/reqs.txt", "env/more.txt", "env/pins.txt"}
    assert model.names == {"pip", "numpy", "pandas"} and model.needs_model_files


def test_a_model_without_python_env_is_refused(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(ModelEnvironmentError, match=r"no python_env\.yaml .* --env-manager local"):
        read_model_environment(str(tmp_path), str(tmp_path / "work"))


# --- the cache key -------------------------------------------------------------------------


def test_the_cache_key_covers_every_input():
    spec = env.EnvironmentSpec(
        manager="uv",
        python="3.11.7",
        requirements=("-r requirements.txt",),
        files={"requirements.txt": "numpy==2.0\n"},
        serving=("click>=8.1",),
        mlscale_dir="/src/mlscale",
    )
    assert spec.key == env.EnvironmentSpec(**vars(spec)).key  # stable
    assert re.fullmatch(r"uv-py3\.11\.7-[0-9a-f]{16}", spec.name)
    changed = [
        {"manager": "virtualenv"},
        {"python": "3.11.8"},
        {"requirements": ("numpy",)},
        {"files": {"requirements.txt": "numpy==2.1\n"}},
        {"serving": ("click>=8.2",)},
        {"mlscale_dir": "/elsewhere/mlscale"},
    ]
    keys = {env.EnvironmentSpec(**{**vars(spec), **change}).key for change in changed}
    assert len(keys) == len(changed) and spec.key not in keys


def test_the_cache_folder(tmp_path):
    assert env.cache_root({"MLSCALE_ENV_CACHE": str(tmp_path)}) == str(tmp_path)
    assert env.cache_root({"XDG_CACHE_HOME": "/c"}) == "/c/mlscale/envs"
    assert env.cache_root({}) == os.path.expanduser("~/.cache/mlscale/envs")


# --- interpreters ----------------------------------------------------------------------------


FOUND = [
    Interpreter("/usr/bin/python3.11", (3, 11, 2), has_venv=False),
    Interpreter("/p/3.11.4", (3, 11, 4)),
    Interpreter("/p/3.11.7", (3, 11, 7)),
    Interpreter("/q/3.11.7", (3, 11, 7)),
    Interpreter("/p/3.12", (3, 12, 1)),
]


@pytest.mark.parametrize(
    ("requested", "need_venv", "chosen"),
    [
        ("3.11.7", True, "/p/3.11.7"),
        ("3.11.2", False, "/usr/bin/python3.11"),
        ("3.11.2", True, "/p/3.11.7"),
        ("3.11", True, "/p/3.11.7"),
        ("3.12.9", True, "/p/3.12"),
        ("3.10.1", False, None),
    ],
)
def test_the_exact_python_is_chosen_else_the_newest_of_its_minor(requested, need_venv, chosen):
    found = env.choose_interpreter(requested, FOUND, need_venv=need_venv)
    assert (found.path if found else None) == chosen


def test_a_missing_python_says_which_and_what_to_do():
    message = env.interpreter_missing_message("models:/m/1", "3.10.4", "uv", [])
    assert "Python 3.10.4" in message and "not installed on this machine" in message
    assert "pyenv install 3.10" in message and "--env-manager local" in message
    venv_only = env.interpreter_missing_message("m", "3.11.2", "virtualenv", FOUND[:1])
    assert "python3.11-venv" in venv_only


@pytest.mark.slow
def test_this_python_is_found():
    found = find_interpreters(sys.version_info[:2], os.environ)
    assert any(
        i.version == sys.version_info[:3] and os.path.samefile(i.path, sys._base_executable) for i in found
    )


# --- commands --------------------------------------------------------------------------------


def test_the_install_commands_of_each_manager():
    assert env.create_command("uv", "/py", "/env", uv="/bin/uv") == [
        "/bin/uv",
        "venv",
        "--quiet",
        "--python",
        "/py",
        "/env",
    ]
    assert env.create_command("virtualenv", "/py", "/env") == ["/py", "-m", "venv", "/env"]
    assert env.install_commands("uv", "/env/bin/python", "r.txt", ["pip==24"], uv="uv") == [
        [
            "uv",
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",
            "--python",
            "/env/bin/python",
            "pip==24",
            "-r",
            "r.txt",
        ]
    ]
    pip = ["/env/bin/python", "-m", "pip", "install", "--quiet"]
    assert env.install_commands("virtualenv", "/env/bin/python", "r.txt", ["pip==24"]) == [
        [*pip, "pip==24"],
        [*pip, "-r", "r.txt"],
    ]
    assert env.install_commands("virtualenv", "/env/bin/python", "r.txt") == [[*pip, "-r", "r.txt"]]
    assert env.requirements_text(["-r requirements.txt"], ["click>=8.1"]).splitlines()[1:] == [
        "-r requirements.txt",
        "click>=8.1",
    ]


def test_uv_gets_pips_settings_unless_it_has_its_own():
    pip = {
        "PIP_CERT": "/ca.pem",
        "PIP_FIND_LINKS": "/w1 /w2",
        "PIP_INDEX_URL": "https://i/simple",
        "PIP_EXTRA_INDEX_URL": "https://a/simple https://b/simple",
    }
    uv = env.uv_environment(pip)
    assert (uv["SSL_CERT_FILE"], uv["UV_FIND_LINKS"], uv["UV_DEFAULT_INDEX"], uv["UV_INDEX"]) == (
        "/ca.pem",
        "/w1,/w2",
        "https://i/simple",
        "https://a/simple https://b/simple",
    )
    assert uv["UV_PYTHON_DOWNLOADS"] == "never"
    own = env.uv_environment({**pip, "SSL_CERT_FILE": "/mine.pem", "UV_INDEX_URL": "https://u/simple"})
    assert own["SSL_CERT_FILE"] == "/mine.pem" and "UV_DEFAULT_INDEX" not in own


def test_the_server_gets_the_same_arguments_then_local():
    argv = ["/bin/mlscale", "serve", "-m", "models:/m/1", "--env-manager=uv", "-w", "2", "--drain-delay", "5"]
    assert env.server_argv("/env/bin/python", argv) == [
        "/env/bin/python",
        "-m",
        "mlscale",
        "serve",
        "-m",
        "models:/m/1",
        "--env-manager=uv",
        "-w",
        "2",
        "--drain-delay",
        "5",
        "--env-manager",
        "local",
    ]
    with pytest.raises(ModelEnvironmentError, match="run it as a command"):
        env.server_argv("/env/bin/python", ["pytest", "-k", "x"])


def test_the_last_env_manager_wins_so_the_child_serves_locally(monkeypatch):
    import mlscale.serving.server as server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda settings: seen.setdefault("s", settings) and 0)
    result = CliRunner().invoke(main, ["serve", "-m", "m", "--env-manager", "uv", "--env-manager", "local"])
    assert result.exit_code == 0, result.output
    assert seen["s"].model_uri == "m"


def test_no_conda_contradicting_an_env_manager_is_a_usage_error():
    result = CliRunner().invoke(main, ["serve", "-m", "m", "--no-conda", "--env-manager", "uv"])
    assert result.exit_code == 2 and "--no-conda means --env-manager local" in result.output


def test_serve_help_documents_the_env_managers():
    output = CliRunner().invoke(main, ["serve", "--help"]).output
    assert all(word in output for word in ("uv", "virtualenv", "python_env.yaml", "MLSCALE_ENV_CACHE"))


# --- the cache: built once, published complete -----------------------------------------------


def _fake_fill(calls: list):
    def fill(env_dir: str) -> None:
        calls.append(env_dir)
        os.makedirs(os.path.join(env_dir, "bin"))
        os.symlink(sys.executable, os.path.join(env_dir, "bin", "python"))

    return fill


def test_an_environment_is_built_once_then_found(tmp_path):
    cache, calls = EnvironmentCache(str(tmp_path)), []
    assert cache.lookup("e") is None
    built = cache.build("e", _fake_fill(calls), say=print)
    assert cache.lookup("e") == built and os.path.islink(tmp_path / "e")
    assert cache.build("e", _fake_fill(calls), say=print) == built and len(calls) == 1


def test_a_half_built_environment_is_never_used_and_is_cleaned_up(tmp_path):
    cache, calls = EnvironmentCache(str(tmp_path)), []
    # A build killed before it was published: complete-looking, but no link.
    leftover = tmp_path / ".build" / "e-killed"
    _fake_fill([])(str(leftover))
    assert cache.lookup("e") is None
    built = cache.build("e", _fake_fill(calls), say=print)
    assert calls == [built] and not leftover.exists()


def test_a_failed_build_leaves_nothing(tmp_path):
    cache = EnvironmentCache(str(tmp_path))

    def fail(env_dir: str) -> None:
        _fake_fill([])(env_dir)
        raise ModelEnvironmentError("pip failed")

    with pytest.raises(ModelEnvironmentError):
        cache.build("e", fail, say=print)
    assert cache.lookup("e") is None and os.listdir(tmp_path / ".build") == ["e.lock"]


def test_a_second_builder_waits_for_the_first_and_uses_its_environment(tmp_path):
    import threading

    cache, said, results, calls = EnvironmentCache(str(tmp_path)), [], [], []
    building, release = threading.Event(), threading.Event()

    def slow_fill(env_dir: str) -> None:
        building.set()
        release.wait(10)
        _fake_fill([])(env_dir)

    first = threading.Thread(target=lambda: results.append(cache.build("e", slow_fill, say=said.append)))
    first.start()
    assert building.wait(10)
    second = threading.Thread(
        target=lambda: results.append(cache.build("e", _fake_fill(calls), say=said.append))
    )
    second.start()
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    first.join(10), second.join(10)
    assert said == ["Another mlscale is building this environment; waiting for it."]
    assert len(results) == 2 and results[0] == results[1] and calls == []


def test_an_environment_whose_python_is_gone_is_rebuilt(tmp_path):
    cache, calls = EnvironmentCache(str(tmp_path)), []
    first = cache.build("e", _fake_fill(calls), say=print)
    os.remove(os.path.join(first, "bin", "python"))  # the base interpreter was uninstalled
    assert cache.lookup("e") is None
    second = cache.build("e", _fake_fill(calls), say=print)
    assert second != first and cache.lookup("e") == second and not os.path.exists(first)


# --- refused before anything is built ----------------------------------------------------------


def _fake_model(folder: Path, python: str, requirements: str = "numpy\n") -> str:
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors:\n  python_function:\n    loader_module: mlflow.sklearn\n")
    (folder / "python_env.yaml").write_text(
        f"python: {python}\nbuild_dependencies: []\ndependencies:\n- -r requirements.txt\n"
    )
    (folder / "requirements.txt").write_text(requirements)
    return str(folder)


def _serve(*args: str, cache: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlscale", "serve", "-p", "0", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, env.CACHE_ENV: str(cache)},
    )


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["uv", "virtualenv"])
def test_a_python_39_model_gets_a_clear_error(tmp_path, manager):
    model = _fake_model(tmp_path / "model", "3.9.18")
    run = _serve("-m", model, "--env-manager", manager, cache=tmp_path / "envs")
    assert run.returncode == 1, run.stderr
    assert "Python 3.9.18" in run.stderr and "--env-manager local" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_python_missing_here_gets_a_clear_error(tmp_path):
    model = _fake_model(tmp_path / "model", "3.99.1")
    run = _serve("-m", model, "--env-manager", "uv", cache=tmp_path / "envs")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "Python 3.99 is not installed on this machine" in run.stderr
    assert "python3.99" in run.stderr and "--env-manager local" in run.stderr


# --- real environments from PyPI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pypi():
    index = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"
    try:  # one project's page: the index's own page is tens of megabytes
        urllib.request.urlopen(f"{index.rstrip('/')}/pip/", timeout=10).close()
    except OSError as exc:
        pytest.skip(f"building an environment needs the package index ({index}): {exc}")


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("envs")


def _wine_body(count: int = 8) -> dict:
    from mlscale.examples.wine import feature_frame

    frame = feature_frame().sample(count, random_state=3)
    return {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}


def _start(model_uri: str, *args: str, cache: Path) -> tuple[ServerProcess, float, list]:
    started = time.monotonic()
    server = ServerProcess("-m", model_uri, *args, env={env.CACHE_ENV: str(cache)})
    server.wait_ready(timeout=600)
    ready_s = time.monotonic() - started
    answer = httpx.post(f"{server.url}/invocations", json=_wine_body(), timeout=30)
    assert answer.status_code == 200, answer.text
    return server, ready_s, answer.json()["predictions"]


@pytest.fixture(scope="module")
def local_predictions(wine_registry, env_cache):
    server, _, predictions = _start(wine_registry["model_uri"], cache=env_cache)
    assert server.stop() == 0
    return predictions


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["uv", "virtualenv"])
def test_the_model_serves_from_its_environment_like_locally(
    manager, wine_registry, local_predictions, env_cache, pypi
):
    """Built once (from the registry URI's python_env.yaml and requirements.txt), the
    environment answers as the local one does; the second start finds it in the cache
    and installs nothing; SIGTERM still drains the server, which replaced the command."""
    uri = wine_registry["model_uri"]
    server, first_s, predictions = _start(uri, "--env-manager", manager, cache=env_cache)
    assert predictions == local_predictions
    assert "Creating the environment for Python" in server.output and "Installing" in server.output
    # The same process became the server, run by the environment's Python.
    import psutil

    assert psutil.Process(server.pid).cmdline()[0].startswith(str(env_cache))
    assert server.stop() == 0, server.output  # SIGTERM reached it: a graceful exit
    built = re.search(r"Environment ready in ([\d.]+) s", server.output).group(1)

    server, second_s, predictions = _start(uri, "--env-manager", manager, cache=env_cache)
    assert predictions == local_predictions
    assert "Using the cached environment" in server.output
    assert "Creating" not in server.output and "Installing" not in server.output
    assert server.stop() == 0
    print(
        f"\n{manager}: environment built in {built} s, first start ready in {first_s:.1f} s; "
        f"cached start ready in {second_s:.1f} s"
    )
    envs = [e for e in os.listdir(env_cache) if e.startswith(f"{manager}-py{CURRENT}-")]
    assert len(envs) == 1


@pytest.mark.slow
def test_a_failed_install_caches_nothing(tmp_path, pypi):
    model = _fake_model(tmp_path / "model", CURRENT, "mlscale-no-such-package-3f9a==1.0\n")
    run = _serve("-m", model, "--env-manager", "uv", cache=tmp_path / "envs")
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "Installing the model's requirements failed" in run.stderr and "Nothing was cached" in run.stderr
    assert sorted(os.listdir(tmp_path / "envs")) == [".build"]
    assert [e for e in os.listdir(tmp_path / "envs" / ".build") if not e.endswith(".lock")] == []
