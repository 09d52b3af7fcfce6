"""``mlscale images``: build the project's container images."""

from __future__ import annotations

import click

from mlscale.containers.base import DEBIAN_BASE, DEFAULT_BASE
from mlscale.containers.engine import find_engine
from mlscale.containers.images import IMAGES, build_images, find_repository


@click.group()
def images() -> None:
    """Build the server, Locust, tracking and Postgres images from docker/."""


@images.command("build")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "--base-image",
    default=None,
    metavar="REF",
    help=f"Base for the Python images (default {DEFAULT_BASE}, or where that cannot "
    f"be pulled, a stand-in built from Debian's archive; '{DEBIAN_BASE}' asks for "
    "the stand-in).",
)
def build(names: tuple[str, ...], base_image: str | None) -> None:
    """Build the images (all, or the NAMEs among: server, locust, tracking, postgres).

    Each is tagged mlscale/NAME:VERSION and mlscale/NAME:VERSION-HASH, HASH covering
    its Dockerfile, the files it copies, the base and the build arguments; an image
    whose content is already built is reused. The engine is docker when its daemon
    answers, else podman; MLSCALE_CONTAINER_ENGINE picks. pip's CA bundle (PIP_CERT)
    reaches the builds as a secret, never a layer. Postgres: the official
    postgres:16.4-bookworm where it is on the machine or pulls, else one built on the
    Debian base from Debian's postgresql package. Run from the repository.
    """
    engine = find_engine()
    built = build_images(
        engine,
        root=find_repository(),
        names=names or None,
        base_image=base_image,
        say=lambda line: click.echo(line, err=True),
    )
    click.echo(f"{'image':<28} {'size':>8}  {'build':>8}  content tag")
    for image in built:
        seconds = "reused" if image.build_seconds is None else f"{image.build_seconds:.0f} s"
        click.echo(f"{image.tag:<28} {image.size_bytes / 1e6:>5.0f} MB  {seconds:>8}  {image.content_tag}")


__all__ = ["IMAGES", "images"]
