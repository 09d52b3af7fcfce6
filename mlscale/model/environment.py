"""The model's own Python environment: ``mlscale serve --env-manager uv|virtualenv``.

MLflow saves, next to every model, the Python version it was logged with
(python_env.yaml) and its pip requirements (requirements.txt). From them
``envbuild.prepare_environment`` builds a virtual environment, with uv or with
``python -m venv`` and pip (MLflow's virtualenv manager), adds what mlscale's
server needs, and caches it under a hash of those inputs; ``exec_server`` then
replaces this process with ``mlscale serve`` running inside it.

This module holds the decisions, as pure functions (reading python_env.yaml,
merging requirements, the cache key, choosing an interpreter, the commands that
create and fill an environment; image builds use them too);
``mlscale.model.envbuild`` runs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from mlscale.errors import MlscaleError

MANAGERS = ("uv", "virtualenv")
CACHE_ENV = "MLSCALE_ENV_CACHE"

# What the server imports: docker/server-requirements.txt without the example
# model's flavours, which a model brings in its own requirements. The versions
# come from mlscale's installed metadata (pyproject.toml), so they are declared once.
SERVING_PACKAGES = (
    "mlflow",
    "click",
    "numpy",
    "pandas",
    "pyarrow",
    "orjson",
    "prometheus-client",
    "uvicorn",
    "httptools",
    "uvloop",
    "psutil",
)

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_INCLUDE = re.compile(r"^(?:-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)$")


class ModelEnvironmentError(MlscaleError):
    """The model's environment cannot be built: no Python to build it on, or an install failed."""


# --- what the model asks for ---------------------------------------------------------


def parse_python_version(text: str) -> tuple[int, ...]:
    """``"3.11.7"`` -> (3, 11, 7); ``"3.11"`` -> (3, 11)."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise ModelEnvironmentError(f"python_env.yaml gives Python {text!r}, not a version such as 3.11.7.")
    return tuple(int(part) for part in match.groups() if part is not None)


def parse_python_env(text: str) -> tuple[str, list[str], list[str]]:
    """python_env.yaml -> (Python version, build dependencies, dependencies), as written."""
    try:
        # BaseLoader keeps every scalar a string: ``python: 3.10`` would otherwise read 3.1.
        data = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise ModelEnvironmentError(f"The model's python_env.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("python"), str) or not data["python"]:
        raise ModelEnvironmentError("The model's python_env.yaml does not say which Python it needs.")
    build, deps = (data.get(key) or [] for key in ("build_dependencies", "dependencies"))
    if not isinstance(build, list) or not isinstance(deps, list):
        raise ModelEnvironmentError("python_env.yaml: build_dependencies and dependencies must be lists.")
    parse_python_version(data["python"])
    return data["python"].strip(), [str(v) for v in build], [str(v) for v in deps]


def requirement_lines(text: str) -> list[str]:
    """The lines of a requirements file that say something: continuations joined,
    comments and blank lines dropped."""
    joined = re.sub(r"\\\r?\n", " ", text)
    lines = (re.sub(r"(^|\s)#.*$", "", line).strip() for line in joined.splitlines())
    return [line for line in lines if line]


def included_file(line: str) -> str | None:
    """The file a ``-r FILE`` or ``-c FILE`` line names."""
    match = _INCLUDE.match(line)
    return match.group(1) if match else None


def requirement_name(line: str) -> str | None:
    """The canonical name of the project a requirement line installs; None for
    options, URLs and paths."""
    if line.startswith("-"):
        return None
    try:  # without per-requirement options such as --hash
        return canonicalize_name(Requirement(re.split(r"\s+--?\w", line)[0]).name)
    except InvalidRequirement:
        return None


def is_model_file(line: str) -> bool:
    """Whether a requirement is a path inside the model (a wheel MLflow stored with it)."""
    return (
        not line.startswith("-")
        and requirement_name(line) is None
        and "://" not in line
        and not os.path.isabs(line)
    )


def select_serving(declared: Sequence[str], model_names: set[str]) -> list[str]:
    """mlscale's serving requirements (from ``declared``, its dependency list) that
    the model does not name itself.

    The model's own pins win (mlflow, numpy, pandas, its flavour): they are what
    it was trained and tested with."""
    serving = {canonicalize_name(name) for name in SERVING_PACKAGES}
    chosen = []
    for line in declared:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name in serving and name not in model_names and "extra" not in str(requirement.marker or ""):
            chosen.append(line)
    return chosen


def pin_conflicts(model_lines: Sequence[str], declared: Sequence[str]) -> list[str]:
    """A note for each ``==`` pin of the model on a serving package outside mlscale's range."""
    serving = {canonicalize_name(name) for name in SERVING_PACKAGES}
    ranges: dict[str, SpecifierSet] = {
        canonicalize_name(Requirement(line).name): Requirement(line).specifier for line in declared
    }
    notes = []
    for line in model_lines:
        name = requirement_name(line)
        if name not in serving or name not in ranges:
            continue
        try:
            pins = [spec.version for spec in Requirement(line).specifier if spec.operator == "=="]
        except InvalidRequirement:
            continue
        if pins and not ranges[name].contains(pins[0], prereleases=True):
            notes.append(
                f"Note: the model pins {line}, outside mlscale's {name}{ranges[name]}; "
                "the model's pin wins, and the server may not work with it."
            )
    return notes


