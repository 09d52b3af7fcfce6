"""The local overlay in containers: ``mlscale stack up``, ``status`` and ``down``.

``up`` renders the overlay with ``kubectl kustomize`` (plus the load test
component, deploy/components/loadtest-config), translates the objects for podman
(:mod:`mlscale.containers.translate`), makes the network, volumes and secrets,
and plays the pods tier by tier, each tier once the pods it connects to pass
their probes. Everything it makes carries the label ``mlscale.io/stack=NAME``:
``status`` and ``down`` find it by that label, not by a record of their own.
"""

from __future__ import annotations

import base64
import json
import secrets as token
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlscale import __version__
from mlscale.containers.engine import Engine
from mlscale.containers.expand import fill
from mlscale.containers.images import IMAGES, build_images, find_repository
from mlscale.containers.readiness import container_states, probe_now, wait_ready
from mlscale.containers.translate import (
    CONFIGMAPS_LABEL,
    GRACE_LABEL,
    PUBLISHED_LABEL,
    STACK_LABEL,
    TIER_LABEL,
    WORKLOAD_LABEL,
    PodPlan,
    Publish,
    SecretPlan,
    StackPlan,
    StackSettings,
    image_repository,
    translate,
)
from mlscale.errors import ConfigurationError, ContainerError
from mlscale.k8s.paths import deploy_root, overlay_dir
from mlscale.k8s.validate import RenderError, kustomize
from mlscale.processes import free_port

Say = Callable[[str], None]

#: The load test component every stack plays its Locust pods with.
LOADTEST_COMPONENT = "components/loadtest-config"
LOADTEST_CONFIG_FILE = "locust_config.json"
#: Labels on the network: where the stack was rendered from.
SOURCE_LABEL = "mlscale.io/stack-source"
SCRATCH_LABEL = "mlscale.io/scratch"
KUBE_DEFAULT_NETWORK = "podman-default-kube-network"
#: What the stack opens on 127.0.0.1: (Service, port name, what).
PUBLISHED = (
    ("mlscale-server", "http", "model-server"),
    ("mlflow-tracking", "http", "tracking-ui"),
    ("locust-master", "web", "locust-ui"),
)
WHAT = {"model-server": "model server", "tracking-ui": "tracking UI", "locust-ui": "Locust UI"}


@dataclass(frozen=True, kw_only=True)
class UpSettings:
    name: str = "mlscale"
    source: Path | None = None  # a kustomize folder; default deploy/overlays/local
    #: Host ports by what they publish (0: a free one).
    ports: tuple[tuple[str, int], ...] = (("model-server", 0), ("tracking-ui", 0), ("locust-ui", 0))
    build: bool = True
    timeout_s: float = 900.0


@dataclass(frozen=True)
class PodState:
    name: str
    workload: str
    state: str  # podman's: Running, Exited, Degraded...
    ready: bool | None  # None: not probed (not running)
    restarts: int
    published: tuple[tuple[str, int], ...]  # (what, host port)
    note: str = ""


@dataclass(frozen=True)
class StackState:
    name: str
    source: str
    pods: tuple[PodState, ...]
    volumes: tuple[str, ...]
    secrets: tuple[str, ...]

    def url(self, what: str) -> str | None:
        for pod in self.pods:
            for published, port in pod.published:
                if published == what:
                    return f"http://127.0.0.1:{port}"
        return None


# --- rendering -----------------------------------------------------------------------


def default_source() -> Path:
    return overlay_dir("local")


def render(source: Path, run_config: Mapping[str, object] | None = None) -> list[dict[str, Any]]:
    """The objects of ``source`` with the load test component, as ``kubectl
    kustomize`` renders them; ``run_config`` replaces the component's configuration.

    The source's tree is copied, with a kustomization beside it that adds the
    component: the run's configuration goes into the copy, never into deploy/.
    """
    source = source.resolve()
    # The tree: the nearest folder holding a kustomize base (deploy/ for its
    # overlays, a rendered folder for itself), else the source alone.
    root = next(
        (
            folder
            for folder in (source, *source.parents)
            if (folder / "base" / "kustomization.yaml").is_file()
        ),
        source,
    )
    component = root / LOADTEST_COMPONENT
    if not (component / "kustomization.yaml").is_file():
        component = deploy_root() / LOADTEST_COMPONENT  # a tree from before the component
    with tempfile.TemporaryDirectory(prefix="mlscale-stack-") as folder:
        tree, run = Path(folder) / "tree", Path(folder) / "run"
        shutil.copytree(root, tree, ignore=shutil.ignore_patterns("*.env", "__pycache__"))
        shutil.copytree(component, run / "loadtest-config")
        if run_config is not None:
            (run / "loadtest-config" / LOADTEST_CONFIG_FILE).write_text(json.dumps(run_config, indent=1))
        (run / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [str(Path("..", "tree", source.relative_to(root)))],
                    "components": ["loadtest-config"],
                }
            )
        )
        try:
            return kustomize(run)
        except RenderError as exc:
            raise ConfigurationError(f"cannot render {source} for the stack: {exc}") from exc


