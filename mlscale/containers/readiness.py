"""Waiting for the stack's pods: their probes, polled from inside the containers.

Kubernetes' kubelet runs a pod's probes; under podman the stack does, by
``podman exec`` of the probe's command (httpGet and tcpSocket through the
image's python3), until each container passes or fails for good: it keeps
exiting, or its probe's own allowance runs out. A model server whose
registered model does not exist yet is the one container not waited for:
like a pod in CrashLoopBackOff, it restarts until the model is registered.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from mlscale.containers.engine import Engine, last_lines
from mlscale.containers.probes import parse_probe_spec, probe_command
from mlscale.containers.translate import PROBE_ANNOTATION, ContainerPlan, PodPlan, StackPlan
from mlscale.errors import ContainerError

# A container restarted this often without passing its probe has failed.
_MAX_RESTARTS = 3
_LOG_LINES = 15


def passes(engine: Engine, container: ContainerPlan) -> bool:
    if container.probe is None:
        return True
    done = engine.run(
        "exec",
        container.engine_name,
        *probe_command(container.probe),
        check=False,
        timeout=container.probe.timeout_s + 20,
    )
    return done.returncode == 0


def awaited_model(container: ContainerPlan) -> str | None:
    """The registered model an ``mlscale serve`` container waits for (``models:/...``)."""
    command = list(container.command)
    if "serve" not in command:
        return None
    for flag in ("-m", "--model-uri"):
        if flag in command[:-1]:
            uri = command[command.index(flag) + 1]
            return uri if uri.startswith("models:/") else None
    return None


def model_registered(tracking_url: str, model_uri: str) -> bool:
    """Whether ``models:/NAME/VERSION`` (or ``@ALIAS``, or a stage) exists in the
    registry at ``tracking_url``, asked through its REST API."""
    rest = model_uri[len("models:/") :]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        path = "registered-models/alias?" + urllib.parse.urlencode({"name": name, "alias": alias})
    else:
        name, _, version = rest.partition("/")
        if version.isdigit():
            path = "model-versions/get?" + urllib.parse.urlencode({"name": name, "version": version})
        else:
            path = "registered-models/get?" + urllib.parse.urlencode({"name": name})
    try:
        with urllib.request.urlopen(f"{tracking_url}/api/2.0/mlflow/{path}", timeout=5) as answer:
            return answer.status == 200
    except urllib.error.HTTPError:
        return False
    except (urllib.error.URLError, OSError):
        return True  # not answering: say nothing about the model, wait as usual


def wait_ready(
    engine: Engine,
    plan: StackPlan,
    pods: list[PodPlan],
    *,
    started: float,
    deadline: float,
    say: Callable[[str], None],
) -> None:
    """Poll the pods' containers until each passes its probe. A container that
    keeps exiting, or takes longer than its probe allows, fails the wait with its
    last log lines; a model server whose model is not registered yet is left to
    restart until it is."""
    tracking = next((p.url for pod in plan.pods for p in pod.published if p.what == "tracking-ui"), None)
    waiting = {c.engine_name: (pod, c) for pod in pods for c in pod.containers}
    since = {name: time.monotonic() for name in waiting}
    while waiting:
        states = container_states(engine, list(waiting))
        for name, (pod, container) in list(waiting.items()):
            status, restarts = states.get(name, ("missing", 0))
            elapsed = time.monotonic() - started
            model = awaited_model(container)
            if model and tracking and not model_registered(tracking, model):
                say(
                    f"[{elapsed:5.1f} s] {pod.name}: waiting for {model}, not registered yet; it "
                    "restarts until it is (register it, see below)"
                )
                del waiting[name]
            elif status == "running" and passes(engine, container):
                say(
                    f"[{elapsed:5.1f} s] {pod.name}: ready"
                    + (f" ({container.name})" if len(pod.containers) > 1 else "")
                )
                del waiting[name]
            elif restarts >= _MAX_RESTARTS or status in ("missing", "dead"):
                raise ContainerError(
                    _failure(engine, name, f"restarted {restarts} times without passing its probe ({status})")
                )
            elif container.probe and time.monotonic() - since[name] > container.probe.allowed_s:
                raise ContainerError(
                    _failure(engine, name, f"did not pass its probe in {container.probe.allowed_s:.0f} s")
                )
        if waiting and time.monotonic() > deadline:
            names = ", ".join(waiting)
            raise ContainerError(
                _failure(
                    engine,
                    next(iter(waiting)),
                    f"not ready when the stack's time ran out (waiting for {names})",
                )
            )
        if waiting:
            time.sleep(0.5)


def _failure(engine: Engine, container: str, why: str) -> str:
    logs = engine.run("logs", "--tail", str(_LOG_LINES), container, check=False)
    text = last_lines(logs.stdout + logs.stderr, _LOG_LINES)
    return f"{container} {why}. Its last log lines:\n{text}"


def container_states(engine: Engine, names: list[str]) -> dict[str, tuple[str, int]]:
    """name -> (state, restarts), for the containers that exist."""
    if not names:
        return {}
    done = engine.run(
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.Name}} {{.State.Status}} {{.RestartCount}}",
        *names,
        check=False,
    )
    found = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            found[parts[0]] = (parts[1], int(parts[2]))
    return found


def probe_now(engine: Engine, pod: str, container: str) -> bool:
    """The container's probe (kept in its pod's annotations by ``up``), run now."""
    done = engine.run(
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.State.Status}} {{json .Config.Annotations}}",
        container,
        check=False,
    )
    status, _, annotations = done.stdout.strip().partition(" ")
    if status != "running":
        return False
    own_name = container[len(pod) + 1 :]
    spec = (json.loads(annotations or "null") or {}).get(PROBE_ANNOTATION + own_name)
    probe = parse_probe_spec(spec) if spec else None
    if probe is None:
        return True
    return engine.run("exec", container, *probe_command(probe), check=False, timeout=30).returncode == 0
