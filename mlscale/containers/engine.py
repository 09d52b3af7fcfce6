"""Find a container engine and run it: docker or podman, through their command lines.

Both take the same arguments for everything mlscale does (build with build-time
secrets, run, inspect, rm), so one small wrapper serves both. Errors from the
engine are translated into ``ContainerError`` carrying the engine's own message.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlscale.errors import ContainerError

#: Environment variable that picks the engine ("docker" or "podman").
ENGINE_VARIABLE = "MLSCALE_CONTAINER_ENGINE"
KNOWN_ENGINES = ("docker", "podman")

INSTALL_HINT = (
    "Install Docker (https://docs.docker.com/engine/install/) or podman "
    "(Debian/Ubuntu: apt-get install podman buildah runc), or set "
    f"{ENGINE_VARIABLE}=docker|podman to the one you have."
)


@dataclass(frozen=True)
class Engine:
    """A container engine's command line: ``name`` is docker or podman."""

    name: str
    path: str

    def command(self, *args: str) -> list[str]:
        return [self.path, *args]

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = None,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ENGINE args`` and capture its output; ``check`` turns a failure
        into ``ContainerError`` with the engine's own last lines."""
        try:
            result = subprocess.run(
                self.command(*args),
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                env={**os.environ, **(env or {})},
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(
                f"`{self.name} {' '.join(args[:3])} ...` did not finish in {timeout:.0f} s"
            ) from exc
        if check and result.returncode != 0:
            raise ContainerError(
                f"`{self.name} {' '.join(args[:2])}` failed (exit {result.returncode}): "
                + last_lines(result.stderr or result.stdout)
            )
        return result

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False).returncode == 0

    def image_id(self, ref: str) -> str:
        return self.run("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()

    def image_size(self, ref: str) -> int:
        """The image's size in bytes, as the engine counts it (all layers)."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def tag(self, source: str, target: str) -> None:
        self.run("tag", source, target)

    def build(
        self,
        context: Path,
        *,
        dockerfile: Path,
        tags: Sequence[str],
        build_args: Mapping[str, str] | None = None,
        secrets: Mapping[str, Path] | None = None,
        network: str | None = None,
        log: Path | None = None,
        pull: bool = False,
    ) -> None:
        """Build an image. ``secrets`` are files mounted only during RUN steps
        (``--mount=type=secret``), never written to a layer. The build's output
        goes to ``log`` when given (it is long); a failure quotes its end."""
        args = ["build", "-f", str(dockerfile)]
        for tag in tags:
            args += ["-t", tag]
        for key, value in (build_args or {}).items():
            args += ["--build-arg", f"{key}={value}"]
        for key, path in (secrets or {}).items():
            args += ["--secret", f"id={key},src={path}"]
        if network:
            args += ["--network", network]
        if self.name == "podman":
            # Never look for the base in a registry when it is already here:
            # where none is reachable, a pull attempt only fails slowly.
            args += ["--pull=" + ("always" if pull else "missing")]
        args.append(str(context))
        env = {"DOCKER_BUILDKIT": "1"} if self.name == "docker" else {}
        with open(log, "w") if log else open(os.devnull, "w") as sink:
            process = subprocess.run(
                self.command(*args),
                stdout=sink if log else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, **env},
            )
        if process.returncode != 0:
            output = Path(log).read_text() if log else process.stdout
            where = f" (whole log: {log})" if log else ""
            raise ContainerError(f"building {tags[0]} failed{where}:\n" + last_lines(output, 15))


def last_lines(text: str, count: int = 5) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return "\n".join(lines[-count:]) or "(no output)"


def find_engine(environ: Mapping[str, str] | None = None) -> Engine:
    """The engine to use: ``MLSCALE_CONTAINER_ENGINE`` if set, else docker when its
    daemon answers, else podman. Raises ``ContainerError`` saying what to install."""
    environ = os.environ if environ is None else environ
    wanted = environ.get(ENGINE_VARIABLE, "").strip()
    if wanted:
        if wanted not in KNOWN_ENGINES:
            raise ContainerError(
                f"{ENGINE_VARIABLE}={wanted!r}: mlscale drives docker or podman; "
                "set it to one of those, or unset it to pick whichever is installed"
            )
        path = shutil.which(wanted)
        if path is None:
            raise ContainerError(
                f"{ENGINE_VARIABLE}={wanted} but `{wanted}` is not installed. " + INSTALL_HINT
            )
        return Engine(wanted, path)
    docker = shutil.which("docker")
    # The docker client is often installed without a daemon to talk to: only
    # pick it when `docker info` answers.
    if docker and _answers(docker):
        return Engine("docker", docker)
    podman = shutil.which("podman")
    if podman:
        return Engine("podman", podman)
    if docker:
        raise ContainerError(
            "the docker client is installed but no Docker daemon answers (`docker info` "
            "failed). Start the daemon, or install podman (Debian/Ubuntu: apt-get install podman "
            f"buildah runc), or set {ENGINE_VARIABLE}=podman if it is installed elsewhere."
        )
    raise ContainerError("no container engine found. " + INSTALL_HINT)


def _answers(path: str) -> bool:
    try:
        return subprocess.run([path, "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ca_bundle(environ: Mapping[str, str] | None = None) -> Path | None:
    """The CA bundle pip on this machine trusts (PIP_CERT, REQUESTS_CA_BUNDLE or
    SSL_CERT_FILE), for builds behind a TLS-intercepting proxy. Passed to builds
    as a secret, so it never lands in a layer."""
    environ = os.environ if environ is None else environ
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return None