def image_map(
    engine: Engine, objects: list[dict], *, build: bool, say: Say, running: dict[str, str] | None = None
) -> dict[str, str]:
    """Each image the manifests name -> the local image of this checkout: built (or
    found up to date) when ``build``, by its content tag, which no other build can
    move (``mlscale/NAME:VERSION`` is retagged by every build on the machine); else
    ``mlscale/NAME:VERSION`` as it is; or the images a running stack's pods use
    (``running``: repository -> image), so that a replayed pod runs what the others do."""
    wanted = {image_repository(c["image"]) for c in _containers(objects)}
    by_repository = {}
    for spec in IMAGES:
        by_repository[spec.repository()] = spec
        if spec.official:
            by_repository[image_repository(spec.official)] = spec
    unknown = sorted(wanted - set(by_repository))
    if unknown:
        raise ConfigurationError(
            f"the manifests name images the project does not build: {', '.join(unknown)}"
        )
    names = sorted({by_repository[r].name for r in wanted})
    if running is not None:
        replayed = {name: running.get(f"mlscale/{name}") for name in names}
        missing = [name for name, image in replayed.items() if image is None]
        if missing:
            raise ContainerError(f"the stack runs no {', '.join(missing)} image to replay")
        return {r: replayed[by_repository[r].name] or "" for r in wanted}
    if build:
        built = {
            b.name: b.content_tag for b in build_images(engine, root=find_repository(), names=names, say=say)
        }
    else:
        built = {name: f"mlscale/{name}:{__version__}" for name in names}
        missing = [tag for tag in built.values() if not engine.image_exists(tag)]
        if missing:
            raise ContainerError(
                f"not built: {', '.join(missing)}; run `mlscale images build` or leave out --no-build"
            )
    prefix = "localhost/" if engine.name == "podman" else ""
    return {
        r: (prefix if built[by_repository[r].name].startswith("mlscale/") else "")
        + built[by_repository[r].name]
        for r in wanted
    }


def running_images(engine: Engine, name: str) -> dict[str, str]:
    """``mlscale/NAME`` -> the image stack ``name``'s containers run (the official
    Postgres image counts as mlscale/postgres, the role it plays)."""
    done = engine.run("ps", "--filter", f"label={STACK_LABEL}={name}", "--format", "json")
    found: dict[str, str] = {}
    for container in json.loads(done.stdout or "[]") or []:
        image = container.get("Image") or ""
        repository = image_repository(image).removeprefix("localhost/")
        if repository.startswith("mlscale/"):
            found[repository] = image
        elif repository.endswith("postgres"):
            found["mlscale/postgres"] = image
    return found


def _containers(objects: list[dict]) -> list[dict]:
    found: list[dict] = []
    for obj in objects:
        spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        found += spec.get("containers") or []
    return found


def plan_stack(
    engine: Engine,
    settings: UpSettings,
    *,
    say: Say,
    run_config: Mapping[str, object] | None = None,
    host_ports: dict[str, int] | None = None,
    running: dict[str, str] | None = None,
) -> StackPlan:
    """Render and translate the stack (the pods' images built or found first;
    ``running``: those of the running stack, see ``image_map``)."""
    source = settings.source or default_source()
    objects = render(source, run_config)
    images = image_map(engine, objects, build=settings.build, say=say, running=running)
    ports = host_ports or {what: port or free_port() for what, port in settings.ports}
    publish = tuple(
        Publish(service, port_name, ports[what], what)
        for service, port_name, what in PUBLISHED
        if what in ports
    )
    return translate(objects, StackSettings(settings.name, images, publish))


# --- up ------------------------------------------------------------------------------


