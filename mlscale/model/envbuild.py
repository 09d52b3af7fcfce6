"""Building the model's environment: reading the model's files, finding a Python,
running uv or pip, and the cache (the decisions are in mlscale.model.environment)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, metadata, requires

import yaml

import mlscale
from mlscale.model.environment import (
    SERVING_PACKAGES,
    EnvironmentSpec,
    Interpreter,
    ModelEnvironmentError,
    cache_root,
    choose_interpreter,
    create_command,
    included_file,
    install_commands,
    interpreter_missing_message,
    is_model_file,
    parse_python_env,
    parse_python_version,
    pin_conflicts,
    python_of,
    python_support_error,
    requirement_lines,
    requirement_name,
    requirements_text,
    select_serving,
    uv_environment,
)

_REQUIREMENTS_FILE = ".mlscale-requirements.txt"  # written beside the model's own files


def prepare_environment(
    uri: str, manager: str, *, cache_dir: str | None = None, say: Callable[[str], None] = lambda text: None
) -> str:
    """The Python of the model's environment: cached, or built now."""
    return prepare(uri, manager, cache_dir=cache_dir or cache_root(os.environ), say=say)


def prepare(uri: str, manager: str, *, cache_dir: str, say: Callable[[str], None]) -> str:
    """The Python of the model's environment under ``cache_dir``: cached, or built now."""
    with tempfile.TemporaryDirectory(prefix="mlscale-env-") as workdir:
        model = read_model_environment(uri, workdir)
        problem = python_support_error(uri, model.python, _requires_python())
        if problem:
            raise ModelEnvironmentError(problem)
        declared = _declared_requirements()
        spec = EnvironmentSpec(
            manager=manager,
            python=model.python,
            requirements=(*model.build_requirements, *model.requirements),
            files=model.files,
            serving=tuple(select_serving(declared, set(model.names))),
            mlscale_dir=_mlscale_dir(),
        )
        cache = EnvironmentCache(cache_dir)
        found = cache.lookup(spec.name)
        if found:
            say(f"Using the cached environment {cache.link(spec.name)} (Python {model.python}, {manager}).")
            return python_of(found)
        minor = parse_python_version(model.python)[:2]
        pythons = find_interpreters(minor, os.environ)
        interpreter = choose_interpreter(model.python, pythons, need_venv=manager == "virtualenv")
        if interpreter is None:
            raise ModelEnvironmentError(interpreter_missing_message(uri, model.python, manager, pythons))
        for note in pin_conflicts([*model.build_requirements, *model.lines], declared):
            say(note)
        say(
            f"Creating the environment for Python {minor[0]}.{minor[1]} with {manager} (cached at "
            f"{cache.link(spec.name)}), on {interpreter.path}."
        )
        started = time.monotonic()
        env_dir = cache.build(
            spec.name, lambda env_dir: _fill(env_dir, spec, model, interpreter, uri, workdir, say), say=say
        )
        say(f"Environment ready in {time.monotonic() - started:.1f} s.")
        return python_of(env_dir)


# --- the model's side ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ModelEnvironment:
    python: str
    build_requirements: tuple[str, ...]
    requirements: tuple[str, ...]  # python_env.yaml's dependencies, as written
    files: Mapping[str, str]  # the -r / -c files they name, recursively: path -> text
    lines: tuple[str, ...]  # every requirement line, those files' included
    names: frozenset[str]  # the projects they all name

    @property
    def needs_model_files(self) -> bool:
        return any(is_model_file(line) for line in self.lines)


def read_model_environment(uri: str, workdir: str) -> ModelEnvironment:
    """python_env.yaml and the requirements files it names, read from a local model
    folder, or downloaded (those files only) into ``workdir``."""
    read = _reader(uri, workdir)
    mlmodel = read("MLmodel")
    if mlmodel is None:
        raise ModelEnvironmentError(
            f"Cannot read model {uri!r}: there is no MLmodel file there. "
            "Check that the path or URI names the folder holding MLmodel."
        )
    env_file = _python_env_file(mlmodel)
    text = read(env_file)
    if text is None:
        raise ModelEnvironmentError(
            f"Model {uri!r} has no {env_file} (MLflow writes it since 1.26), so its environment "
            "cannot be rebuilt: install its requirements here and use --env-manager local."
        )
    python, build, deps = parse_python_env(text)
    files: dict[str, str] = {}
    lines = list(deps)
    # -r and -c files: python_env.yaml's relative to the model's folder, as MLflow
    # installs them, and those inside a requirements file relative to that file.
    pending = [(line, "") for line in deps]
    while pending:
        line, base = pending.pop(0)
        name = included_file(line)
        path = os.path.normpath(os.path.join(base, name)) if name else None
        if path is None or path in files:
            continue
        content = read(path)
        if content is None:
            raise ModelEnvironmentError(f"Model {uri!r}: {env_file} needs {path}, which the model lacks.")
        files[path] = content
        nested = requirement_lines(content)
        lines += nested
        pending += [(n, os.path.dirname(path)) for n in nested]
    return ModelEnvironment(
        python=python,
        build_requirements=tuple(build),
        requirements=tuple(deps),
        files=files,
        lines=tuple(lines),
        names=frozenset(n for n in map(requirement_name, [*build, *lines]) if n),
    )


