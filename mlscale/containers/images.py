"""The project's images (server, Locust, tracking, Postgres), built from docker/.

``mlscale images build`` (and ``make images``) builds each with the engine that
``find_engine`` picks, tagged ``mlscale/NAME:VERSION`` and
``mlscale/NAME:VERSION-HASH``, where HASH covers everything that goes into the
image: its Dockerfile, the files it copies, the base image and the build
arguments. An image whose content tag already exists is not built again, so a
second run on the same machine (CI's rerun, say) costs seconds.

The Dockerfiles name a pinned official base (``python:3.11.7-slim-bookworm``)
behind a ``BASE_IMAGE`` build argument. Where it is neither on the machine nor
pullable, the stand-in built from Debian's archive (``base.py``) takes its
place, through the same Dockerfiles.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlscale import __version__
from mlscale.containers.base import DEFAULT_BASE, resolve_base
from mlscale.containers.engine import Engine, ca_bundle
from mlscale.errors import ContainerError

# Files that are never part of an image's content (the .dockerignore keeps
# them out of the build context too).
_SKIPPED_PARTS = {"__pycache__"}
_SKIPPED_SUFFIXES = {".pyc", ".db"}


@dataclass(frozen=True)
class ImageSpec:
    """One of the project's images: its Dockerfile and the inputs it copies
    (paths relative to the repository, folders included whole)."""

    name: str
    dockerfile: str
    inputs: tuple[str, ...]
    #: Where the official image can stand in instead (Postgres): built only
    #: when that one is not on the machine and cannot be pulled.
    official: str | None = None

    def repository(self) -> str:
        return f"mlscale/{self.name}"


_PACKAGE = ("pyproject.toml", "constraints.txt", "README.md", "LICENSE", "mlscale")

IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec("server", "docker/server.Dockerfile", (*_PACKAGE, "docker/server-requirements.txt")),
    ImageSpec("locust", "docker/locust.Dockerfile", _PACKAGE),
    ImageSpec(
        "tracking", "docker/tracking.Dockerfile", ("constraints.txt", "docker/tracking-requirements.txt")
    ),
    ImageSpec(
        "postgres", "docker/postgres.Dockerfile", ("docker/postgres",), official="postgres:16.4-bookworm"
    ),
)


@dataclass(frozen=True)
class BuiltImage:
    """What ``build_images`` did for one image."""

    name: str
    tag: str
    content_tag: str
    size_bytes: int
    build_seconds: float | None  # None: reused from an earlier build


def find_repository(start: Path | None = None) -> Path:
    """The checkout holding docker/ and the package: the current folder or one
    above it, else the one this package was installed from (editable)."""
    candidates = [Path.cwd(), *Path.cwd().parents] if start is None else [start]
    candidates.append(Path(__file__).resolve().parents[2])
    for folder in candidates:
        if (folder / "docker" / "server.Dockerfile").is_file() and (folder / "mlscale").is_dir():
            return folder
    raise ContainerError(
        "the image builds need a checkout of mlscale (its docker/ folder): run this in "
        "the repository, or use `mlscale build-image` to bake a model into an image"
    )


def _files(root: Path, inputs: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for entry in inputs:
        path = root / entry
        if path.is_dir():
            found += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not (_SKIPPED_PARTS & set(p.parts)) and p.suffix not in _SKIPPED_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
    return found


def content_hash(root: Path, spec: ImageSpec, base_id: str, build_args: dict[str, str]) -> str:
    """12 hex digits over the Dockerfile, the files it copies (names and bytes),
    the base image's ID and the build arguments."""
    digest = hashlib.sha256()
    for path in [root / spec.dockerfile, *_files(root, spec.inputs)]:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(base_id.encode() + b"\0")
    for key in sorted(build_args):
        digest.update(f"{key}={build_args[key]}\0".encode())
    return digest.hexdigest()[:12]


def select(names: Sequence[str] | None) -> tuple[ImageSpec, ...]:
    """The images to build, in build order; a name not known is a usage error."""
    if not names:
        return IMAGES
    known = {spec.name: spec for spec in IMAGES}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ContainerError(f"unknown image {', '.join(unknown)}: choose from {', '.join(known)}")
    return tuple(spec for spec in IMAGES if spec.name in names)


def build_images(
    engine: Engine,
    *,
    root: Path,
    names: Sequence[str] | None = None,
    base_image: str | None = None,
    log_dir: Path | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> list[BuiltImage]:
    """Build (or reuse) the selected images; returns what each came to."""
    specs = select(names)
    missing = [spec.dockerfile for spec in specs if not (root / spec.dockerfile).is_file()]
    if missing:
        raise ContainerError(
            f"{', '.join(missing)} not found in {root}: is this a whole checkout of mlscale?"
        )
    base = resolve_base(engine, base_image or DEFAULT_BASE, say=say)
    base_id = engine.image_id(base)
    secret = ca_bundle()
    log_dir = log_dir or Path(tempfile.gettempdir()) / "mlscale-build-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    built: list[BuiltImage] = []
    for spec in specs:
        tag = f"{spec.repository()}:{__version__}"
        if spec.official and (engine.image_exists(spec.official) or _pulls(engine, spec.official)):
            engine.tag(spec.official, tag)
            say(f"{spec.name}: using {spec.official} as {tag}")
            built.append(BuiltImage(spec.name, tag, spec.official, engine.image_size(tag), None))
            continue
        build_args = {"BASE_IMAGE": base}
        content_tag = f"{tag}-{content_hash(root, spec, base_id, build_args)}"
        if engine.image_exists(content_tag):
            engine.tag(content_tag, tag)
            say(f"{spec.name}: up to date ({content_tag})")
            built.append(BuiltImage(spec.name, tag, content_tag, engine.image_size(tag), None))
            continue
        log = log_dir / f"{spec.name}.log"
        say(f"{spec.name}: building {tag} from {spec.dockerfile} on {base} (log: {log}; a few minutes)")
        started = time.monotonic()
        engine.build(
            root,
            dockerfile=root / spec.dockerfile,
            tags=[tag, content_tag],
            build_args=build_args,
            secrets={"ca": secret or _empty_secret(log_dir)},
            log=log,
        )
        seconds = time.monotonic() - started
        size = engine.image_size(tag)
        say(f"{spec.name}: built in {seconds:.0f} s, {size / 1e6:.0f} MB")
        built.append(BuiltImage(spec.name, tag, content_tag, size, seconds))
    return built


def _pulls(engine: Engine, ref: str) -> bool:
    return engine.run("pull", ref, check=False, timeout=300).returncode == 0


def _empty_secret(folder: Path) -> Path:
    """The Dockerfiles mount the secret ``ca`` in their pip steps; where pip needs
    no extra CA bundle an empty file stands in (podman refuses a missing secret)."""
    path = folder / "no-ca-bundle"
    path.write_bytes(b"")
    return path
