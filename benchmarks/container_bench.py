"""Model images: `mlscale build-image` against MLflow's own Dockerfile, same model, same base.

On the reference model (`mlscale train` into a throw-away SQLite store), each
measurement is a function of its own, returning rows of the table:

* ``baked_builds``  - `mlscale build-image`'s image: its size; the context it
  writes (download, requirements, package); a cold build of that context
  (``build --no-cache``, the base present) with uv (the default) and with pip
  (``--env-manager local``); a cached build (a second version of the model, the
  same requirements: what CI does most); a rerun (found by its content tag).
  The mlscale package of the first context is used in all of them, so that
  edits to a shared checkout during the run change nothing.
* ``install_steps`` - the Dockerfile's install step alone, uv against pip, in a
  container of the base: the part of a cold build the installer decides.
* ``mlflow_build``  - the Dockerfile `mlflow models generate-dockerfile -m MODEL
  --env-manager local` writes, built with ``--no-cache`` on the same base (see
  ``mlflow_dockerfile_on`` for the substitution), and its size.
* ``cold_starts``   - container start (``run -d``) to the first successful
  prediction, polled every 20 ms from the host through a published port, at
  ``--cpus 1``; the median of ``--runs`` starts of each image. The baked image
  runs as production would: ``--read-only --tmpfs /tmp``.

Usage::

    .venv/bin/python benchmarks/container_bench.py [--runs 5] [--skip-mlflow] [--out FILE.md]

Needs podman or docker and the Debian stand-in base or a pullable python base
(`mlscale build-image` makes it); about 10 minutes on 2 cores, most of it in
MLflow's build (full MLflow, nginx and the CUDA build of xgboost).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_bench import VENV_BIN, BenchError, free_port, request_bodies, train_model

from mlscale.containers import bake
from mlscale.containers.base import DEFAULT_BASE, resolve_base
from mlscale.containers.engine import Engine, ca_bundle, find_engine

BAKED = "localhost/mlscale-bench/baked-wine"
MLFLOW = "localhost/mlscale-bench/mlflow-wine"
BUILD_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Row:
    what: str
    value: str
    how: str


@dataclass
class Setup:
    engine: Engine
    base: str
    workdir: Path
    tracking_uri: str
    model_uri: str
    body: bytes
    runs: int


def _secret_args() -> list[str]:
    bundle = ca_bundle()
    return ["--secret", f"id=ca,src={bundle}"] if bundle else []


def _timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _no_cache_build(setup: Setup, context: Path, tag: str, dockerfile: Path | None = None) -> float:
    """Seconds to build ``tag`` from scratch. The image an earlier run left under the
    tag is removed once nothing else names it (MLflow's is 2 GB)."""
    previous = setup.engine.image_id(tag) if setup.engine.image_exists(tag) else None
    args = [
        "build",
        "--no-cache",
        "-f",
        str(dockerfile or context / "Dockerfile"),
        "--build-arg",
        f"BASE_IMAGE={setup.base}",
        *_secret_args(),
        "-t",
        tag,
        str(context),
    ]
    seconds = _timed(lambda: setup.engine.run(*args, timeout=BUILD_TIMEOUT_S))
    if previous and previous != setup.engine.image_id(tag):
        names = setup.engine.run(
            "image", "inspect", "--format", "{{len .RepoTags}}", previous, check=False
        ).stdout.strip()
        if names == "0":
            setup.engine.run("rmi", previous, check=False)
    return seconds


def _context(
    setup: Setup, model_uri: str, name: str, env_manager: str, sources: Path | None = None
) -> bake.BuildContext:
    """The build context `mlscale build-image` writes. With ``sources``, its mlscale
    package is replaced by that copy: in a checkout others edit meanwhile, the
    package would otherwise differ from one context to the next."""
    context = bake.prepare_context(
        model_uri, setup.workdir / name, env_manager=env_manager, tracking_uri=setup.tracking_uri
    )
    if sources is not None:
        shutil.rmtree(context.folder / "mlscale")
        shutil.copytree(sources, context.folder / "mlscale")
    return context


def _drop_earlier_runs(engine: Engine, tag: str) -> None:
    """Remove the TAG-HASH images of earlier runs (each run trains a new model)."""
    current = engine.image_id(tag)
    listed = engine.run(
        "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", tag.rsplit(":", 1)[0]
    ).stdout
    for line in listed.splitlines():
        name, _, image = line.partition(" ")
        if re.fullmatch(re.escape(tag) + r"-[0-9a-f]{12}", name) and not current.startswith(image):
            engine.run("rmi", name, check=False)


def baked_builds(setup: Setup) -> list[Row]:
    """Size and build times of `mlscale build-image`'s image."""
    rows = []
    started = time.monotonic()
    first = _context(setup, setup.model_uri, "context-uv", "uv")
    rows.append(
        Row(
            "baked: context",
            f"{time.monotonic() - started:.1f} s",
            "download the model, rewrite its requirements, copy mlscale",
        )
    )
    sources = first.folder / "mlscale"
    pip = _context(setup, setup.model_uri, "context-pip", "local", sources)
    for label, context, tag in (
        ("uv (default)", first, f"{BAKED}:1"),
        ("pip (--env-manager local)", pip, f"{BAKED}:1-pip"),
    ):
        seconds = _no_cache_build(setup, context.folder, tag)
        rows.append(
            Row(
                f"baked: cold build, {label}",
                f"{seconds:.0f} s",
                "build --no-cache of the context (base present)",
            )
        )
    # A new version of the model, the same requirements: what CI does most.
    second = train_model(setup.workdir)
    context = _context(setup, second, "context-v2", "uv", sources)

    def quiet(line):
        return None

    image = bake.build(setup.engine, context, f"{BAKED}:2", base=setup.base, say=quiet)
    rows.append(
        Row(
            "baked: cached build",
            f"{image.build_seconds:.0f} s",
            f"{second}, same requirements: the layers up to the install reused",
        )
    )
    rerun = _timed(lambda: bake.build(setup.engine, context, f"{BAKED}:2", base=setup.base, say=quiet))
    _drop_earlier_runs(setup.engine, f"{BAKED}:2")
    rows.append(
        Row(
            "baked: rerun",
            f"{rerun:.1f} s",
            "the same context again: found by its content tag, nothing built",
        )
    )
    size = setup.engine.image_size(f"{BAKED}:1")
    rows.insert(0, Row("baked: image size", f"{size / 1e6:.0f} MB", "`image inspect --format {{.Size}}`"))
    return rows


def install_steps(setup: Setup) -> list[Row]:
    """The Dockerfile's install step alone, uv against pip, in a container of the base
    (the CA bundle mounted as the build's secret is): the part of a cold build that
    the installer decides. The rest of a build is the same for both."""
    requirements = setup.workdir / "context-uv" / "requirements"
    bundle = ca_bundle()
    rows = []
    for installer in ("uv", "pip"):
        step = bake.INSTALL_STEPS[installer].replace("\\\n", " ").strip().removeprefix("&&")
        script = (
            "python3 -m venv --without-pip /opt/venv && python3 -m venv /opt/tools "
            "&& if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca "
            "SSL_CERT_FILE=/run/secrets/ca; fi && started=$(date +%s.%N) && "
            f"{step} >/dev/null && echo $started $(date +%s.%N)"
        )
        done = setup.engine.run(
            "run",
            "--rm",
            "-v",
            f"{requirements}:/build/requirements:ro",
            "-w",
            "/build/requirements",
            *(["-v", f"{bundle}:/run/secrets/ca:ro"] if bundle else []),
            "-e",
            "PIP_NO_CACHE_DIR=1",
            "-e",
            "UV_NO_CACHE=1",
            "-e",
            "PIP_DISABLE_PIP_VERSION_CHECK=1",
            setup.base,
            "sh",
            "-c",
            script,
            timeout=BUILD_TIMEOUT_S,
        )
        started, ended = (float(v) for v in done.stdout.split()[-2:])
        rows.append(
            Row(
                f"baked: install step, {installer}",
                f"{ended - started:.1f} s",
                "the model's and mlscale's requirements into an empty venv, no cache",
            )
        )
    return rows


def mlflow_dockerfile_on(text: str, base: str) -> str:
    """MLflow's generated Dockerfile, on ``base`` instead of python:3.X-slim.

    * ``FROM python:...`` becomes ``FROM base``, followed by a venv on PATH: the
      official image has pip on its own Python, whereas Debian's python3 is
      "externally managed" (PEP 668) and has no pip; the venv stands in.
    * the RUN steps that call pip get pip's CA bundle as a build secret (the
      same mount as mlscale's Dockerfiles), which needs no change where none is.
    Nothing else changes: its nginx, its MLflow, its dependency install.
    """
    lines, replaced = [], 0
    for line in text.splitlines():
        if re.match(r"^FROM\s+python:", line):
            lines += [f"FROM {base}", "RUN python3 -m venv /opt/venv", "ENV PATH=/opt/venv/bin:$PATH"]
            replaced += 1
        elif line.startswith("RUN ") and ("pip install" in line or "_install_pyfunc_deps" in line):
            lines.append(
                "RUN --mount=type=secret,id=ca,target=/run/secrets/ca "
                "if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi && "
                + line[len("RUN ") :]
            )
        else:
            lines.append(line)
    if replaced != 1:
        raise BenchError(f"expected one `FROM python:` line in MLflow's Dockerfile, found {replaced}")
    return "\n".join(lines) + "\n"


def mlflow_build(setup: Setup) -> list[Row]:
    """MLflow's generated Dockerfile on the same base: build time and size."""
    from mlscale.model.fetch import fetch_model

    local = fetch_model(setup.model_uri, str(setup.workdir / "downloaded"))
    folder = setup.workdir / "mlflow-context"
    done = subprocess.run(
        [
            str(VENV_BIN / "mlflow"),
            "models",
            "generate-dockerfile",
            "-m",
            local,
            "--env-manager",
            "local",
            "-d",
            str(folder),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise BenchError(f"mlflow models generate-dockerfile failed:\n{done.stderr[-3000:]}")
    original = (folder / "Dockerfile").read_text()
    (folder / "Dockerfile.on-base").write_text(mlflow_dockerfile_on(original, setup.base))
    tag = f"{MLFLOW}:local"
    seconds = _no_cache_build(setup, folder, tag, folder / "Dockerfile.on-base")
    size = setup.engine.image_size(tag)
    return [
        Row("mlflow: image size", f"{size / 1e6:.0f} MB", "`image inspect --format {{.Size}}`"),
        Row("mlflow: cold build", f"{seconds:.0f} s", "build --no-cache (base present)"),
    ]


def cold_start(setup: Setup, image: str, options: list[str]) -> float:
    """Seconds from `run -d` to the first 200 from /invocations."""
    port = free_port()
    name = f"mlscale-bench-{uuid.uuid4().hex[:8]}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=setup.body, headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    setup.engine.run(
        "run",
        "-d",
        "--name",
        name,
        "--cpus",
        "1",
        "-p",
        f"127.0.0.1:{port}:8080",
        *options,
        image,
        timeout=120,
    )
    try:
        while time.monotonic() - started < 180:
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    if answer.status == 200:
                        return time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.02)
        logs = setup.engine.run("logs", name, check=False)
        raise BenchError(f"{image} did not answer in 180 s:\n{(logs.stdout + logs.stderr)[-2000:]}")
    finally:
        setup.engine.run("rm", "-f", "-t", "2", name, check=False, timeout=60)


def cold_starts(setup: Setup, images: dict[str, tuple[str, list[str]]]) -> list[Row]:
    """Median cold start of each image, the starts interleaved."""
    times: dict[str, list[float]] = {label: [] for label in images}
    for _ in range(setup.runs):
        for label, (image, options) in images.items():
            times[label].append(cold_start(setup, image, options))
    return [
        Row(
            f"{label}: cold start",
            f"{statistics.median(values):.2f} s",
            f"median of {len(values)} at --cpus 1 (each: {', '.join(f'{v:.2f}' for v in values)})",
        )
        for label, values in times.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each image")
    parser.add_argument("--skip-mlflow", action="store_true", help="only mlscale's image")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    engine = find_engine()
    base = resolve_base(engine, DEFAULT_BASE, say=lambda line: print(line, flush=True))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="container-bench-") as folder:
        workdir = Path(folder)
        model_uri = train_model(workdir)
        tracking_uri = f"sqlite:///{workdir}/mlflow.db"
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # for this process's own download
        setup = Setup(engine, base, workdir, tracking_uri, model_uri, request_bodies()["one"], args.runs)
        measurements = [baked_builds, install_steps]
        images = {"baked": (f"{BAKED}:1", ["--read-only", "--tmpfs", "/tmp"])}
        if not args.skip_mlflow:
            measurements.append(mlflow_build)
            images["mlflow"] = (f"{MLFLOW}:local", [])
        measurements.append(lambda setup: cold_starts(setup, images))
        for measure in measurements:
            for row in measure(setup):
                print(f"{row.what}: {row.value} ({row.how})", flush=True)
                rows.append(row)
    if not args.skip_mlflow:
        ratio = engine.image_size(f"{BAKED}:1") / engine.image_size(f"{MLFLOW}:local")
        rows.append(Row("size, baked / mlflow", f"{ratio:.2f}", "target: at most 0.5"))
    table = "\n".join(
        [
            "| measurement | value | how |",
            "|---|---|---|",
            *(f"| {r.what} | {r.value} | {r.how} |" for r in rows),
        ]
    )
    header = f"Model: {model_uri} (the reference model); base: {base}; engine: {engine.name}\n\n"
    print("\n" + header + table)
    if args.out:
        args.out.write_text(header + table + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"container_bench: {exc}", file=sys.stderr)
        sys.exit(1)