def python_support_error(uri: str, requested: str, supported: str | None) -> str | None:
    """Why mlscale's server cannot run on the model's Python (``supported`` is
    mlscale's Requires-Python), or None when it can."""
    if not supported or SpecifierSet(supported).contains(requested, prereleases=True):
        return None
    return (
        f"Model {uri!r} was logged with Python {requested} (its python_env.yaml), but mlscale's "
        f"server needs Python {supported}: it cannot run in that model's environment. Serve the "
        f"model with --env-manager local from an environment with Python {supported} and the "
        "model's requirements (mlflow.pyfunc.get_model_dependencies lists them), or log the "
        f"model again from Python {supported}."
    )


# --- the cache key ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EnvironmentSpec:
    """Everything an environment is built from: equal specs share one environment."""

    manager: str
    python: str  # as the model asks: "3.11.7"
    requirements: tuple[str, ...]  # build dependencies, then dependencies, as written
    files: Mapping[str, str] = field(default_factory=dict)  # -r / -c files: path -> text
    serving: tuple[str, ...] = ()
    # The mlscale package the environment links to (see envbuild.link_mlscale).
    mlscale_dir: str = ""

    @property
    def key(self) -> str:
        payload = {
            "format": 1,
            "manager": self.manager,
            "python": self.python,
            "requirements": list(self.requirements),
            "files": dict(self.files),
            "serving": list(self.serving),
            "mlscale": self.mlscale_dir,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @property
    def name(self) -> str:
        """The environment's folder name: readable, then the hash."""
        return f"{self.manager}-py{self.python}-{self.key[:16]}"


# --- interpreters ------------------------------------------------------------------------


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: tuple[int, ...]  # (3, 11, 7)
    has_venv: bool = True  # venv and ensurepip importable (Debian ships them apart)


def choose_interpreter(
    requested: str, found: Sequence[Interpreter], *, need_venv: bool
) -> Interpreter | None:
    """The exact version asked for if it is here, else the newest of the same
    minor version (the first found among equals); None when there is none."""
    wanted = parse_python_version(requested)
    usable = [i for i in found if i.version[:2] == wanted[:2] and (i.has_venv or not need_venv)]
    exact = [i for i in usable if i.version == wanted]
    return exact[0] if exact else max(usable, key=lambda i: i.version, default=None)


def interpreter_missing_message(uri: str, requested: str, manager: str, found: Sequence[Interpreter]) -> str:
    minor = ".".join(map(str, parse_python_version(requested)[:2]))
    if any(i.version[:2] == parse_python_version(requested)[:2] for i in found):
        what = (
            f"Python {minor} is installed without its venv module, which --env-manager "
            f"virtualenv needs (Debian: apt install python{minor}-venv; --env-manager uv "
            "does without it)"
        )
    else:
        what = (
            f"Python {minor} is not installed on this machine (looked on PATH, in pyenv's and "
            f"in uv's Pythons). Install python{minor} (for example: pyenv install {minor}, or "
            f"uv python install {minor}) and start again"
        )
    current = ".".join(map(str, sys.version_info[:3]))
    return (
        f"Model {uri!r} needs Python {requested} (its python_env.yaml) for --env-manager "
        f"{manager}. {what}; or serve it in this environment (Python {current}) with "
        "--env-manager local."
    )


# --- commands ------------------------------------------------------------------------------


def create_command(manager: str, interpreter: str, env_dir: str, *, uv: str = "uv") -> list[str]:
    """The command that creates an empty environment at ``env_dir`` on ``interpreter``."""
    if manager == "uv":
        return [uv, "venv", "--quiet", "--python", interpreter, env_dir]
    return [interpreter, "-m", "venv", env_dir]


def install_commands(
    manager: str,
    python: str,
    requirements_file: str,
    build_requirements: Sequence[str] = (),
    *,
    uv: str = "uv",
) -> list[list[str]]:
    """The commands that install a requirements file, after the model's build
    dependencies (pip, setuptools, wheel), into the environment of ``python``.

    uv resolves everything at once, and compiles the bytecode as pip does: the
    server imports thousands of modules at each start, and a cached environment
    must not compile them every time (with PYTHONDONTWRITEBYTECODE, say, or a
    read-only cache). pip is first brought to the model's own version, as
    MLflow's virtualenv manager does, and then installs the rest."""
    if manager == "uv":
        return [
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--compile-bytecode",
                "--python",
                python,
                *build_requirements,
                "-r",
                requirements_file,
            ]
        ]
    pip = [python, "-m", "pip", "install", "--quiet"]
    return [*([[*pip, *build_requirements]] if build_requirements else []), [*pip, "-r", requirements_file]]


