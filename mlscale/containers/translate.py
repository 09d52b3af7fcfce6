"""From rendered Kubernetes objects to what ``podman kube play`` runs: pure functions.

The stack is the kustomize overlay itself (``kubectl kustomize``'s objects), never a
second description of it. podman plays Pods, ConfigMaps and volumes; what it cannot
do, this module translates, kind by kind:

- Deployment, StatefulSet: one Pod per replica with the template's spec. A Pod is
  named ``STACK-WORKLOAD`` (``-N`` with several replicas, always for a StatefulSet);
  its containers keep their command, args, env, limits and security settings.
- Service: not an object under podman. Its name becomes a DNS alias, on the stack's
  own network (aardvark-dns), of every Pod it selects, so that clients find
  ``mlflow-postgres:5432`` as in a cluster; a Service port must therefore equal the
  port the container listens on. The ports a user opens (model server, tracking
  UI, Locust UI) are published on 127.0.0.1 only.
- PersistentVolumeClaim and a StatefulSet's volumeClaimTemplates: named volumes,
  kept by ``down --keep-data``. emptyDir: a volume of the Pod's own (podman 4 gives
  every emptyDir of one name the same volume), emptied at each ``up``.
- Secrets: the engine's secrets, made by the stack at ``up``; an env value that
  Kubernetes would expand from secret variables (``$(POSTGRES_PASSWORD)`` in a URL)
  becomes a key of that secret too, so the expanded value is never in a manifest,
  an argument list or ``podman inspect``. Other ``$(VAR)`` references are expanded
  here, which podman does not do.
- Probes: removed from what podman plays (podman 4 would run httpGet probes with a
  curl that the images do not have) and polled by the stack instead; liveness is
  not enforced: a container that exits is restarted, one that hangs is not.
- HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicy, Namespace,
  ServiceAccount: not applied, and reported so (no controllers, no API server, one
  network without policy enforcement).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mlscale.containers.expand import SecretPart, expand_parts
from mlscale.containers.probes import Probe, probe_spec
from mlscale.errors import ConfigurationError

Obj = dict[str, Any]

#: On every pod, volume, secret and network the stack makes: ``down`` and ``status``
#: find them by it.
STACK_LABEL = "mlscale.io/stack"
#: The workload a pod stands for, as ``Kind.name`` (label values take no slash).
WORKLOAD_LABEL = "mlscale.io/workload"
#: On a pod that publishes a port: what it is (``model-server``...), for status.
PUBLISHED_LABEL = "mlscale.io/published"
#: Pod annotation per container: its probe as the command ``status`` runs in it.
PROBE_ANNOTATION = "mlscale.io/probe."
#: The pod's place in the start order (``down`` removes the last started first).
TIER_LABEL = "mlscale.io/tier"
#: The pod's terminationGracePeriodSeconds, which podman 4 does not take from the YAML.
GRACE_LABEL = "mlscale.io/grace-seconds"
#: The ConfigMaps the pod mounts ("."-separated): podman 4 makes each a volume of
#: that name, unlabelled, which ``down`` removes with the pod.
CONFIGMAPS_LABEL = "mlscale.io/configmaps"

_NOT_APPLIED = {
    "HorizontalPodAutoscaler": "no autoscaler under a container engine: the replicas are the manifest's",
    "PodDisruptionBudget": "no evictions to budget for",
    "NetworkPolicy": "one network, and podman enforces no policies: every pod reaches every port",
    "Namespace": "the stack's own network and names stand for it",
    "ServiceAccount": "no API server: no account to run as",
}
_UNSUPPORTED = ("Job", "CronJob", "DaemonSet", "ReplicaSet", "ReplicationController", "Pod")


@dataclass(frozen=True)
class Publish:
    """A Service port to open on 127.0.0.1 (``host_port`` chosen before translating)."""

    service: str
    port_name: str
    host_port: int
    what: str  # for people: "model server"


@dataclass(frozen=True)
class StackSettings:
    name: str
    #: Image repository in the manifests (``mlscale/server``, ``postgres``) -> local image.
    images: Mapping[str, str]
    publish: tuple[Publish, ...] = ()


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    engine_name: str  # podman names a pod's container POD-CONTAINER
    probe: Probe | None
    cpu_limit: float | None  # cores
    command: tuple[str, ...]  # command + args, after expansion


@dataclass(frozen=True)
class Published:
    what: str
    host_port: int
    container_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"


@dataclass(frozen=True)
class VolumePlan:
    name: str
    persistent: bool  # a claim (kept by --keep-data), not an emptyDir
    source: str  # where it comes from, for people


@dataclass(frozen=True)
class SecretPlan:
    name: str  # the engine's secret
    source: str  # the Secret the manifests name
    keys: tuple[str, ...]  # keys the manifests read
    #: Keys made from the others: an env value with $(VAR) of secret variables.
    derived: tuple[tuple[str, tuple[SecretPart, ...]], ...] = ()


@dataclass(frozen=True)
class PodPlan:
    name: str
    workload: str  # "Deployment/mlscale-server"
    aliases: tuple[str, ...]  # the Services that select it: its DNS names
    containers: tuple[ContainerPlan, ...]
    published: tuple[Published, ...]
    needs: tuple[str, ...]  # Services it connects to: those start first
    stop_timeout_s: int
    volumes: tuple[VolumePlan, ...]
    #: The Pod (and any ConfigMap it mounts) as podman plays it: Kubernetes YAML.
    documents: tuple[Obj, ...] = field(repr=False, default=())


@dataclass(frozen=True)
class StackPlan:
    name: str
    pods: tuple[PodPlan, ...]
    secrets: tuple[SecretPlan, ...]
    not_applied: tuple[str, ...]  # "HorizontalPodAutoscaler/mlscale-server: why"

    @property
    def network(self) -> str:
        return self.name

    def tiers(self) -> list[list[PodPlan]]:
        """The pods in start order: each after the pods of the Services it needs."""
        return start_tiers(self.pods)

    def pod(self, name: str) -> PodPlan:
        return next(p for p in self.pods if p.name == name)


# --- the translation ---------------------------------------------------------------


def translate(objects: list[Obj], settings: StackSettings) -> StackPlan:
    """What podman plays for the rendered ``objects``; raises ``ConfigurationError``
    for what cannot run under a container engine."""
    _check_name(settings.name)
    services = [o for o in objects if o.get("kind") == "Service"]
    configmaps = {_name(o): o for o in objects if o.get("kind") == "ConfigMap"}
    not_applied, pods = [], []
    secrets: dict[str, _SecretUse] = {}
    for obj in objects:
        kind = obj.get("kind")
        if kind in _NOT_APPLIED:
            not_applied.append(f"{kind}/{_name(obj)}: {_NOT_APPLIED[kind]}")
        elif kind in _UNSUPPORTED:
            raise ConfigurationError(
                f"{kind}/{_name(obj)} cannot run in the stack: it runs Deployments and "
                "StatefulSets (the local overlay has nothing else)"
            )
        elif kind == "Secret":
            raise ConfigurationError(
                f"Secret/{_name(obj)} is written in the manifests: the stack makes its own "
                "secrets at `up`; leave the secret component out of the overlay it runs"
            )
        elif kind in ("Deployment", "StatefulSet"):
            pods += _workload_pods(obj, services, configmaps, settings, secrets)
    _check_services(services, pods)
    published = _publish(pods, services, settings.publish)
    pods = [replace(pod, published=published.get(pod.name, ())) for pod in pods]
    for pod in pods:
        _unpublish_the_rest(pod)
    for index, tier in enumerate(start_tiers(pods)):
        for pod in tier:
            _pod_document(pod)["metadata"]["labels"][TIER_LABEL] = str(index)
    secret_plans = tuple(use.plan() for use in secrets.values())
    return StackPlan(settings.name, tuple(pods), secret_plans, tuple(not_applied))


def _workload_pods(
    workload: Obj,
    services: list[Obj],
    configmaps: dict[str, Obj],
    settings: StackSettings,
    secrets: dict[str, _SecretUse],
) -> list[PodPlan]:
    kind, name = workload["kind"], _name(workload)
    spec = workload.get("spec") or {}
    template = spec.get("template") or {}
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    replicas = int(spec.get("replicas", 1))
    aliases = tuple(_name(s) for s in services if _selects(s, labels))
    plans = []
    for index in range(replicas):
        numbered = kind == "StatefulSet" or replicas > 1
        pod_name = f"{settings.name}-{name}-{index}" if numbered else f"{settings.name}-{name}"
        plans.append(_pod(workload, pod_name, index, aliases, services, configmaps, settings, secrets))
    return plans


def _pod(
    workload: Obj,
    pod_name: str,
    index: int,
    aliases: tuple[str, ...],
    services: list[Obj],
    configmaps: dict[str, Obj],
    settings: StackSettings,
    secrets: dict[str, _SecretUse],
) -> PodPlan:
    kind, name = workload["kind"], _name(workload)
    template = copy.deepcopy(workload["spec"].get("template") or {})
    spec = template.get("spec") or {}
    where = f"{kind}/{name}"
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    labels = {
        **((template.get("metadata") or {}).get("labels") or {}),
        STACK_LABEL: settings.name,
        WORKLOAD_LABEL: f"{kind}.{name}",
        GRACE_LABEL: str(grace),
    }
    volumes, claimed = _volumes(spec, workload, pod_name, index, settings.name)
    containers, plans, mentions = [], [], []
    for container in spec.get("containers") or []:
        translated, plan, words = _container(container, pod_name, where, settings, secrets)
        containers.append(translated)
        plans.append(plan)
        mentions += words
    if spec.get("initContainers"):
        raise ConfigurationError(f"{where} has init containers, which the stack does not run")
    own = set(aliases)
    needs = tuple(
        sorted(
            {
                _name(s)
                for s in services
                if _name(s) not in own and any(_mentions(w, _name(s)) for w in mentions)
            }
        )
    )
    pod_spec = {
        "restartPolicy": "Always",
        "containers": containers,
        "volumes": volumes,
    }
    if spec.get("securityContext"):
        pod_spec["securityContext"] = spec["securityContext"]
    # Each container's probe goes with the pod, so that `status` can run it
    # without rendering the manifests again.
    annotations = {PROBE_ANNOTATION + p.name: probe_spec(p.probe) for p in plans if p.probe is not None}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name, "labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }
    documents = [pod]
    for volume in spec.get("volumes") or []:
        if "configMap" in volume:
            ref = volume["configMap"].get("name")
            if ref not in configmaps:
                raise ConfigurationError(f"{where} mounts ConfigMap {ref}, which is not rendered")
            documents.insert(0, configmaps[ref])
    mounted = [_name(d) for d in documents if d.get("kind") == "ConfigMap"]
    if mounted:
        labels[CONFIGMAPS_LABEL] = ".".join(mounted)
    return PodPlan(
        name=pod_name,
        workload=where,
        aliases=aliases,
        containers=tuple(plans),
        published=(),
        needs=needs,
        stop_timeout_s=grace,
        volumes=tuple(claimed),
        documents=tuple(documents),
    )


def _volumes(
    spec: Obj, workload: Obj, pod_name: str, index: int, stack: str
) -> tuple[list[Obj], list[VolumePlan]]:
    """The pod's volumes, each a claim on a named volume; and those volumes."""
    volumes, plans = [], []
    for volume in spec.get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume:
            engine_name = f"{pod_name}-{name}"
            plans.append(VolumePlan(engine_name, False, f"emptyDir {name} of {pod_name}"))
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            engine_name = f"{stack}-{claim}"
            plans.append(VolumePlan(engine_name, True, f"PersistentVolumeClaim/{claim}"))
        elif "configMap" in volume:
            volumes.append(volume)
            continue
        else:
            kinds = ", ".join(k for k in volume if k != "name")
            raise ConfigurationError(
                f"volume {name} of {_name(workload)} is a {kinds}: the stack "
                "runs emptyDir, persistentVolumeClaim and configMap volumes"
            )
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": engine_name}})
    # A StatefulSet's claims: one volume per replica and template, named as
    # Kubernetes names the claims (TEMPLATE-STATEFULSET-N).
    for claim in (workload.get("spec") or {}).get("volumeClaimTemplates") or []:
        template = _name(claim)
        engine_name = f"{stack}-{template}-{_name(workload)}-{index}"
        plans.append(
            VolumePlan(engine_name, True, f"volumeClaimTemplate {template} of StatefulSet/{_name(workload)}")
        )
        volumes.append({"name": template, "persistentVolumeClaim": {"claimName": engine_name}})
    return volumes, plans