def require_podman(engine: Engine) -> None:
    if engine.name != "podman":
        raise ContainerError(
            "mlscale stack plays the manifests with `podman kube play`, which docker has no "
            "equivalent of: install podman (Debian/Ubuntu: apt-get install podman) and set "
            "MLSCALE_CONTAINER_ENGINE=podman"
        )


def up(engine: Engine, settings: UpSettings, *, say: Say) -> StackState:
    """Bring the stack up and wait for it; returns its state."""
    require_podman(engine)
    started = time.monotonic()
    if _exists(engine, settings.name):
        raise ContainerError(
            f"stack {settings.name} is already up (`mlscale stack status`); "
            f"`mlscale stack down` first, or give another --name"
        )
    source = (settings.source or default_source()).resolve()
    say(f"stack {settings.name}: rendering {source} (kubectl kustomize)")
    plan = plan_stack(engine, settings, say=say)
    for line in group_not_applied(plan.not_applied):
        say(f"  not applied: {line}")
    engine.run(
        "network",
        "create",
        "--label",
        f"{STACK_LABEL}={settings.name}",
        "--label",
        f"{SOURCE_LABEL}={source}",
        plan.network,
    )
    # The pods' time starts now: image builds, which take minutes, are not theirs.
    deadline = time.monotonic() + settings.timeout_s
    try:
        existing = _make_volumes(engine, plan, say=say)
        _make_secrets(engine, plan, data_kept=existing, say=say)
        for tier in plan.tiers():
            for pod in tier:
                play(engine, plan, pod)
            wait_ready(engine, plan, tier, started=started, deadline=deadline, say=say)
    except BaseException:
        say(
            f"stack {settings.name} did not come up; what it made is left for inspection "
            f"(podman logs CONTAINER); `mlscale stack down --name {settings.name}` removes it"
        )
        raise
    return state(engine, settings.name)


def group_not_applied(lines: tuple[str, ...]) -> list[str]:
    """``Kind/a: why`` and ``Kind/b: why`` as ``Kind/a, b: why``."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for line in lines:
        what, _, why = line.partition(": ")
        kind, _, name = what.partition("/")
        grouped.setdefault((kind, why), []).append(name)
    return [f"{kind}/{', '.join(names)}: {why}" for (kind, why), names in grouped.items()]


def play(engine: Engine, plan: StackPlan, pod: PodPlan, *, replace: bool = False) -> None:
    """``podman kube play`` one pod (with any ConfigMap it mounts) on the stack's
    network, under its Services' names."""
    network = plan.network
    if pod.aliases:
        network += ":" + ",".join(f"alias={alias}" for alias in pod.aliases)
    args = ["kube", "play", "--network", network, "--log-opt", "max-size=10mb"]
    if replace:
        args.append("--replace")
    engine.run(*args, "-", input=yaml.safe_dump_all(pod.documents), timeout=120)


def _make_volumes(engine: Engine, plan: StackPlan, *, say: Say) -> bool:
    """Create the volumes; scratch ones (emptyDir) afresh. True when the data
    volumes were all there already (a stack brought down with --keep-data)."""
    have = set(_names(engine, "volume", "ls", "--format", "{{.Name}}"))
    persistent = {v.name for pod in plan.pods for v in pod.volumes if v.persistent}
    # Any data kept means a database made with the kept secret: that secret is needed.
    kept = bool(persistent & have)
    for volume in {v.name: v for pod in plan.pods for v in pod.volumes}.values():
        if volume.persistent and volume.name in have:
            say(f"  volume {volume.name} ({volume.source}): kept from before")
            continue
        if not volume.persistent and volume.name in have:
            engine.run("volume", "rm", "-f", volume.name)
        labels = ["--label", f"{STACK_LABEL}={plan.name}"]
        if not volume.persistent:
            labels += ["--label", f"{SCRATCH_LABEL}=true"]
        engine.run("volume", "create", *labels, volume.name)
    return kept


def _make_secrets(engine: Engine, plan: StackPlan, *, data_kept: bool, say: Say) -> None:
    """Each secret the manifests read: generated, or kept with the data it protects."""
    have = set(_names(engine, "secret", "ls", "--format", "{{.Name}}"))
    for secret in plan.secrets:
        values = None
        if secret.name in have:
            if data_kept:
                values = _read_secret(engine, plan, secret.name)
            engine.run("secret", "rm", secret.name)
        if values is None:
            if data_kept:
                raise ContainerError(
                    f"the kept data volumes were made with secret {secret.name}, which is gone: "
                    f"`mlscale stack down --name {plan.name}` (without --keep-data) starts afresh"
                )
            values = {key: generated_value(key) for key in secret.keys}
            say(f"  secret {secret.name}: generated ({', '.join(secret.keys)})")
        else:
            say(f"  secret {secret.name}: kept with the data")
        content = secret_content(secret, values)
        engine.run(
            "secret",
            "create",
            "--label",
            f"{STACK_LABEL}={plan.name}",
            secret.name,
            "-",
            input=json.dumps(content),
        )


