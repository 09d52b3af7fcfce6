"""Bake one model into a serving image: ``mlscale build-image``.

The counterpart of ``mlflow models build-docker``: the model's artifacts are
copied into the image (/opt/model) and its own Python requirements installed at
build time, so the image serves it with no tracking server and no network. Only
what that model needs goes in, in three parts:

* the model's requirements (its requirements.txt, python_env.yaml or
  conda.yaml), rewritten for a CPU image (``rewrite_requirements``): MLflow's
  serving needs are met by mlflow-skinny, xgboost by its CPU-only build, and
  CUDA libraries are left out;
* mlscale's own serving requirements, from its package metadata: no Locust,
  plotly or planner libraries, and no pyarrow (only Parquet request bodies use
  it; pandas and MLflow import it only when it is there);
* the mlscale package itself, copied from wherever it is installed (an editable
  checkout or a wheel): it is not on PyPI.

The pure parts (requirement rewriting, the Dockerfile, the checks) are plain
functions; ``prepare_context`` writes a build context, ``build`` builds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

import mlscale
from mlscale import __version__
from mlscale.containers.base import DEFAULT_BASE, resolve_base
from mlscale.containers.bytecode import MARK as BYTECODE_MARK
from mlscale.containers.engine import Engine, ca_bundle, last_lines
from mlscale.errors import ConfigurationError, ContainerError, ModelLoadError

#: How the image installs the requirements: uv (the default: it resolves and
#: installs several times faster than pip, to the same result for pinned lists),
#: or pip in a venv ("local" and "virtualenv", MLflow's names).
ENV_MANAGERS = ("local", "virtualenv", "uv")
DEFAULT_ENV_MANAGER = "uv"
UV_VERSION = "0.13.9"

MODEL_PATH = "/opt/model"
#: The bytecode of what serving imports, apart from the modules (see bytecode.py).
PYCACHE = "/opt/pycache"
PORT = 8080
#: The first line of every Dockerfile written here: marks a folder that
#: ``--output-dir`` may overwrite.
MARKER = "# Written by `mlscale build-image`"

#: What `mlscale serve` imports, by distribution (docker/server-requirements.txt
#: without the flavours, which the model brings, and without pyarrow). The
#: version ranges come from mlscale's own metadata, so they follow pyproject.
SERVING_DISTRIBUTIONS = (
    "mlflow",
    "click",
    "numpy",
    "pandas",
    "orjson",
    "prometheus-client",
    "uvicorn",
    "httptools",
    "uvloop",
    "psutil",
)
#: Pinned to the versions mlscale runs with here (those its tests ran with) unless
#: the model names them: leaves of the server that model libraries do not constrain.
PINNED_FROM_HERE = ("orjson", "prometheus-client", "uvicorn", "httptools", "uvloop")

#: GPU builds with a CPU-only twin on PyPI that provides the same module, and
#: the first version of the twin: xgboost's Linux wheels depend on
#: nvidia-nccl-cu12 (469 MB), xgboost-cpu's do not.
CPU_TWINS = {"xgboost": ("xgboost-cpu", Version("2.1.0"))}
_CUDA_LIBRARY = re.compile(r"^nvidia-.+-cu\d+$")


# -- requirements ---------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """The two requirement files of a build context, and what was changed."""

    model: tuple[str, ...]
    serving: tuple[str, ...]
    notes: tuple[str, ...] = ()
    #: Files the model's requirement lines refer to (constraints, wheels), by
    #: their path relative to the model folder.
    files: tuple[str, ...] = ()


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def serving_requirements() -> dict[str, Requirement]:
    """mlscale's serving requirements by canonical name, with the ranges of its
    package metadata (pyproject's dependencies)."""
    declared: dict[str, Requirement]
    try:
        declared = {
            canonicalize_name(Requirement(line).name): Requirement(line)
            for line in metadata.requires("mlscale") or ()
        }
    except metadata.PackageNotFoundError:
        declared = {}  # run from a source tree that was never installed
    return {name: declared.get(name) or Requirement(name) for name in SERVING_DISTRIBUTIONS}


def versions_here() -> dict[str, str]:
    """The versions mlscale runs with here, of the leaves it pins and of MLflow."""
    found = {name: installed_version(name) for name in PINNED_FROM_HERE}
    found["mlflow"] = installed_version("mlflow-skinny") or installed_version("mlflow")
    return {name: version for name, version in found.items() if version}


def rewrite_requirements(
    lines: list[str], serving: Mapping[str, Requirement], *, here: Mapping[str, str] | None = None
) -> Requirements:
    """The model's requirement lines for a CPU image, and mlscale's beside them.

    mlflow becomes mlflow-skinny at the same version (the serving code uses
    nothing of the full package: its server, UI and database drivers); a pin
    outside mlscale's range is replaced by the version here (``here``), since
    MLflow loads models saved by older versions. xgboost becomes xgboost-cpu
    where that exists; CUDA libraries (nvidia-*-cuNN) are dropped. Lines that
    are not requirements (options, paths, URLs) are kept as they are.
    mlscale's own lines keep their ranges, except that MLflow and the leaves of
    ``PINNED_FROM_HERE`` are pinned to ``here`` where the model does not name
    them. pip (or uv) merges a package named in both lists, or says why not.
    """
    here = here or {}
    model: list[str] = []
    notes: list[str] = []
    files: list[str] = []
    mlflow_range = serving["mlflow"].specifier
    for line in lines:
        if line.startswith("-"):
            option, _, argument = line.partition(" ")
            if option in ("-c", "--constraint") and argument.strip():
                files.append(argument.strip())
            model.append(line)
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            model.append(line)  # a local path or wheel: pip reads it as it is
            if not re.match(r"^[a-z][a-z0-9+.-]*://", line):
                files.append(line)
            continue
        name: str = canonicalize_name(requirement.name)
        if _CUDA_LIBRARY.match(name):
            notes.append(f"left out {line}: a CUDA library, of no use in a CPU image")
            continue
        if name in ("mlflow", "mlflow-skinny") and requirement.url is None:
            pinned = _pinned(requirement.specifier)
            if pinned is not None and not mlflow_range.contains(pinned, prereleases=True):
                specifier = f"=={here['mlflow']}" if "mlflow" in here else str(mlflow_range)
                notes.append(
                    f"{line} is outside the range mlscale serves with ({mlflow_range}): "
                    f"installing mlflow-skinny{specifier}, which loads models saved "
                    "by older versions"
                )
                requirement.specifier = SpecifierSet(specifier)
            requirement.name = "mlflow-skinny"
            if name == "mlflow":
                notes.append(f"{line} -> {requirement}: serving needs nothing of the full package")
            model.append(str(requirement))
            continue
        twin = CPU_TWINS.get(name)
        if twin and requirement.url is None and _admits(requirement.specifier, twin[1]):
            requirement.name = twin[0]
            notes.append(f"{line} -> {requirement}: the CPU-only build, the same module")
        model.append(str(requirement))
    named = {_name(line) for line in model} - {None}
    serving_lines = []
    for name, declared in serving.items():
        requirement = Requirement(str(declared))  # a copy: the caller's stays as it is
        if name == "mlflow":
            requirement.name = "mlflow-skinny"
        pin_name = requirement.name if name == "mlflow" else name
        if name in (*PINNED_FROM_HERE, "mlflow") and pin_name not in named and name in here:
            requirement.specifier = SpecifierSet(f"=={here[name]}")
        serving_lines.append(str(requirement))
    return Requirements(tuple(model), tuple(serving_lines), tuple(notes), tuple(files))


def _name(line: str) -> str | None:
    try:
        return canonicalize_name(Requirement(line).name)
    except InvalidRequirement:
        return None


def _pinned(specifier: SpecifierSet) -> Version | None:
    for spec in specifier:
        if spec.operator in ("==", "===") and "*" not in spec.version:
            try:
                return Version(spec.version)
            except InvalidVersion:
                return None
    return None


def _admits(specifier: SpecifierSet, first: Version) -> bool:
    """Whether the twin, which exists from ``first`` on, can satisfy ``specifier``."""
    pinned = _pinned(specifier)
    if pinned is not None:
        return pinned >= first
    lower_bounds_only = all(spec.operator in (">=", ">", "!=") for spec in specifier)
    return lower_bounds_only or specifier.contains(first)


def read_requirement_lines(
    model_dir: Path, name: str = "requirements.txt", _seen: frozenset = frozenset()
) -> list[str]:
    """The model's pip requirement lines: requirements.txt, else the dependencies of
    python_env.yaml, else the pip section of conda.yaml; ``-r FILE`` is inlined."""
    path = model_dir / name
    if path.is_file():
        raw = path.read_text().splitlines()
    elif name != "requirements.txt":
        raise ModelLoadError(f"the model's requirements refer to {name}, which it does not hold")
    elif (model_dir / "python_env.yaml").is_file():
        raw = _yaml(model_dir / "python_env.yaml", yaml).get("dependencies") or []
    elif (model_dir / "conda.yaml").is_file():
        dependencies = _yaml(model_dir / "conda.yaml", yaml).get("dependencies") or []
        raw = next((d["pip"] for d in dependencies if isinstance(d, dict) and "pip" in d), [])
    else:
        raise ModelLoadError(
            f"the model in {model_dir} records no requirements (no requirements.txt, "
            "python_env.yaml or conda.yaml): log it with MLflow 2 or later, or add a "
            "requirements.txt beside its MLmodel"
        )
    lines: list[str] = []
    for entry in raw:
        line = str(entry).split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        option, _, argument = line.partition(" ")
        if option in ("-r", "--requirement") and argument.strip():
            target = argument.strip()
            if target in _seen:
                continue
            lines += read_requirement_lines(model_dir, target, _seen | {name})
        else:
            lines.append(line)
    return lines


def _yaml(path: Path, yaml) -> dict:
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path} is not valid YAML: {exc}") from exc
    return loaded if isinstance(loaded, dict) else {}