def _python_env_file(mlmodel_text: str) -> str:
    """The file the pyfunc flavour names for virtualenv, python_env.yaml by default."""
    try:
        flavors = (yaml.safe_load(mlmodel_text) or {}).get("flavors") or {}
        env = (flavors.get("python_function") or {}).get("env")
    except (yaml.YAMLError, AttributeError):
        env = None  # the server's loader reports a broken MLmodel in its own words
    return str(env["virtualenv"]) if isinstance(env, dict) and env.get("virtualenv") else "python_env.yaml"


def _reader(uri: str, workdir: str) -> Callable[[str], str | None]:
    if os.path.isdir(uri):
        return _local_reader(uri)
    try:
        read = _remote_reader(uri, workdir)
        mlmodel = read("MLmodel")
    except ModelEnvironmentError:
        # Some URIs only download whole (MLflow 3's models:/m-<id>); a wrong one fails
        # here too, with the loader's explanation. The loader brings numpy (about 0.1 s).
        from mlscale.model.loader import download_model

        return _local_reader(download_model(uri, os.path.join(workdir, "model")))
    return lambda path: mlmodel if path == "MLmodel" else read(path)


def _local_reader(folder: str) -> Callable[[str], str | None]:
    def read(path: str) -> str | None:
        try:
            with open(os.path.join(folder, path), encoding="utf-8") as file:
                return file.read()
        except FileNotFoundError:
            return None

    return read


def _remote_reader(uri: str, workdir: str) -> Callable[[str], str | None]:
    """Downloads single files of the model: its environment is a few hundred bytes,
    and the server downloads the model itself once it runs."""
    import mlflow.artifacts  # heavy (about 1 s): only a remote model URI needs it

    listings: dict[str, set[str]] = {}  # folder -> its files: a missing file is no error

    def listing(folder: str) -> set[str]:
        if folder not in listings:
            with _resolving(uri):
                found = mlflow.artifacts.list_artifacts(f"{uri.rstrip('/')}/{folder}".rstrip("/"))
            listings[folder] = {os.path.basename(artifact.path) for artifact in found}
        return listings[folder]

    def read(path: str) -> str | None:
        folder, name = os.path.split(path)
        if path.startswith("..") or name not in listing(folder):
            return None
        os.makedirs(os.path.join(workdir, folder), exist_ok=True)
        with _resolving(uri):
            local = mlflow.artifacts.download_artifacts(
                f"{uri.rstrip('/')}/{path}", dst_path=os.path.join(workdir, folder)
            )
        with open(local, encoding="utf-8") as file:
            return file.read()

    return read


@contextlib.contextmanager
def _resolving(uri: str) -> Iterator[None]:
    """MLflow's errors, as the loader words them."""
    # heavy: mlflow (about 1 s) and, with the loader, numpy; only resolving a URI needs them
    from mlflow.exceptions import MlflowException

    from mlscale.model.loader import _explain_resolution_error

    try:
        yield
    except MlflowException as exc:
        raise ModelEnvironmentError(_explain_resolution_error(uri, exc.message)) from exc
    except (OSError, ValueError) as exc:
        raise ModelEnvironmentError(_explain_resolution_error(uri, str(exc))) from exc


# --- mlscale's side -------------------------------------------------------------------------


def _declared_requirements() -> list[str]:
    """mlscale's dependency list, from its installed metadata (pyproject.toml)."""
    try:
        return list(requires("mlscale") or [])
    except PackageNotFoundError:  # run from a bare source tree: any version
        return list(SERVING_PACKAGES)


def _requires_python() -> str | None:
    try:
        return metadata("mlscale")["Requires-Python"]
    except (PackageNotFoundError, KeyError):
        return None


def _mlscale_dir() -> str:
    return os.path.dirname(os.path.realpath(mlscale.__file__))