def generated_value(key: str) -> str:
    """A user name is a name; anything else (a password) 24 random bytes in hex,
    URL-safe, as the manifests ask of the Postgres password."""
    return "mlflow" if key == "username" or key.endswith(("-username", "_user")) else token.token_hex(24)


def secret_content(secret: SecretPlan, values: dict[str, str]) -> dict[str, str]:
    """The secret as podman 4 reads a kube secret: JSON of key -> base64 value,
    the keys derived from $(VAR) expansions included."""
    everything = {key: values[key] for key in secret.keys}
    for key, parts in secret.derived:
        everything[key] = fill(parts, everything)
    return {key: base64.b64encode(value.encode()).decode() for key, value in everything.items()}


def _read_secret(engine: Engine, plan: StackPlan, name: str) -> dict[str, str] | None:
    """A kept secret's values, read back through a throwaway container (podman 4.3
    does not show a secret's data)."""
    image = plan.pods[0].documents[-1]["spec"]["containers"][0]["image"]
    done = engine.run(
        "run",
        "--rm",
        "--network",
        "none",
        "--secret",
        name,
        "--entrypoint",
        "cat",
        image,
        f"/run/secrets/{name}",
        check=False,
        timeout=60,
    )
    try:
        data = json.loads(done.stdout)
        return {key: base64.b64decode(value).decode() for key, value in data.items()}
    except (ValueError, AttributeError):
        return None


# --- status and down -----------------------------------------------------------------


def _exists(engine: Engine, name: str) -> bool:
    return bool(stack_pods(engine, name)) or bool(_stack_networks(engine, name))


def _names(engine: Engine, *args: str) -> list[str]:
    return [line for line in engine.run(*args).stdout.split() if line]


def stack_pods(engine: Engine, name: str) -> list[dict]:
    done = engine.run("pod", "ps", "--filter", f"label={STACK_LABEL}={name}", "--format", "json")
    return json.loads(done.stdout or "[]")


def _stack_networks(engine: Engine, name: str) -> list[str]:
    return _names(engine, "network", "ls", "--filter", f"label={STACK_LABEL}={name}", "--format", "{{.Name}}")


def _stack_volumes(engine: Engine, name: str, *, scratch_only: bool = False) -> list[str]:
    # One label filter only: podman 4 ORs several.
    done = engine.run("volume", "ls", "--filter", f"label={STACK_LABEL}={name}", "--format", "json")
    volumes = json.loads(done.stdout or "[]") or []
    return [
        v["Name"] for v in volumes if not scratch_only or (v.get("Labels") or {}).get(SCRATCH_LABEL) == "true"
    ]


def _stack_secrets(engine: Engine, name: str) -> list[str]:
    mine = []
    for secret in _names(engine, "secret", "ls", "--format", "{{.Name}}"):
        if not secret.startswith(f"{name}-"):
            continue
        labels = engine.run(
            "secret", "inspect", "--format", "{{json .Spec.Labels}}", secret, check=False
        ).stdout
        if json.loads(labels or "null") and json.loads(labels).get(STACK_LABEL) == name:
            mine.append(secret)
    return mine


def stack_source(engine: Engine, name: str) -> Path | None:
    for network in _stack_networks(engine, name):
        done = engine.run("network", "inspect", "--format", "{{json .Labels}}", network, check=False)
        source = (json.loads(done.stdout or "null") or {}).get(SOURCE_LABEL)
        if source:
            return Path(source)
    return None