def model_python(model_dir: Path) -> str | None:
    """The Python version the model was saved with, as the model records it."""
    python_env = model_dir / "python_env.yaml"
    if python_env.is_file():
        version = _yaml(python_env, yaml).get("python")
        if version:
            return str(version)
    flavors = _yaml(model_dir / "MLmodel", yaml).get("flavors") or {}
    version = (flavors.get("python_function") or {}).get("python_version")
    return str(version) if version else None


def check_python(model_version: str | None, base_version: str, base: str) -> None:
    """Refuse a base whose Python minor version differs from the model's: pickled
    models and compiled wheels are made for one minor version."""
    if not model_version:
        return
    wanted, have = _minor(model_version), _minor(base_version)
    if wanted and have and wanted != have:
        raise ConfigurationError(
            f"the model was saved with Python {model_version}, but the base image {base} has "
            f"Python {base_version}: build on a base with Python {wanted}, e.g. "
            f"--base-image python:{wanted}-slim-bookworm"
        )


def _minor(version: str) -> str | None:
    match = re.match(r"^\s*(\d+)\.(\d+)", version)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def python_of_tag(ref: str) -> str | None:
    """The Python version an official python image's tag names (python:3.11.7-slim)."""
    match = re.match(r"^(?:(?:docker\.io/)?(?:library/)?)python:(\d+\.\d+(?:\.\d+)?)", ref)
    return match.group(1) if match else None


