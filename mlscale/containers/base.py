"""The base image the Dockerfiles build on: the pinned official one, or a stand-in.

The Dockerfiles name ``python:3.11.7-slim-bookworm`` (``DEFAULT_BASE``) behind a
``BASE_IMAGE`` build argument. Where that image is neither on the machine nor
pullable (no registry reachable), ``debian-base.sh``, shipped in this package,
builds an equivalent from Debian's archive with debootstrap: Debian bookworm's
python3 (3.11) with venv and the CA certificates, docs and package lists left out.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from importlib import resources

from mlscale.containers.engine import ENGINE_VARIABLE, Engine
from mlscale.errors import ContainerError

DEFAULT_BASE = "python:3.11.7-slim-bookworm"
#: ``--base-image debian`` asks for the stand-in by name.
DEBIAN_BASE = "debian"
_DEBIAN_BUILD_TIMEOUT_S = 1200


def resolve_base(engine: Engine, wanted: str, *, say: Callable[[str], None]) -> str:
    """The image reference to build on. ``wanted`` is used when it is on the
    machine or pulls; the default base falls back to the Debian stand-in; any
    other missing base is an error that says what to do."""
    if wanted == DEBIAN_BASE:
        return debian_base(engine, say=say)
    if engine.image_exists(wanted):
        return wanted
    pulled = engine.run("pull", wanted, check=False, timeout=300)
    if pulled.returncode == 0:
        return wanted
    if wanted != DEFAULT_BASE:
        raise ContainerError(
            f"base image {wanted} is not on this machine and cannot be pulled "
            f"({' '.join(pulled.stderr.split()[-12:])}); pull or build it first, or use "
            f"--base-image {DEBIAN_BASE} for a base built from Debian's archive"
        )
    say(f"{DEFAULT_BASE} cannot be pulled here; using a stand-in built from Debian's archive")
    return debian_base(engine, say=say)


def debian_base(engine: Engine, *, say: Callable[[str], None]) -> str:
    """Build (or find) the Debian stand-in and return its tag; the script tags it
    with its own hash, so an unchanged script is built once per machine."""
    script = resources.files("mlscale.containers").joinpath("debian-base.sh")
    with resources.as_file(script) as path:
        try:
            done = subprocess.run(
                ["bash", str(path)],
                capture_output=True,
                text=True,
                env={**os.environ, ENGINE_VARIABLE: engine.name},
                timeout=_DEBIAN_BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(
                f"building the Debian base did not finish in {_DEBIAN_BUILD_TIMEOUT_S} s"
            ) from exc
    for line in done.stderr.splitlines():
        if line.startswith("debian-base:") and done.returncode == 0:
            say(line)
    if done.returncode != 0:
        message = " ".join(done.stderr.strip().splitlines()[-3:]) or f"exit {done.returncode}"
        raise ContainerError(f"could not build the Debian base image: {message}")
    return done.stdout.strip().splitlines()[-1]