def state(engine: Engine, name: str, *, probe: bool = True) -> StackState:
    """What runs of stack ``name``: pods, readiness (probes run now), published ports."""
    pods = []
    for pod in sorted(stack_pods(engine, name), key=lambda p: p["Name"]):
        labels = pod.get("Labels") or {}
        containers = [c["Names"] for c in pod.get("Containers") or [] if not c["Names"].endswith("-infra")]
        states = container_states(engine, containers)
        published = _published(engine, pod["Name"], labels.get(PUBLISHED_LABEL))
        ready = None
        if probe and pod.get("Status") == "Running":
            ready = all(probe_now(engine, pod["Name"], c) for c in containers)
        restarts = sum(r for _, r in states.values())
        pods.append(
            PodState(
                pod["Name"],
                labels.get(WORKLOAD_LABEL, "").replace(".", "/", 1),
                pod.get("Status", "?"),
                ready,
                restarts,
                published,
            )
        )
    source = stack_source(engine, name)
    return StackState(
        name,
        str(source or "?"),
        tuple(pods),
        tuple(_stack_volumes(engine, name)),
        tuple(_stack_secrets(engine, name)),
    )


def _published(engine: Engine, pod: str, what: str | None) -> tuple[tuple[str, int], ...]:
    if not what:
        return ()
    done = engine.run("pod", "inspect", "--format", "{{json .InfraConfig.PortBindings}}", pod, check=False)
    bindings = json.loads(done.stdout or "null") or {}
    ports = [int(b["HostPort"]) for entries in bindings.values() for b in entries or [] if b.get("HostPort")]
    return tuple((what, port) for port in ports)


def remove_configmap_volumes(engine: Engine, pods: list[dict]) -> list[str]:
    """The volumes podman made for the ConfigMaps ``pods`` mounted (named after
    them, unlabelled), unless another pod still uses one (no --force)."""
    removed = []
    names = {
        cm for pod in pods for cm in ((pod.get("Labels") or {}).get(CONFIGMAPS_LABEL) or "").split(".") if cm
    }
    for volume in sorted(names):
        if engine.run("volume", "rm", volume, check=False, timeout=60).returncode == 0:
            removed.append(f"volume {volume}")
    return removed


def _stop_pod(engine: Engine, pod: dict) -> str:
    """Stop a pod with its manifest's grace period, or 5 s when it is not
    ready: a container still loading serves no one, and as PID 1 without its own
    handler yet (a server fetching its model) it ignores SIGTERM to the end."""
    labels = pod.get("Labels") or {}
    containers = [c["Names"] for c in pod.get("Containers") or [] if not c["Names"].endswith("-infra")]
    ready = pod.get("Status") == "Running" and all(probe_now(engine, pod["Name"], c) for c in containers)
    grace = min(int(labels.get(GRACE_LABEL, 30)), 120) if ready else 5
    engine.run("pod", "stop", "--time", str(grace), pod["Name"], check=False, timeout=grace + 90)
    return pod["Name"]


def down(engine: Engine, name: str, *, keep_data: bool = False, say: Say) -> list[str]:
    """Remove everything stack ``name`` made (its data volumes and their secret
    too unless ``keep_data``); returns what was removed."""
    require_podman(engine)
    removed = []
    # The last started first (the load generators), the database last, each tier's
    # pods together: nothing is cut off mid-request by what it depends on.
    # Then all are removed at once (podman's own clean-up of a pod takes seconds).
    tiers: dict[int, list[dict]] = {}
    pods = stack_pods(engine, name)
    for pod in pods:
        tiers.setdefault(int((pod.get("Labels") or {}).get(TIER_LABEL, 0)), []).append(pod)
    for tier in sorted(tiers, reverse=True):
        with ThreadPoolExecutor(max_workers=len(tiers[tier])) as pool:
            for stopped in pool.map(lambda pod: _stop_pod(engine, pod), tiers[tier]):
                say(f"  pod {stopped}: stopped")
    if pods:
        pod_names = [pod["Name"] for pod in pods]
        engine.run("pod", "rm", "--force", "--time", "5", *pod_names, timeout=300)
        removed += [f"pod {pod}" for pod in pod_names]
    removed += remove_configmap_volumes(engine, pods)
    for network in _stack_networks(engine, name):
        engine.run("network", "rm", "--force", network, timeout=60)
        removed.append(f"network {network}")
    # podman 4's kube play makes this network on first use even when given another;
    # removed when nothing else uses it (no --force).
    engine.run("network", "rm", KUBE_DEFAULT_NETWORK, check=False, timeout=60)
    for volume in _stack_volumes(engine, name, scratch_only=keep_data):
        engine.run("volume", "rm", "--force", volume, timeout=60)
        removed.append(f"volume {volume}")
    if not keep_data:
        for secret in _stack_secrets(engine, name):
            engine.run("secret", "rm", secret)
            removed.append(f"secret {secret}")
    return removed