# -- the Dockerfile -------------------------------------------------------------


_CA = (
    "RUN --mount=type=secret,id=ca,target=/run/secrets/ca \\\n"
    "    if [ -s /run/secrets/ca ]; then \\\n"
    "        export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca; fi \\\n"
)
#: The install step of the Dockerfile, by installer (benchmarks/container_bench.py times it).
INSTALL_STEPS = {
    "pip": (
        "    && /opt/tools/bin/pip --python /opt/venv/bin/python install --no-compile \\\n"
        "       -r model.txt -r serving.txt\n"
    ),
    "uv": (
        f"    && /opt/tools/bin/pip install --no-compile uv=={UV_VERSION} \\\n"
        "    && /opt/tools/bin/uv pip install --python /opt/venv/bin/python \\\n"
        "       -r model.txt -r serving.txt\n"
    ),
}


def dockerfile(*, base: str, installer: str, model_uri: str) -> str:
    """The Dockerfile of a build context (see ``prepare_context`` for its files)."""
    if installer not in INSTALL_STEPS:
        raise ConfigurationError(f"unknown installer {installer!r}: pip or uv")
    return f"""{MARKER} (mlscale {__version__}) for {_comment(model_uri)}.
# The model in {MODEL_PATH}; its requirements (requirements/model.txt, rewritten for a
# CPU image), mlscale's serving requirements (requirements/serving.txt) and the
# mlscale package in /opt/venv. It serves the model with no tracking server and no
# network, as uid 10001, on a read-only root file system (/tmp writable).
#   docker build -t TAG .      or      podman build -t TAG .
# Behind a TLS-intercepting proxy give the install step pip's CA bundle as a build
# secret; it is mounted for that step only, never written to a layer:
#   docker build --secret id=ca,src=$PIP_CERT -t TAG .
ARG BASE_IMAGE={base}
FROM ${{BASE_IMAGE}} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_NO_CACHE=1 PYTHONDONTWRITEBYTECODE=1
# The server's venv holds no pip or setuptools; the installers run from a venv of
# their own that stays in this stage.
RUN python3 -m venv --without-pip /opt/venv && python3 -m venv /opt/tools
# binutils' strip, for the symbols of compiled extensions (uvloop's alone are 12 MB).
# Where the base's package manager cannot fetch it, they are left as they are.
RUN (apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils) >/dev/null 2>&1 \\
    || echo "binutils could not be installed: compiled extensions are left unstripped"
WORKDIR /build/requirements
COPY requirements/ ./
{_CA}{INSTALL_STEPS[installer]}COPY mlscale /build/mlscale
# mlscale goes in as a package, without the dependencies of load testing and
# planning. Not needed to serve: test folders (pandas', scipy's, ...: tens of MB),
# type stubs, C and Cython sources and headers, the extensions' symbol tables
# (not those of the vendored libraries in *.libs, which auditwheel rewrote).
RUN site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \\
    && cp -r /build/mlscale "$site/" \\
    && find "$site" -depth -type d -name tests -exec rm -rf {{}} + \\
    && find "$site" -type f \\( -name '*.pyi' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \\
       -o -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \\) -delete \\
    && if command -v strip >/dev/null; then \\
       find "$site" -type f -name '*.so*' ! -path '*.libs/*' -exec strip --strip-unneeded {{}} +; fi
# The model loads here as the server will load it (a model that does not load fails
# the build), and the bytecode of what that imported is compiled, apart from the
# venv (PYTHONPYCACHEPREFIX): the venv's layer is then the same for every model
# with these requirements, and a new version of a model adds only its bytecode and
# itself. The root file system is read-only at run time: no compiling then.
FROM build AS bytecode
COPY model /build/model
RUN PYTHONPYCACHEPREFIX={PYCACHE} /opt/venv/bin/python -m mlscale.containers.bytecode /build/model

FROM ${{BASE_IMAGE}}
# The uid and gid the manifests run as (runAsUser: 10001); no home, no shell.
RUN groupadd --system --gid 10001 mlscale \\
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \\
       --shell /usr/sbin/nologin mlscale
COPY --from=build /opt/venv /opt/venv
COPY --from=bytecode {PYCACHE} {PYCACHE}
COPY model {MODEL_PATH}
ENV PATH=/opt/venv/bin:$PATH \\
    PYTHONPYCACHEPREFIX={PYCACHE} \\
    PYTHONUNBUFFERED=1 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    HOME=/tmp \\
    TMPDIR=/tmp
WORKDIR /tmp
LABEL io.mlscale.model-uri={json.dumps(model_uri)} io.mlscale.version="{__version__}"
USER 10001:10001
EXPOSE {PORT}
# The requirements are installed here: the server never builds an environment of its
# own (--env-manager local). Further `mlscale serve` flags can follow the image name:
# -w 2, --max-batch-size 64.
ENTRYPOINT ["python", "-m", "mlscale", "serve", "-m", "{MODEL_PATH}", "-h", "0.0.0.0", "-p", "{PORT}", \\
            "--env-manager", "local"]
"""


