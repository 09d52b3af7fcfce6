"""A container's probe as the stack polls it: from inside the container, by command.

Kubernetes' kubelet probes a pod from the node; under podman the stack runs the
probe in the container (``podman exec``): an exec probe as written, httpGet and
tcpSocket through the image's python3, which every image of the project has.
A probe also travels with its pod as a pod annotation (``probe_spec``), so that
``mlscale stack status`` can run it without rendering the manifests again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    """A startup or readiness probe, as the stack polls it (from inside the container)."""

    kind: str  # "exec", "http" or "tcp"
    command: tuple[str, ...] = ()
    port: int | None = None
    path: str = "/"
    period_s: float = 10.0
    timeout_s: float = 1.0
    #: How long the container may take to pass it before it counts as failing.
    allowed_s: float = 120.0


_HTTP_PROBE = "import sys, urllib.request\nurllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2]))\n"
_TCP_PROBE = (
    "import socket, sys\n"
    "socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=float(sys.argv[2])).close()\n"
)


def probe_spec(probe: Probe) -> str:
    """The probe in a few characters, for an annotation (podman 4 holds annotation
    values to 63 characters): ``http:5000:/health``, ``tcp:5557``, ``exec:["cmd", ...]``."""
    if probe.kind == "exec":
        return "exec:" + json.dumps(list(probe.command), separators=(",", ":"))
    if probe.kind == "http":
        return f"http:{probe.port}:{probe.path}"
    return f"tcp:{probe.port}"


def parse_probe_spec(text: str) -> Probe | None:
    """The probe ``probe_spec`` wrote (None for anything else)."""
    kind, _, rest = text.partition(":")
    try:
        if kind == "exec":
            return Probe("exec", command=tuple(json.loads(rest)), timeout_s=5)
        if kind == "http":
            port, _, path = rest.partition(":")
            return Probe("http", port=int(port), path=path or "/", timeout_s=5)
        if kind == "tcp":
            return Probe("tcp", port=int(rest), timeout_s=5)
    except ValueError:
        return None
    return None


def probe_command(probe: Probe) -> list[str]:
    """The probe as a command run inside the container: exec as written; httpGet and
    tcpSocket with the image's python3 (every image of the project has it)."""
    if probe.kind == "exec":
        return list(probe.command)
    if probe.kind == "http":
        return [
            "python3",
            "-c",
            _HTTP_PROBE,
            f"http://127.0.0.1:{probe.port}{probe.path}",
            str(probe.timeout_s),
        ]
    return ["python3", "-c", _TCP_PROBE, str(probe.port), str(probe.timeout_s)]