def requirements_text(model_requirements: Sequence[str], serving: Sequence[str]) -> str:
    """One requirements file: python_env.yaml's dependencies (``-r requirements.txt``
    resolves beside it), then what mlscale's server needs and the model does not pin."""
    return "\n".join(
        [
            "# The model's dependencies (python_env.yaml), then mlscale's serving requirements.",
            *model_requirements,
            *serving,
            "",
        ]
    )


# uv's settings for what pip reads from these variables (uv ignores pip's configuration).
_PIP_TO_UV = (
    ("PIP_CERT", ("SSL_CERT_FILE",), str),
    ("PIP_INDEX_URL", ("UV_DEFAULT_INDEX", "UV_INDEX_URL"), str),
    ("PIP_EXTRA_INDEX_URL", ("UV_INDEX", "UV_EXTRA_INDEX_URL"), str),  # both space-separated
    ("PIP_FIND_LINKS", ("UV_FIND_LINKS",), lambda value: ",".join(value.split())),  # uv's: commas
)


def uv_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment uv runs in. A machine set up for pip through its variables
    (a private index, a proxy's CA bundle) gets the same from uv, unless uv has
    settings of its own; and uv never downloads a Python: the interpreter is
    chosen from those on the machine, so that a missing one is a clear error."""
    env = dict(environ)
    for pip_name, uv_names, convert in _PIP_TO_UV:
        if environ.get(pip_name) and not any(environ.get(name) for name in uv_names):
            env[uv_names[0]] = convert(environ[pip_name])
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return env


def server_argv(python: str, argv: Sequence[str]) -> list[str]:
    """``mlscale serve ARGS`` as run inside the environment: the same arguments, then
    ``--env-manager local`` (click keeps an option's last value), so every other
    flag reaches the server exactly as typed."""
    if len(argv) < 2 or argv[1] != "serve":
        raise ModelEnvironmentError(
            "--env-manager uv and virtualenv re-run the command line "
            "(mlscale serve …) in the environment; run it as a command."
        )
    return [python, "-m", "mlscale", *argv[1:], "--env-manager", "local"]


def cache_root(environ: Mapping[str, str]) -> str:
    """MLSCALE_ENV_CACHE, else ~/.cache/mlscale/envs (XDG_CACHE_HOME if set)."""
    if environ.get(CACHE_ENV):
        return os.path.abspath(environ[CACHE_ENV])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mlscale", "envs")


def python_of(env_dir: str) -> str:
    return os.path.join(env_dir, "bin", "python")


# --- the entry points ----------------------------------------------------------------------


def exec_server(python: str, argv: Sequence[str]) -> NoReturn:
    """Replaces this process with the server, run by the environment's Python: the
    same process, so SIGTERM and SIGINT reach the server and its graceful drain."""
    args = server_argv(python, argv)
    env = {
        **os.environ,
        "VIRTUAL_ENV": os.path.dirname(os.path.dirname(python)),
        "PATH": os.pathsep.join([os.path.dirname(python), os.environ.get("PATH", "")]),
    }
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(python, args, env)