def link_mlscale(python: str, package_dir: str) -> None:
    """Makes the environment import mlscale from this installation.

    mlscale is not on PyPI, so it cannot be a requirement. Installing it from its
    source (pip install --no-deps) needs a source tree, which a wheel install
    lacks, writes build files into the tree, and freezes a copy the cache would
    have to track. A .pth naming the folder that contains mlscale exposes all
    else that lives there: a checkout's tests/, or, for a regular install, this
    environment's whole site-packages, which would hide a requirement missing
    from the model's environment. A link to the package folder alone, in the
    environment's site-packages, exposes mlscale and nothing else, and follows
    this installation; its serving requirements, which change with it, and its
    location are in the cache key."""
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    os.symlink(package_dir, os.path.join(site, "mlscale"))


# --- interpreters ------------------------------------------------------------------------

_PROBE = (
    "import sys, json, importlib.util as u; print(json.dumps([list(sys.version_info[:3]), "
    "sys.implementation.name, bool(u.find_spec('venv') and u.find_spec('ensurepip')), "
    "getattr(sys, '_base_executable', '') or sys.executable]))"
)


def find_interpreters(minor: tuple[int, ...], environ: Mapping[str, str]) -> list[Interpreter]:
    """The CPython X.Y interpreters on this machine: this one, pythonX.Y on PATH, and
    pyenv's and uv's installed versions."""
    name = f"python{minor[0]}.{minor[1]}"
    # pyenv's shims are left out: each answers for the one version pyenv has selected.
    places = [d for d in environ.get("PATH", "").split(os.pathsep) if d and os.path.basename(d) != "shims"]
    pyenv = environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    uv_pythons = environ.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "uv", "python"
    )
    for root in (os.path.join(pyenv, "versions"), uv_pythons):
        if os.path.isdir(root):
            places += [os.path.join(root, entry, "bin") for entry in sorted(os.listdir(root))]
    this = getattr(sys, "_base_executable", "") or sys.executable
    paths = [this] if sys.version_info[:2] == minor[:2] else []
    paths += [os.path.join(place, name) for place in places]
    found: dict[str, Interpreter] = {}
    probed = set()
    for path in paths:
        real = os.path.realpath(path)
        if real in probed or not os.path.isfile(real) or not os.access(real, os.X_OK):
            continue
        probed.add(real)
        interpreter = _probe(path)
        if interpreter is not None:  # a virtual environment's Python counts as its base
            found.setdefault(os.path.realpath(interpreter.path), interpreter)
    return list(found.values())