def _comment(text: str) -> str:
    return " ".join(text.split())


def installer_for(env_manager: str | None) -> str:
    return "uv" if (env_manager or DEFAULT_ENV_MANAGER) == "uv" else "pip"


# -- install failures -------------------------------------------------------------


_VERSIONS_LIST = re.compile(r"\(from versions: ([^)]*)\)")


def install_failure(log: str) -> str | None:
    """pip's or uv's own account of a failed install, from a build log, as one line;
    None when the log holds none (the build failed elsewhere)."""
    quoted: list[str] = []
    # Docker's plain progress output prefixes each line with "#STEP SECONDS ".
    lines = [re.sub(r"^#\d+ [\d.]+ ", "", line) for line in log.splitlines()]
    index = 0
    while index < len(lines):
        text = lines[index].strip()
        index += 1
        if text.startswith("ERROR:"):
            # Not the cause: pip's link to its documentation, and the versions it
            # skipped for their Python.
            if not re.match(r"ERROR: (ResolutionImpossible|Ignored the following)", text):
                quoted.append(_short_versions(text))
        elif text.startswith("The conflict is caused by:"):
            while index < len(lines) and lines[index].startswith((" ", "\t")) and lines[index].strip():
                quoted.append(lines[index].strip())
                index += 1
        elif text.startswith(("× ", "error: ")):
            # uv's message ("error: ..." then "  cause: ...", or on a terminal "× ..."
            # then "╰─▶ ..."), wrapped onto indented lines; a few lines at most.
            parts = [text]
            while (
                index < len(lines)
                and lines[index].startswith("  ")
                and lines[index].strip()
                and len(parts) < 8
            ):
                parts.append(lines[index].strip().lstrip("╰─▶│ "))
                index += 1
            quoted.append(" ".join(parts))
    return "; ".join(dict.fromkeys(quoted)) or None


