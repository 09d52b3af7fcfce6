"""``mlscale build-image``: the requirements and Dockerfile it writes, its errors, and
real images of real models, run with no network as the manifests run them.

The pure parts (requirement rewriting, the Python check, pip's and uv's failure
messages, tags) need no engine. The images are built once per session, and
across sessions once per content: the models are saved into pytest's cache
folder (keyed by the code that makes them), so a rerun downloads the same bytes
and `build-image` finds the image by its content tag instead of building.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from mlscale.cli.build_image import DEFAULT_ENV_MANAGER, ENV_MANAGERS
from mlscale.cli.main import main
from mlscale.containers import bake
from mlscale.containers.engine import ca_bundle
from mlscale.errors import ConfigurationError, ModelLoadError
from tests.support.containers import container, engine_or_skip

ROOT = Path(__file__).resolve().parents[2]
SERVING = bake.serving_requirements()


HERE = {"mlflow": "3.17.2", "uvicorn": "0.54.0", "orjson": "3.13.0"}


def _rewrite(*lines: str) -> bake.Requirements:
    return bake.rewrite_requirements(list(lines), SERVING, here=HERE)


# -- requirements ------------------------------------------------------------------


def test_mlflow_becomes_skinny_and_xgboost_its_cpu_build():
    rewritten = _rewrite(
        "mlflow==3.17.2",
        "xgboost==3.2.0",
        "scikit-learn==1.9.1",
        "mlflow[gateway]==3.17.2",
        'xgboost>=2.0; sys_platform == "linux"',
    )
    assert rewritten.model == (
        "mlflow-skinny==3.17.2",
        "xgboost-cpu==3.2.0",
        "scikit-learn==1.9.1",
        "mlflow-skinny[gateway]==3.17.2",
        'xgboost-cpu>=2.0; sys_platform == "linux"',
    )
    assert any("xgboost==3.2.0 -> xgboost-cpu==3.2.0" in note for note in rewritten.notes)


def test_xgboost_stays_where_no_cpu_build_of_that_version_exists():
    # xgboost-cpu starts at 2.1.0; older xgboost had no CUDA dependency anyway.
    assert _rewrite("xgboost==1.7.6", "xgboost<2", "xgboost>=1.7,<2.1").model == (
        "xgboost==1.7.6",
        "xgboost<2",
        "xgboost<2.1,>=1.7",
    )
    assert _rewrite("xgboost~=2.0").model == ("xgboost-cpu~=2.0",)


def test_cuda_libraries_are_left_out_of_a_cpu_image():
    rewritten = _rewrite("nvidia-nccl-cu12==2.23.4", "nvidia-cublas-cu11", "numpy==2.4.6")
    assert rewritten.model == ("numpy==2.4.6",)
    assert len([n for n in rewritten.notes if "CUDA library" in n]) == 2


def test_an_mlflow_pin_outside_mlscales_range_gets_the_version_here():
    rewritten = _rewrite("mlflow==2.17.0", "numpy==1.26.4")
    assert rewritten.model == ("mlflow-skinny==3.17.2", "numpy==1.26.4")
    assert any("outside the range mlscale serves with" in note for note in rewritten.notes)


def test_lines_that_are_not_requirements_are_kept_and_their_files_noted():
    rewritten = _rewrite(
        "-c constraints.txt",
        "--extra-index-url https://example.org/simple",
        "wheels/mypkg-1.0-py3-none-any.whl",
        "https://example.org/x.whl",
    )
    assert rewritten.model == (
        "-c constraints.txt",
        "--extra-index-url https://example.org/simple",
        "wheels/mypkg-1.0-py3-none-any.whl",
        "https://example.org/x.whl",
    )
    assert rewritten.files == ("constraints.txt", "wheels/mypkg-1.0-py3-none-any.whl")


def test_serving_requirements_are_mlscales_without_the_flavours_or_pyarrow():
    """The image's own list is docker/server-requirements.txt without what the model
    brings (its flavours) and without pyarrow (only Parquet bodies use it)."""
    listed = set()
    for line in (ROOT / "docker" / "server-requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            listed.add(Requirement(line).name)
    assert set(bake.SERVING_DISTRIBUTIONS) == listed - {"xgboost", "scikit-learn", "pyarrow"}
    # The ranges are pyproject's, through the package metadata.
    assert str(SERVING["mlflow"].specifier) == str(SpecifierSet(">=3.10,<4"))
    lines = _rewrite("mlflow==3.17.2").serving
    assert lines[0] == "mlflow-skinny<4,>=3.10"  # the model pins it; pip merges the two
    assert "uvicorn==0.54.0" in lines and "orjson==3.13.0" in lines  # leaves pinned to here
    assert "numpy>=1.26" in lines and not any(line.startswith(("pyarrow", "mlflow==")) for line in lines)
    # A model that names none of them: MLflow as here; one that names a leaf: its own pin.
    lines = _rewrite("numpy", "uvicorn==0.40.0").serving
    assert lines[0] == "mlflow-skinny==3.17.2" and "uvicorn<1,>=0.34" not in lines
    assert [line for line in lines if line.startswith("uvicorn")] == [str(SERVING["uvicorn"])]
    assert set(bake.versions_here()) <= {*bake.PINNED_FROM_HERE, "mlflow"}


def test_requirement_lines_come_from_requirements_python_env_or_conda(tmp_path):
    (tmp_path / "requirements.txt").write_text("# comment\nmlflow==3.17.2  # pinned\n\n-r more.txt\n")
    (tmp_path / "more.txt").write_text("numpy==2.4.6\n")
    assert bake.read_requirement_lines(tmp_path) == ["mlflow==3.17.2", "numpy==2.4.6"]
    (tmp_path / "requirements.txt").unlink()
    (tmp_path / "python_env.yaml").write_text("python: 3.11.7\ndependencies:\n- pandas==3.1.1\n")
    assert bake.read_requirement_lines(tmp_path) == ["pandas==3.1.1"]
    (tmp_path / "python_env.yaml").unlink()
    (tmp_path / "conda.yaml").write_text("dependencies:\n- python=3.11\n- pip:\n  - scipy==1.17.1\n")
    assert bake.read_requirement_lines(tmp_path) == ["scipy==1.17.1"]
    (tmp_path / "conda.yaml").unlink()
    with pytest.raises(ModelLoadError, match="records no requirements"):
        bake.read_requirement_lines(tmp_path)


# -- the Python version, tags, the Dockerfile -----------------------------------------


def test_a_base_of_another_python_minor_is_refused_with_the_base_to_use():
    bake.check_python("3.11.7", "3.11.2", "b")  # micro versions may differ
    bake.check_python(None, "3.11.2", "b")  # a model that does not say: no check
    with pytest.raises(
        ConfigurationError,
        match=r"saved with Python 3\.12\.1, but the base image "
        r"b has Python 3\.11\.2: .*--base-image python:3\.12-slim-bookworm",
    ):
        bake.check_python("3.12.1", "3.11.2", "b")
    assert bake.python_of_tag("python:3.11.7-slim-bookworm") == "3.11.7"
    assert bake.python_of_tag("docker.io/library/python:3.12-slim") == "3.12"
    assert bake.python_of_tag("localhost/mlscale/python-base:bookworm-x") is None


def test_content_tags_follow_mlscale_images_convention():
    assert bake.content_tag("wine:1", "abc") == "wine:1-abc"
    assert bake.content_tag("wine", "abc") == "wine:abc"
    assert bake.content_tag("localhost:5000/team/wine", "abc") == "localhost:5000/team/wine:abc"
    assert bake.content_tag("localhost:5000/team/wine:v2", "abc") == "localhost:5000/team/wine:v2-abc"


def test_the_dockerfile_runs_as_10001_and_mounts_the_ca_bundle_only_as_a_secret():
    for installer in ("uv", "pip"):
        text = bake.dockerfile(
            base="python:3.11.7-slim-bookworm", installer=installer, model_uri='models:/a "b"/1'
        )
        assert text.startswith(bake.MARKER)
        assert "ARG BASE_IMAGE=python:3.11.7-slim-bookworm" in text
        assert "USER 10001:10001" in text and "HOME=/tmp" in text
        assert (
            'ENTRYPOINT ["python", "-m", "mlscale", "serve", "-m", "/opt/model", "-h", '
            '"0.0.0.0", "-p", "8080", \\\n            "--env-manager", "local"]'
        ) in text
        assert 'io.mlscale.model-uri="models:/a \\"b\\"/1"' in text
        # The bundle is only ever a secret mount, never copied or set as ENV.
        assert text.count("--mount=type=secret,id=ca") == 1
        assert not re.search(r"^(COPY|ADD|ENV).*(PIP_CERT|SSL_CERT_FILE|/run/secrets)", text, re.M)
        assert ("uv pip install" in text) == (installer == "uv")
    assert bake.installer_for(None) == "uv" and bake.installer_for("local") == "pip"
    assert bake.installer_for("virtualenv") == "pip"


def test_the_command_line_offers_the_bake_modules_choices():
    assert ENV_MANAGERS == bake.ENV_MANAGERS and DEFAULT_ENV_MANAGER == bake.DEFAULT_ENV_MANAGER
    result = CliRunner().invoke(main, ["build-image", "--help"])
    assert result.exit_code == 0
    for text in (
        "-m, --model-uri",
        "-t, -n, --tag, --name",
        "--base-image",
        "--env-manager",
        "[local|virtualenv|uv]",
        "--output-dir",
        "--tracking-uri",
        "uid 10001",
    ):
        assert text in result.output, text


# -- pip's and uv's own messages ---------------------------------------------------------


_PIP_MISSING = """\
[1/2] STEP 6/11: RUN ...
Collecting numpy==0.0.1
ERROR: Could not find a version that satisfies the requirement numpy==0.0.1 (from versions: 1.3.0, 1.4.1, 1.5.0, 1.5.1, 1.6.0, 1.6.1, 1.6.2, 1.7.0, 2.4.6)
ERROR: No matching distribution found for numpy==0.0.1
Error: building at STEP "RUN ...": while running runtime: exit status 1
"""
_PIP_CONFLICT = """\
ERROR: Cannot install -r model.txt (line 1) and psutil>=5.9 because these package versions have conflicting dependencies.