def _probe(path: str) -> Interpreter | None:
    try:
        run = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=30)
        version, implementation, has_venv, base = json.loads(run.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if implementation != "cpython":
        return None
    return Interpreter(base if os.path.isfile(base) else path, tuple(version), has_venv)


# --- the cache ---------------------------------------------------------------------------


class EnvironmentCache:
    """Environments under ``root``, each published only once complete.

    A virtual environment cannot move (its scripts and activation name its own
    folder), so it is built where it stays, in ``.build/NAME-random``, and then
    published by renaming a symbolic link ``NAME`` to it into place, atomically.
    An interrupted build has no link: it is never used, and the next build of
    the same name deletes it. A lock per name keeps servers started together
    from building one environment twice."""

    def __init__(self, root: str) -> None:
        self.root = root

    def link(self, name: str) -> str:
        return os.path.join(self.root, name)

    def lookup(self, name: str) -> str | None:
        """The environment's folder, if it was completed and its base Python still exists."""
        link = self.link(name)
        target = os.path.realpath(link)
        return target if os.path.islink(link) and os.path.exists(python_of(target)) else None

    def build(self, name: str, fill: Callable[[str], None], *, say: Callable[[str], None]) -> str:
        builds = os.path.join(self.root, ".build")
        os.makedirs(builds, exist_ok=True)
        with open(os.path.join(builds, f"{name}.lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say("Another mlscale is building this environment; waiting for it.")
                fcntl.flock(lock, fcntl.LOCK_EX)
            found = self.lookup(name)
            if found:
                return found
            for entry in os.listdir(builds):  # interrupted builds: nobody else holds this lock
                if entry.startswith(f"{name}-"):
                    shutil.rmtree(os.path.join(builds, entry), ignore_errors=True)
            target = tempfile.mkdtemp(prefix=f"{name}-", dir=builds)
            os.chmod(target, 0o755)  # mkdtemp's 0700 would hide it from a cache's other users
            try:
                fill(target)
            except BaseException:  # Ctrl-C too: nothing half-built stays behind
                shutil.rmtree(target, ignore_errors=True)
                raise
            temporary = os.path.join(self.root, f".{name}.{os.getpid()}.link")
            os.symlink(os.path.relpath(target, self.root), temporary)
            os.replace(temporary, self.link(name))
            return target


# --- filling an environment ------------------------------------------------------------------


def _fill(
    env_dir: str,
    spec: EnvironmentSpec,
    model: ModelEnvironment,
    interpreter: Interpreter,
    uri: str,
    workdir: str,
    say: Callable[[str], None],
) -> None:
    if spec.manager == "uv":
        uv, env = _uv_binary(), uv_environment(os.environ)
    else:
        uv, env = "uv", {**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    inputs = _install_inputs(uri, model, workdir)
    requirements_file = os.path.join(inputs, _REQUIREMENTS_FILE)
    with open(requirements_file, "w", encoding="utf-8") as file:
        file.write(requirements_text(model.requirements, spec.serving))
    _run(create_command(spec.manager, interpreter.path, env_dir, uv=uv), env, "Creating the environment")
    python = python_of(env_dir)
    say(
        "Installing the model's requirements and mlscale's serving requirements with "
        f"{'uv' if spec.manager == 'uv' else 'pip (a minute or more)'}."
    )
    for command in install_commands(spec.manager, python, requirements_file, model.build_requirements, uv=uv):
        _run(command, env, "Installing the model's requirements", cwd=inputs)
    link_mlscale(python, spec.mlscale_dir)
    # Before publishing: an environment the server cannot start in is not kept. The
    # command line too: the server starts through it.
    imports = "import mlscale.cli.main, mlscale.serving.server, mlscale.model.loader"
    check = subprocess.run([python, "-c", imports], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        last = (check.stderr.strip().splitlines() or ["no message"])[-1]
        raise ModelEnvironmentError(
            f"mlscale's server cannot start in the model's environment ({last}); "
            "the model's requirements may conflict with mlscale's."
        )
    with open(os.path.join(env_dir, "mlscale-environment.json"), "w", encoding="utf-8") as file:
        json.dump(
            {
                "model": uri,
                "manager": spec.manager,
                "python": spec.python,
                "interpreter": interpreter.path,
                "requirements": list(spec.requirements),
                "serving": list(spec.serving),
                "mlscale": spec.mlscale_dir,
            },
            file,
            indent=2,
        )


def _install_inputs(uri: str, model: ModelEnvironment, workdir: str) -> str:
    """A folder where the model's requirements files are where python_env.yaml
    expects them (relative paths resolve from it); with the model's other files
    too when a requirement is one of them."""
    inputs = os.path.join(workdir, "inputs")
    if os.path.isdir(uri):
        os.makedirs(inputs)
        for entry in set(os.listdir(uri)) - {_REQUIREMENTS_FILE}:  # links, as MLflow: it may be read-only
            os.symlink(os.path.abspath(os.path.join(uri, entry)), os.path.join(inputs, entry))
        return inputs
    if model.needs_model_files:
        from mlscale.model.loader import download_model  # brings numpy; only this case needs it

        return download_model(uri, inputs)
    os.makedirs(inputs)
    for path, text in model.files.items():
        os.makedirs(os.path.dirname(os.path.join(inputs, path)), exist_ok=True)
        with open(os.path.join(inputs, path), "w", encoding="utf-8") as file:
            file.write(text)
    return inputs


def _uv_binary() -> str:
    try:
        # Inside the try: where uv's wheel is missing (mlscale installed without its dependencies),
        # the import fails and the uv on PATH is used.
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        pass
    found = shutil.which("uv")
    if found is None:
        raise ModelEnvironmentError(
            "--env-manager uv needs uv, which is not installed here: "
            "pip install uv, or use --env-manager virtualenv."
        )
    return found


def _run(command: list[str], env: Mapping[str, str], what: str, cwd: str | None = None) -> None:
    """Runs uv, venv or pip with their messages on stderr: they say what failed."""
    try:
        # Their output goes to stderr (fd 2): stdout is the server's.
        returncode = subprocess.run(command, env=dict(env), cwd=cwd, stdout=2, check=False).returncode
    except OSError as exc:
        raise ModelEnvironmentError(f"{what} failed: cannot run {command[0]}: {exc.strerror}.") from None
    if returncode != 0:
        raise ModelEnvironmentError(
            f"{what} failed ({os.path.basename(command[0])} exited with status "
            f"{returncode}; its messages are above). Nothing was cached."
        )
