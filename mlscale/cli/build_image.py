"""``mlscale build-image``: bake one model into a serving image."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from mlscale.containers.base import DEBIAN_BASE, DEFAULT_BASE
from mlscale.containers.engine import find_engine
from mlscale.errors import MlscaleError

# mlscale.containers.bake's choices, repeated so that importing the command line
# (every `mlscale serve` does) does not import the bake module; a test ties them.
ENV_MANAGERS = ("local", "virtualenv", "uv")
DEFAULT_ENV_MANAGER = "uv"


@click.command("build-image", context_settings={"max_content_width": 100})
@click.option(
    "-m",
    "--model-uri",
    required=True,
    metavar="URI",
    help="The model: models:/name/version, models:/name@alias, runs:/id/path, "
    "a local folder, or an object-store URI.",
)
@click.option(
    "-t",
    "--tag",
    "-n",
    "--name",
    "tag",
    default=None,
    metavar="TAG",
    help="The image's tag, e.g. wine-quality:1 (-n/--name as in `mlflow models "
    "build-docker`). Needed unless --output-dir is given.",
)
@click.option(
    "--base-image",
    default=None,
    metavar="REF",
    help=f"The Python base (default {DEFAULT_BASE}). Where the default cannot be "
    f"found or pulled, a stand-in built from Debian's archive takes its place; "
    f"'{DEBIAN_BASE}' asks for the stand-in. Its Python minor version must be the "
    "model's.",
)
@click.option(
    "--env-manager",
    type=click.Choice(ENV_MANAGERS),
    default=None,
    help=f"How the image installs the requirements: {DEFAULT_ENV_MANAGER} (the default; "
    "the fastest) or pip in a venv (local, virtualenv).",
)
@click.option(
    "--output-dir",
    default=None,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="Only write the build context (Dockerfile, model, requirements, mlscale) "
    "to DIR, to build elsewhere; no container engine needed.",
)
@click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    metavar="URI",
    help="Registry used to resolve models:/ and runs:/ URIs; only at build time. Env: MLFLOW_TRACKING_URI.",
)
def build_image(
    model_uri: str,
    tag: str | None,
    base_image: str | None,
    env_manager: str | None,
    output_dir: str | None,
    tracking_uri: str | None,
) -> None:
    """Bake a model into an image that serves it: `mlflow models build-docker` for mlscale.

    The model's artifacts go into the image (/opt/model) and its own requirements
    are installed at build time, so the image serves it with no tracking server and no
    network: `docker run -p 8080:8080 TAG`, then POST to /invocations. Only what the
    model needs goes in: mlflow-skinny for mlflow, the CPU-only xgboost-cpu for
    xgboost, no CUDA libraries, and mlscale's own serving requirements (no pyarrow:
    Parquet request bodies need the model to require it). The image runs as uid 10001
    and works on a read-only root file system with a writable /tmp; the entrypoint is
    `python -m mlscale serve -m /opt/model -h 0.0.0.0 -p 8080 --env-manager local`,
    and further serve flags follow the image name (-w 2).

    The engine is docker when its daemon answers, else podman; MLSCALE_CONTAINER_ENGINE
    picks. pip's CA bundle (PIP_CERT) reaches the install step as a build secret, never
    a layer. The image is also tagged TAG-HASH (HASH covering the model, requirements,
    mlscale and the base); a second run with the same content reuses it. The last line
    of output is the tag.
    """
    from mlscale.containers import bake  # see ENV_MANAGERS: off the command line's start-up

    def say(line):
        return click.echo(line, err=True)

    if output_dir is not None:
        if base_image == DEBIAN_BASE:
            raise click.UsageError(
                f"--base-image {DEBIAN_BASE} builds a base image on this machine, which "
                "--output-dir does not: name the base the Dockerfile should start from"
            )
        _write_context(
            model_uri, Path(output_dir), base_image or DEFAULT_BASE, env_manager, tracking_uri, tag, say
        )
        return
    if not tag:
        raise click.UsageError("give the image a tag with -t/--tag (or use --output-dir)")
    engine = find_engine()  # first: no download before "no engine"
    image = bake.bake(
        engine,
        model_uri,
        tag,
        base_image=base_image,
        env_manager=env_manager,
        tracking_uri=tracking_uri,
        say=say,
    )
    took = "reused" if image.build_seconds is None else f"built in {image.build_seconds:.0f} s"
    say(f"{image.tag}: {image.size_bytes / 1e6:.0f} MB, {took}, on {image.base} (also {image.content_tag})")
    say(f"run it: {engine.name} run --rm -p 8080:8080 {image.tag}")
    click.echo(image.tag)


def _write_context(model_uri, folder, base, env_manager, tracking_uri, tag, say) -> None:
    from mlscale.containers import bake  # see ENV_MANAGERS: off the command line's start-up

    fresh = not folder.exists()
    context = bake.prepare_context(
        model_uri, folder, base=base, env_manager=env_manager, tracking_uri=tracking_uri
    )
    try:
        bake.check_output_base(context, base)
    except MlscaleError:
        # No half-usable context left behind: the folder as it was (new, or empty).
        for path in [folder] if fresh else list(folder.iterdir()):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        raise
    for note in context.requirements.notes:
        say(note)
    secret = " --secret id=ca,src=$PIP_CERT" if os.environ.get("PIP_CERT") else ""
    say(f"build it: docker build{secret} -t {tag or 'TAG'} {folder}")
    click.echo(str(folder))