The conflict is caused by:
    The user requested psutil==5.8.0
    The user requested psutil>=5.9

To fix this you could try to:
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/
"""
_UV_MISSING = """\
Using Python 3.11.2 environment at: /opt/venv
error: No solution found when resolving dependencies
  cause: Because you require numpy==0.0.1 and numpy>=1.26, we can conclude that your requirements are unsatisfiable.
Error: building at STEP "RUN ...": exit status 1
"""
_UV_ON_A_TERMINAL = """\
  × No solution found when resolving dependencies:
  ╰─▶ Because there is no version of numpy==0.0.1 and you require
      numpy==0.0.1, we can conclude that your requirements are unsatisfiable.
Error: building at STEP "RUN ...": exit status 1
"""


def test_install_failures_quote_pip_and_uv_in_one_line():
    missing = bake.install_failure(_PIP_MISSING)
    assert missing == (
        "ERROR: Could not find a version that satisfies the requirement numpy==0.0.1 (from "
        "versions: 1.3.0, 1.4.1, 1.5.0, ..., 1.6.2, 1.7.0, 2.4.6); ERROR: No matching "
        "distribution found for numpy==0.0.1"
    )
    conflict = bake.install_failure(_PIP_CONFLICT)
    assert "Cannot install -r model.txt (line 1) and psutil>=5.9" in conflict
    assert "The user requested psutil==5.8.0; The user requested psutil>=5.9" in conflict
    assert "ResolutionImpossible" not in conflict and "\n" not in conflict
    assert bake.install_failure(_UV_MISSING) == (
        "error: No solution found when resolving dependencies cause: Because you require "
        "numpy==0.0.1 and numpy>=1.26, we can conclude that your requirements are unsatisfiable."
    )
    assert bake.install_failure(_UV_ON_A_TERMINAL) == (
        "× No solution found when resolving dependencies: Because there is no version of "
        "numpy==0.0.1 and you require numpy==0.0.1, we can conclude that your requirements "
        "are unsatisfiable."
    )
    ignored = "ERROR: Ignored the following versions that require a different python version: 1.21.2"
    assert bake.install_failure(ignored + "\n" + _PIP_MISSING) == missing
    assert bake.install_failure("STEP 1\nError: building at STEP: no space left\n") is None
    # docker's plain progress output prefixes each line.
    assert bake.install_failure("#9 4.210 ERROR: No matching distribution found for x==9") == (
        "ERROR: No matching distribution found for x==9"
    )


# -- the command's errors: one line, exit status 1 ------------------------------------------


@pytest.fixture(scope="module")
def models(request) -> dict[str, str]:
    """The reference model in a registry and the scikit-learn pipeline with a string
    column, saved once per machine (pytest's cache) for as long as the code that
    makes them is unchanged, so that their images are found by content next time."""
    # heavy: mlflow (1.5 s), only where a test logs a model
    import mlflow

    recipe = hashlib.sha256(mlflow.__version__.encode())
    for source in ("mlscale/examples/wine.py", "tests/support/models.py"):
        recipe.update((ROOT / source).read_bytes())
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    root = (
        Path(cache.mkdir("build-image-models"))
        if cache
        else Path(tempfile.gettempdir()) / "mlscale-build-image-models"
    )
    folder = root / recipe.hexdigest()[:12]
    if not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        trained = subprocess.run(
            [sys.executable, "-m", "mlscale", "train", "--tracking-uri", f"sqlite:///{folder}/mlflow.db"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert trained.stdout.strip().splitlines()[-1] == "models:/wine-quality/1"
        # heavy: the model fixtures import scikit-learn and mlflow (0.6 s)
        from tests.support.models import save_sklearn_pipeline

        save_sklearn_pipeline(str(folder / "sklearn_pipeline"))
        (folder / "done").write_text("")
    return {
        "tracking_uri": f"sqlite:///{folder}/mlflow.db",
        "wine": "models:/wine-quality/1",
        "sklearn": str(folder / "sklearn_pipeline"),
        "folder": str(folder),
    }


def _cli(*args: str, env: dict | None = None):
    result = CliRunner().invoke(main, ["build-image", *args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _one_line_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.output


def test_no_engine_says_what_to_install_before_any_download(tmp_path):
    env = {"PATH": str(tmp_path), "MLSCALE_CONTAINER_ENGINE": None}
    result = _cli("-m", "models:/not-looked-up/1", "-t", "x", env=env)
    _one_line_error(result, r"no container engine found\. Install Docker .* apt-get install podman")


def test_a_bad_model_uri_is_one_line(tmp_path, models):
    result = _cli(
        "-m",
        "models:/no-such-model/1",
        "--tracking-uri",
        models["tracking_uri"],
        "--output-dir",
        str(tmp_path / "out"),
    )
    _one_line_error(result, r"Cannot resolve model 'models:/no-such-model/1'")
    result = _cli("-m", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "out"))
    _one_line_error(result, r"Cannot resolve model")
    assert not (tmp_path / "out").exists()  # nothing written for a model that is not there


def _model_saved_with(models, tmp_path: Path, python: str) -> Path:
    copy = tmp_path / f"model-py{python}"
    shutil.copytree(models["sklearn"], copy)
    text = (copy / "python_env.yaml").read_text()
    (copy / "python_env.yaml").write_text(re.sub(r"(?m)^python: .*$", f"python: {python}", text))
    return copy


def test_a_python_the_base_lacks_is_one_line_and_leaves_nothing(tmp_path, models):
    model = _model_saved_with(models, tmp_path, "3.12.1")
    out = tmp_path / "out"
    result = _cli("-m", str(model), "--output-dir", str(out))
    _one_line_error(
        result,
        r"saved with Python 3\.12\.1, but the base image python:3\.11\.7-slim-"
        r"bookworm has Python 3\.11\.7: .*--base-image python:3\.12-slim-bookworm",
    )
    assert not out.exists()
    # The base it names works.
    result = _cli("-m", str(model), "--output-dir", str(out), "--base-image", "python:3.12-slim-bookworm")
    assert result.exit_code == 0, result.output
    assert "ARG BASE_IMAGE=python:3.12-slim-bookworm" in (out / "Dockerfile").read_text()


def test_output_dir_writes_a_context_and_needs_no_engine(tmp_path, models):
    out = tmp_path / "context"
    env = {"PATH": str(tmp_path), "MLSCALE_CONTAINER_ENGINE": None}  # no engine reachable
    result = _cli(
        "-m",
        models["wine"],
        "--tracking-uri",
        models["tracking_uri"],
        "--output-dir",
        str(out),
        "-t",
        "wine:1",
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out)
    assert re.search(r"xgboost==\S+ -> xgboost-cpu==\S+: the CPU-only build", result.output)
    assert (out / "model" / "MLmodel").is_file() and (out / "mlscale" / "__init__.py").is_file()
    assert not list((out / "mlscale").rglob("__pycache__"))
    model_lines = (out / "requirements" / "model.txt").read_text().splitlines()
    assert any(line.startswith("xgboost-cpu==") for line in model_lines)
    assert not any(line.startswith(("xgboost==", "mlflow==")) for line in model_lines)
    assert "build it: docker build" in result.output and "-t wine:1" in result.output
    # Written here before: replaced; anything else: refused.
    assert _cli("-m", models["sklearn"], "--output-dir", str(out)).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    _one_line_error(_cli("-m", models["sklearn"], "--output-dir", str(other)), r"is not empty")


@pytest.mark.slow
def test_a_wheel_install_writes_the_same_context(tmp_path, models):
    """mlscale is not on PyPI: the image gets the package from wherever it is
    installed. Installed from its wheel (with the dependencies of this venv), it
    writes the context an editable install writes."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "mlscale", source / "mlscale", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        timeout=300,
    )
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120
    )
    site = next((venv / "lib").glob("python3.*/site-packages"))
    wheel = next((tmp_path / "dist").glob("mlscale-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    # The dependencies from this venv, after the wheel's own package on the path.
    dependencies = next(p for p in sys.path if p.endswith("site-packages"))
    (site / "zz-dependencies.pth").write_text(dependencies + "\n")
    out = tmp_path / "context"
    done = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "mlscale",
            "build-image",
            "-m",
            models["sklearn"],
            "--output-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shipped = sorted(
        str(p.relative_to(site / "mlscale"))
        for p in (site / "mlscale").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    copied = sorted(str(p.relative_to(out / "mlscale")) for p in (out / "mlscale").rglob("*") if p.is_file())
    assert copied == shipped and "containers/bytecode.py" in copied
    assert (out / "requirements" / "serving.txt").read_text().count("mlflow-skinny") == 1


def test_usage_errors_come_before_any_download(tmp_path):
    result = _cli("-m", "models:/x/1")
    assert result.exit_code == 2 and "give the image a tag with -t/--tag" in result.output
    result = _cli("-m", "models:/x/1", "--output-dir", str(tmp_path / "o"), "--base-image", "debian")
    assert result.exit_code == 2 and "--output-dir does not" in result.output
    assert not (tmp_path / "o").exists()


# -- real images -------------------------------------------------------------------------

# Building an image takes a minute or more here (the first one, on a new machine:
# a few); each is built once per session and found by content after that.
_BUILD_TIMEOUT = pytest.mark.timeout(1800)
_HARDENED = (
    "--network",
    "none",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,size=256m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)


def _build(models, model_uri: str, tag: str, *args: str) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlscale",
            "build-image",
            "-m",
            model_uri,
            "-t",
            tag,
            "--tracking-uri",
            models["tracking_uri"],
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == tag
    _drop_superseded(tag)
    return done.stderr


def _drop_superseded(tag: str) -> None:
    """Remove this test's images of earlier content (TAG-HASH tags that TAG no longer
    names): every change to mlscale's sources makes a new one, of a few hundred MB."""
    engine = engine_or_skip()
    repository = tag.rsplit(":", 1)[0]
    current = engine.image_id(tag)
    listed = engine.run("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", repository).stdout
    for line in listed.splitlines():
        name, _, image = line.partition(" ")
        if re.fullmatch(re.escape(tag) + r"-[0-9a-f]{12}", name) and not current.startswith(image):
            engine.run("rmi", name, check=False)


@pytest.fixture(scope="module")
def wine_image(models):
    """The reference model from its registry, with uv (the default)."""
    engine = engine_or_skip()
    tag = "localhost/mlscale-test/bake-wine:1"
    _build(models, models["wine"], tag)
    return engine, tag


@pytest.fixture(scope="module")
def sklearn_image(models):
    """The scikit-learn pipeline from a local folder, with pip (--env-manager local)."""
    engine = engine_or_skip()
    tag = "localhost/mlscale-test/bake-sklearn:1"
    _build(models, models["sklearn"], tag, "--env-manager", "local")
    return engine, tag


_CLIENT = """
import sys, urllib.error, urllib.request
body = sys.stdin.buffer.read() or None
request = urllib.request.Request("http://127.0.0.1:8080" + sys.argv[1], data=body,
                                 headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=30) as answer:
        print(answer.status); print(answer.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code); print(exc.read().decode())
except OSError as exc:
    print(0); print(exc)
"""


def _inside(engine, name: str, path: str, body: str = "") -> tuple[int, str]:
    """An HTTP request from inside the container: it has no network of its own."""
    done = engine.run("exec", "-i", name, "python", "-c", _CLIENT, path, input=body, check=False)
    status, _, text = done.stdout.partition("\n")
    return (int(status) if status.strip().isdigit() else 0), text or done.stderr


def _wait_ready(engine, name: str, timeout_s: float = 120) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if _inside(engine, name, "/ping")[0] == 200:
            return
        state = engine.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() != "true":
            break
        time.sleep(0.1)
    logs = engine.run("logs", name, check=False)
    pytest.fail(f"{name} was not ready in {timeout_s} s:\n{(logs.stdout + logs.stderr)[-3000:]}")


def _serves_as_in_process(engine, tag: str, model_uri: str, frame) -> None:
    # heavy: mlflow (1.5 s), only where a test loads a model
    import mlflow.pyfunc

    expected = mlflow.pyfunc.load_model(model_uri).predict(frame)
    body = json.dumps({"dataframe_split": json.loads(frame.to_json(orient="split", index=False))})
    with container(engine, tag, options=_HARDENED) as name:
        _wait_ready(engine, name)
        status, text = _inside(engine, name, "/invocations", body)
        # Run as the manifests run it: uid 10001, a read-only root, no network at all.
        assert engine.run("exec", name, "id", "-u").stdout.strip() == "10001"
        inspect = engine.run(
            "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.NetworkMode}}", name
        ).stdout.split()
        assert inspect == ["true", "none"]
        refused = engine.run("exec", name, "sh", "-c", "touch /opt/model/x", check=False)
        assert refused.returncode != 0 and "Read-only file system" in refused.stderr
        offline = engine.run(
            "exec",
            name,
            "python",
            "-c",
            "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)",
            check=False,
        )
        assert offline.returncode != 0 and "unreachable" in offline.stderr.lower(), offline.stderr
    assert status == 200, text
    assert json.loads(text)["predictions"] == pytest.approx(list(expected), rel=1e-6)


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_the_reference_model_image_answers_as_in_process(wine_image, models, monkeypatch):
    # heavy: the wine example imports pandas and xgboost (0.7 s)
    from mlscale.examples.wine import feature_frame

    monkeypatch.setenv("MLFLOW_TRACKING_URI", models["tracking_uri"])
    _serves_as_in_process(*wine_image, models["wine"], feature_frame().iloc[:5])


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_the_string_column_pipeline_image_answers_as_in_process(sklearn_image, models):
    # heavy: the model fixtures import scikit-learn and mlflow (0.6 s)
    from tests.support.models import color_frame

    _serves_as_in_process(*sklearn_image, models["sklearn"], color_frame().iloc[:6])


_LISTING = """
import importlib.metadata as md, json, pathlib, sysconfig
site = pathlib.Path(sysconfig.get_path("purelib"))
print(json.dumps(sorted(d.metadata["Name"].lower() for d in md.distributions())))
print(json.dumps(sorted(str(p.relative_to(site)) for p in site.rglob("tests") if p.is_dir())))
"""


def _contents(engine, tag: str) -> tuple[list[str], list[str]]:
    """The distributions installed in the image, and any test folders left."""
    done = engine.run("run", "--rm", "--network", "none", "--entrypoint", "python", tag, "-c", _LISTING)
    distributions, tests = done.stdout.strip().splitlines()
    return json.loads(distributions), json.loads(tests)


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_only_what_the_model_needs_is_in_the_image(wine_image, sklearn_image):
    for engine, tag in (wine_image, sklearn_image):
        distributions, tests = _contents(engine, tag)
        assert "mlflow-skinny" in distributions, distributions
        # Not the full MLflow (its server, UI, database drivers), not the CUDA build of
        # xgboost, nothing of load testing, no installer, no pyarrow.
        for absent in (
            "mlflow",
            "xgboost",
            "sqlalchemy",
            "flask",
            "gunicorn",
            "locust",
            "plotly",
            "hdrhistogram",
            "pyarrow",
            "pip",
            "setuptools",
        ):
            assert absent not in distributions, (tag, absent)
        assert not [name for name in distributions if name.startswith("nvidia-")], distributions
        assert tests == [], tests
    assert "xgboost-cpu" in _contents(*wine_image)[0]
    size = wine_image[0].image_size(wine_image[1])
    assert size <= 500e6, f"{wine_image[1]} is {size / 1e6:.0f} MB"


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_a_rerun_finds_the_image_by_its_content(wine_image, models):
    engine, tag = wine_image
    # The fixture's build is found, unless mlscale's sources changed since (the
    # package is part of the content): then this builds, and the next run finds it.
    _build(models, models["wine"], tag)
    started = time.monotonic()
    said = _build(models, models["wine"], tag)
    assert "up to date" in said and time.monotonic() - started < 60, said
    content = re.search(r"up to date: (\S+) was built", said).group(1)
    assert content.startswith(f"{tag}-") and engine.image_id(content) == engine.image_id(tag)


def _certificates(text: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", text, re.S))


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_no_ca_bundle_in_any_layer(wine_image, sklearn_image):
    """pip's CA bundle reached the builds as a secret only: neither the file nor any
    certificate that only this machine's bundle holds is in any layer."""

    bundle = ca_bundle()
    if bundle is None:
        pytest.skip("pip uses no CA bundle of its own on this machine: no secret was passed")
    secret = bundle.read_bytes()
    engine = wine_image[0]
    image_bundle = engine.run(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "cat",
        wine_image[1],
        "/etc/ssl/certs/ca-certificates.crt",
    ).stdout
    # Certificates this machine adds (a TLS-intercepting proxy's, say).
    added = _certificates(secret.decode()) - _certificates(image_bundle)
    markers = [certificate.splitlines()[1].encode() for certificate in added]
    with tempfile.TemporaryDirectory() as folder:
        for _, tag in (wine_image, sklearn_image):
            archive = Path(folder) / "image.tar"
            engine.run("save", "--format", "docker-archive", "-o", str(archive), tag, timeout=600)
            with tarfile.open(archive) as outer:
                layers = [m for m in outer.getmembers() if m.name.endswith(".tar")]
                assert layers, tag
                for layer in layers:
                    with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                        for member in inner:
                            assert "run/secrets" not in member.name, (tag, member.name)
                            if member.isfile():
                                content = inner.extractfile(member).read()
                                assert content != secret, (tag, member.name)
                                assert not any(m in content for m in markers), (tag, member.name)
            archive.unlink()


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_requirements_that_do_not_resolve_quote_the_installer(models, tmp_path):
    engine_or_skip()
    model = tmp_path / "model"
    shutil.copytree(models["sklearn"], model)
    (model / "requirements.txt").write_text("numpy==0.0.1\n")
    for env_manager, quoted in (
        ("uv", r"No solution found .*numpy==0\.0\.1.* unsatisfiable"),
        ("local", r"ERROR: No matching distribution found for numpy==0\.0\.1"),
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mlscale",
                "build-image",
                "-m",
                str(model),
                "-t",
                "localhost/mlscale-test/unresolvable:1",
                "--env-manager",
                env_manager,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
        error = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        assert len(error) == 1, done.stderr[-3000:]
        assert "the model's requirements do not install together with mlscale's" in error[0]
        assert re.search(quoted, error[0]), error[0]


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_a_python_the_base_lacks_is_refused_before_building(models, tmp_path):
    engine_or_skip()
    model = _model_saved_with(models, tmp_path, "3.12.1")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlscale",
            "build-image",
            "-m",
            str(model),
            "-t",
            "localhost/mlscale-test/py312:1",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(
        r"Error: the model was saved with Python 3\.12\.1, but the base image \S+ has "
        r"Python 3\.11\.\d+: .*--base-image python:3\.12-slim-bookworm",
        done.stderr,
    )
    assert "building" not in done.stderr


@pytest.mark.slow
def test_a_base_that_is_nowhere_says_what_to_do(models):
    engine_or_skip()
    result = _cli(
        "-m",
        models["sklearn"],
        "-t",
        "localhost/mlscale-test/nowhere:1",
        "--base-image",
        "localhost/no-such/python:3.11",
    )
    _one_line_error(
        result,
        r"base image localhost/no-such/python:3\.11 is not on this machine and "
        r"cannot be pulled .*--base-image debian",
    )


@pytest.mark.slow
@_BUILD_TIMEOUT
def test_a_model_that_does_not_load_fails_the_build_saying_why(models, tmp_path):
    """The build loads the model as the server will: requirements that miss a
    library the model needs fail there, not at the first start."""
    engine_or_skip()
    model = tmp_path / "model"
    shutil.copytree(models["sklearn"], model)
    lines = (model / "requirements.txt").read_text().splitlines()
    (model / "requirements.txt").write_text(
        "\n".join(line for line in lines if not line.startswith("scikit-learn")) + "\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlscale",
            "build-image",
            "-m",
            str(model),
            "-t",
            "localhost/mlscale-test/unloadable:1",
        ],
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(error) == 1, done.stderr[-3000:]
    assert re.search(
        r"the model does not load in the image: .*needs the Python package 'sklearn'", error[0]
    ), error[0]