def _container(
    container: Obj,
    pod_name: str,
    where: str,
    settings: StackSettings,
    secrets: dict[str, _SecretUse],
) -> tuple[Obj, ContainerPlan, list[str]]:
    c = copy.deepcopy(container)
    name = c["name"]
    env: list[Obj] = []
    values: dict[str, str] = {}
    secret_vars: dict[str, tuple[str, str]] = {}
    words: list[str] = []
    for var in c.get("env") or []:
        var_name = var["name"]
        if "value" in var:
            parts = expand_parts(str(var["value"]), values, secret_vars)
            words.append(str(var["value"]))
            if any(p.key is not None for p in parts):
                secret_name = _one_secret(parts, secret_vars, where, var_name)
                key = f"{var_name}.{where.split('/')[1]}.{name}"
                use = secrets[secret_name]
                use.derived[key] = tuple(
                    SecretPart(p.literal) if p.key is None else SecretPart(key=secret_vars[p.key][1])
                    for p in parts
                )
                env.append(
                    {"name": var_name, "valueFrom": {"secretKeyRef": {"name": use.engine_name, "key": key}}}
                )
                secret_vars[var_name] = (secret_name, key)
            else:
                value = "".join(p.literal for p in parts)
                values[var_name] = value
                env.append({"name": var_name, "value": value})
        elif "secretKeyRef" in (var.get("valueFrom") or {}):
            ref = var["valueFrom"]["secretKeyRef"]
            use = secrets.setdefault(ref["name"], _SecretUse(ref["name"], f"{settings.name}-{ref['name']}"))
            use.keys.add(ref["key"])
            secret_vars[var_name] = (ref["name"], ref["key"])
            env.append(
                {
                    "name": var_name,
                    "valueFrom": {"secretKeyRef": {"name": use.engine_name, "key": ref["key"]}},
                }
            )
        else:
            source = ", ".join(var.get("valueFrom") or {}) or "nothing"
            raise ConfigurationError(
                f"{where}: env {var_name} comes from {source}, which the "
                "stack cannot give under a container engine"
            )
    command = []
    for key in ("command", "args"):
        if key in c:
            expanded = []
            for arg in c[key]:
                parts = expand_parts(str(arg), values, secret_vars)
                if any(p.key is not None for p in parts):
                    raise ConfigurationError(
                        f"{where}: {key} use a secret variable ($(...)), "
                        "which would show the secret in the process list"
                    )
                expanded.append("".join(p.literal for p in parts))
            c[key] = expanded
            command += expanded
            words += expanded
    c["env"] = env
    probe = _probe(c.get("startupProbe") or c.get("readinessProbe"), c, where)
    for dropped in ("livenessProbe", "readinessProbe", "startupProbe", "lifecycle"):
        c.pop(dropped, None)
    repository = image_repository(str(c.get("image", "")))
    if repository not in settings.images:
        raise ConfigurationError(
            f"{where}: image {c.get('image')} is none of the project's "
            f"({', '.join(settings.images)}): the stack runs local images only"
        )
    c["image"] = settings.images[repository]
    c["imagePullPolicy"] = "Never"
    limits = (c.get("resources") or {}).get("limits") or {}
    plan = ContainerPlan(name, f"{pod_name}-{name}", probe, _cores(limits.get("cpu")), tuple(command))
    return c, plan, words