def _short_versions(text: str) -> str:
    """pip lists every version it saw; the first and last few say as much."""

    def shorten(match: re.Match) -> str:
        versions = [v.strip() for v in match.group(1).split(",")]
        if len(versions) <= 8:
            return match.group(0)
        return f"(from versions: {', '.join(versions[:3])}, ..., {', '.join(versions[-3:])})"

    return _VERSIONS_LIST.sub(shorten, text)


# -- the build context ----------------------------------------------------------


@dataclass(frozen=True)
class BuildContext:
    """A folder holding Dockerfile, model/, mlscale/ and requirements/."""

    folder: Path
    model_uri: str
    python: str | None
    requirements: Requirements
    installer: str

    def digest(self, base_id: str) -> str:
        """12 hex digits over every file (names and bytes) and the base image's ID."""
        hasher = hashlib.sha256()
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            hasher.update(str(path.relative_to(self.folder)).encode() + b"\0")
            hasher.update(path.read_bytes() + b"\0")
        hasher.update(base_id.encode())
        return hasher.hexdigest()[:12]


@contextmanager
def _tracking_uri(uri: str | None) -> Iterator[None]:
    """MLFLOW_TRACKING_URI for the download (a child process inherits it)."""
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        if uri and previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        elif uri and previous is not None:
            os.environ["MLFLOW_TRACKING_URI"] = previous


def prepare_context(
    model_uri: str,
    folder: Path,
    *,
    base: str = DEFAULT_BASE,
    env_manager: str | None = None,
    tracking_uri: str | None = None,
) -> BuildContext:
    """Download the model and write the build context into ``folder`` (new or
    empty, or one written here before): no container engine needed."""
    # heavy: the mlscale.model package imports its loader (numpy, 50 ms); only here,
    # where a model is fetched, and the requirement helpers stay light.
    from mlscale.model.fetch import fetch_model

    with tempfile.TemporaryDirectory(prefix="mlscale-bake-") as scratch, _tracking_uri(tracking_uri):
        local = Path(fetch_model(model_uri, os.path.join(scratch, "model")))
        _claim(folder)  # only now: a URI that does not resolve leaves nothing behind
        shutil.copytree(local, folder / "model", symlinks=False)
    model_dir = folder / "model"
    lines = read_requirement_lines(model_dir)
    requirements = rewrite_requirements(lines, serving_requirements(), here=versions_here())
    (folder / "requirements").mkdir()
    for relative in requirements.files:
        source = model_dir / relative
        if source.exists():
            target = folder / "requirements" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    (folder / "requirements" / "model.txt").write_text("\n".join(requirements.model) + "\n")
    (folder / "requirements" / "serving.txt").write_text(
        "# mlscale's own serving requirements (its package metadata).\n"
        + "\n".join(requirements.serving)
        + "\n"
    )
    package = Path(mlscale.__file__).resolve().parent
    shutil.copytree(
        package, folder / "mlscale", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.db")
    )
    installer = installer_for(env_manager)
    (folder / "Dockerfile").write_text(dockerfile(base=base, installer=installer, model_uri=model_uri))
    _readable(folder)
    return BuildContext(folder, model_uri, model_python(model_dir), requirements, installer)