def _probe(probe: Obj | None, container: Obj, where: str) -> Probe | None:
    if not probe:
        return None
    period = float(probe.get("periodSeconds", 10))
    timeout_s = float(probe.get("timeoutSeconds", 1))
    allowed_s = (
        float(probe.get("initialDelaySeconds", 0)) + period * int(probe.get("failureThreshold", 3)) + 60
    )
    if "exec" in probe:
        command = tuple(probe["exec"]["command"])
        return Probe("exec", command=command, period_s=period, timeout_s=timeout_s, allowed_s=allowed_s)
    for kind, key in (("http", "httpGet"), ("tcp", "tcpSocket")):
        if key in probe:
            port = _port_number(probe[key]["port"], container, where)
            path = probe[key].get("path", "/")
            return Probe(
                kind, port=port, path=path, period_s=period, timeout_s=timeout_s, allowed_s=allowed_s
            )
    raise ConfigurationError(f"{where}: a probe of a kind the stack cannot poll ({', '.join(probe)})")


def _port_number(port: int | str, container: Obj, where: str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ConfigurationError(f"{where}: no container port named {port}")


# --- Services, ports ----------------------------------------------------------------


def _check_services(services: list[Obj], pods: list[PodPlan]) -> None:
    """A Service's clients connect to the pod directly under podman: its port must be
    the one the container listens on."""
    by_alias: dict[str, list[PodPlan]] = {}
    for pod in pods:
        for alias in pod.aliases:
            by_alias.setdefault(alias, []).append(pod)
    for service in services:
        targets = by_alias.get(_name(service), [])
        for port in (service.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort", port["port"])
            for pod in targets:
                number = _target_port(pod, target)
                if number is not None and number != port["port"]:
                    raise ConfigurationError(
                        f"Service/{_name(service)} maps port {port['port']} to {number}: under a "
                        "container engine clients reach the pod's own port, so make them equal"
                    )


def _target_port(pod: PodPlan, target: int | str) -> int | None:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in _pod_document(pod)["spec"]["containers"]:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def _publish(
    pods: list[PodPlan], services: list[Obj], wanted: tuple[Publish, ...]
) -> dict[str, tuple[Published, ...]]:
    """Add hostIP 127.0.0.1 and the host port to the first pod of each Service to open."""
    published: dict[str, list[Published]] = {}
    by_name = {_name(s): s for s in services}
    for publish in wanted:
        service = by_name.get(publish.service)
        pod = next((p for p in pods if publish.service in p.aliases), None)
        if service is None or pod is None:
            continue  # an overlay without it: nothing to open
        port = next(
            (p for p in service["spec"].get("ports") or [] if p.get("name") == publish.port_name), None
        )
        if port is None:
            raise ConfigurationError(f"Service/{publish.service} has no port named {publish.port_name}")
        number = _target_port(pod, port.get("targetPort", port["port"])) or port["port"]
        document = _pod_document(pod)
        document["metadata"]["labels"][PUBLISHED_LABEL] = publish.what
        for container in document["spec"]["containers"]:
            for declared in container.get("ports") or []:
                if int(declared["containerPort"]) == number:
                    declared["hostIP"] = "127.0.0.1"
                    declared["hostPort"] = publish.host_port
        published.setdefault(pod.name, []).append(Published(publish.what, publish.host_port, number))
    return {name: tuple(entries) for name, entries in published.items()}


def _unpublish_the_rest(pod: PodPlan) -> None:
    """Drop the container ports not published: podman 4 publishes a declared
    containerPort on every interface of the host, and under a container engine
    the pods reach each other's ports without declaring them."""
    for container in _pod_document(pod)["spec"]["containers"]:
        ports = [p for p in container.get("ports") or [] if p.get("hostPort")]
        if ports:
            container["ports"] = ports
        else:
            container.pop("ports", None)


def _pod_document(pod: PodPlan) -> Obj:
    return next(d for d in pod.documents if d.get("kind") == "Pod")


def start_tiers(pods: tuple[PodPlan, ...] | list[PodPlan]) -> list[list[PodPlan]]:
    """Pods in layers: a pod comes after every pod behind a Service it names."""
    placed: dict[str, int] = {}
    remaining = list(pods)
    tiers: list[list[PodPlan]] = []
    while remaining:
        ready = [
            p
            for p in remaining
            if all(all(q.name in placed for q in pods if need in q.aliases) for need in p.needs)
        ]
        if not ready:  # a cycle: start the rest together
            ready = remaining
        tiers.append(ready)
        for pod in ready:
            placed[pod.name] = len(tiers) - 1
        remaining = [p for p in remaining if p.name not in placed]
    return tiers


# --- secrets -------------------------------------------------------------------------


def _one_secret(
    parts: list[SecretPart], secret_vars: Mapping[str, tuple[str, str]], where: str, variable: str
) -> str:
    names = {secret_vars[p.key][0] for p in parts if p.key is not None}
    if len(names) > 1:
        raise ConfigurationError(
            f"{where}: env {variable} combines secrets {', '.join(sorted(names))}; "
            "the stack expands values from one secret only"
        )
    return names.pop()


class _SecretUse:
    """What the manifests read from one Secret (built up while translating)."""

    def __init__(self, source: str, engine_name: str) -> None:
        self.source, self.engine_name = source, engine_name
        self.keys: set[str] = set()
        self.derived: dict[str, tuple[SecretPart, ...]] = {}

    def plan(self) -> SecretPlan:
        return SecretPlan(
            self.engine_name, self.source, tuple(sorted(self.keys)), tuple(sorted(self.derived.items()))
        )


# --- small helpers ------------------------------------------------------------------


def image_repository(image: str) -> str:
    """``mlscale/server:0.1.0`` -> ``mlscale/server`` (a registry's port is kept)."""
    image = image.split("@", 1)[0]
    head, _, last = image.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _selects(service: Obj, labels: Mapping[str, str]) -> bool:
    selector = (service.get("spec") or {}).get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _mentions(text: str, host: str) -> bool:
    """``host`` as a whole name in ``text`` (a URL, ``--master-host=...``)."""
    return re.search(rf"(?<![\w.-]){re.escape(host)}(?![\w-])", text) is not None


def _cores(cpu: Any) -> float | None:
    if cpu is None:
        return None
    text = str(cpu)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", name):
        raise ConfigurationError(
            f"stack name {name!r}: lower-case letters, digits and dashes, at most 32, "
            "starting and ending with a letter or digit"
        )