def _claim(folder: Path) -> None:
    if folder.exists() and any(folder.iterdir()):
        written_here = (folder / "Dockerfile").is_file() and (
            (folder / "Dockerfile").read_text().startswith(MARKER)
        )
        if not written_here:
            raise ConfigurationError(
                f"{folder} is not empty: give a new or empty folder (or one that "
                "`mlscale build-image --output-dir` wrote, which is replaced)"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _readable(folder: Path) -> None:
    """World-readable files: COPY keeps modes, and the image runs as uid 10001."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | (0o755 if path.is_dir() or mode & 0o100 else 0o644))


# -- building -----------------------------------------------------------------------


@dataclass(frozen=True)
class BakedImage:
    tag: str
    content_tag: str
    base: str
    size_bytes: int
    build_seconds: float | None  # None: an image of the same context was reused
    notes: tuple[str, ...] = field(default=())


def content_tag(tag: str, digest: str) -> str:
    """``repo:tag-DIGEST`` (``repo:DIGEST`` for an untagged name), the convention
    of ``mlscale images build``."""
    name, _, version = tag.rpartition(":") if ":" in tag.rsplit("/", 1)[-1] else (tag, "", "")
    return f"{name}:{version}-{digest}" if version else f"{tag}:{digest}"


def base_python(engine: Engine, base: str) -> str:
    """The Python version in the base image (its python3)."""
    done = engine.run(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "python3",
        base,
        "-c",
        "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        raise ContainerError(
            f"the base image {base} has no working python3 ({last_lines(done.stderr, 2)}); give one that does"
        )
    return done.stdout.strip()


def build(
    engine: Engine,
    context: BuildContext,
    tag: str,
    *,
    base: str,
    log_dir: Path | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> BakedImage:
    """Build the context as ``tag`` on ``base`` (already resolved); an image of the
    same context and base (its content tag) is reused instead."""
    check_python(context.python, base_python(engine, base), base)
    digest = context.digest(engine.image_id(base))
    target = content_tag(tag, digest)
    notes = context.requirements.notes
    if engine.image_exists(target):
        engine.tag(target, tag)
        say(f"up to date: {target} was built from the same model, requirements and base")
        return BakedImage(tag, target, base, engine.image_size(tag), None, notes)
    log_dir = log_dir or Path(tempfile.gettempdir()) / "mlscale-build-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"build-image-{digest}.log"
    say(f"building {tag} on {base} with {context.installer} (log: {log}; a few minutes the first time)")
    secret = ca_bundle()
    started = time.monotonic()
    try:
        engine.build(
            context.folder,
            dockerfile=context.folder / "Dockerfile",
            tags=[tag, target],
            build_args={"BASE_IMAGE": base},
            secrets={"ca": secret} if secret else None,
            log=log,
        )
    except ContainerError as exc:
        text = log.read_text() if log.is_file() else ""
        loading = re.search(rf"^{BYTECODE_MARK} ERROR: (.*)$", text, re.M)
        if loading:
            raise ModelLoadError(
                f"the model does not load in the image: {loading.group(1)} The image has what "
                f"the model's requirements name ({', '.join(context.requirements.model)}) and "
                f"mlscale's serving requirements (whole log: {log})"
            ) from exc
        failure = install_failure(text)
        if failure is None:
            raise
        raise ModelLoadError(
            f"the model's requirements do not install together with mlscale's "
            f"({context.installer}): {failure} (requirements: model {', '.join(context.requirements.model)}; "
            f"whole log: {log})"
        ) from exc
    seconds = time.monotonic() - started
    return BakedImage(tag, target, base, engine.image_size(tag), seconds, notes)


def bake(
    engine: Engine,
    model_uri: str,
    tag: str,
    *,
    base_image: str | None = None,
    env_manager: str | None = None,
    tracking_uri: str | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> BakedImage:
    """Download, write the context to a temporary folder, build; the whole command."""
    with tempfile.TemporaryDirectory(prefix="mlscale-build-image-") as folder:
        context = prepare_context(
            model_uri, Path(folder) / "context", env_manager=env_manager, tracking_uri=tracking_uri
        )
        for note in context.requirements.notes:
            say(note)
        base = resolve_base(engine, base_image or DEFAULT_BASE, say=say)
        return build(engine, context, tag, base=base, say=say)


def check_output_base(context: BuildContext, base: str) -> None:
    """With no engine to ask, the Python check runs on what the base's tag names."""
    version = python_of_tag(base)
    if version:
        check_python(context.python, version, base)
