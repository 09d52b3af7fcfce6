"""Policies a rendered deployment must meet, beyond what the schemas say.

Each check is a pure function from the rendered objects (dicts, as
``kubectl kustomize`` prints them) to a list of :class:`Problem`. They encode
the reliability contract of DESIGN.md ("containers run as non-root with a
read-only root file system", "a rolling update under load loses nothing") and
the mistakes that schemas let through: an unpinned image, a password in plain
text, a Service that selects no pod, a load balancer open to everyone, an HPA
without bounds or behaviour, a variable that Kubernetes will not expand.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from mlscale.k8s import (
    LOCUST_CONTAINER,
    LOCUST_WORKER,
    LOCUSTFILE_IN_IMAGE,
    SERVER,
    SERVER_CONTAINER,
)
from mlscale.k8s.plan import DeploySizing, locust_workers_for

Obj = dict[str, Any]

# Kinds whose spec holds a pod template, and where it is.
_POD_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
# Environment variable names that hold credentials: their value must come from a Secret.
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|API_KEY", re.IGNORECASE
)
# scheme://user:password@host with a literal password (not a $(VAR) reference).
_URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?!\$\()[^@\s]+@")
# ConfigMap keys and config-file settings that name a credential ("key" alone
# as the last word: tls.key, signing-key; not "monkey" or "key_column").
_CREDENTIAL_KEY = re.compile(_SECRET_NAME.pattern + r"|PWD|(?:^|[_.-])KEY$", re.IGNORECASE)
# Files in a ConfigMap that are configuration (name = value lines), as opposed
# to scripts, whose `password = os.environ[...]` is code, not a value.
_CONFIG_FILE_SUFFIXES = (".ini", ".cfg", ".conf", ".env", ".properties", ".toml", ".yaml", ".yml")
# `name = value` or `name: value` with a literal value: not empty, not a
# ${VAR}/$(VAR)/%(var)s reference, not a comment.
_CONFIG_SETTING = re.compile(r"""^\s*["']?([\w.-]+)["']?\s*[=:]\s*["']?(?![$%]|["'#;]|\s*$)\S""")
# kustomize's generator suffix: a hyphen and 10 characters of its hash alphabet.
_GENERATED_NAME = re.compile(r"-[2456789bcdfghkmt]{10}$")
_VAR_REFERENCE = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class Problem:
    check: str  # the policy's name, e.g. "resources"
    where: str  # "Deployment/mlscale-server container server", or a file
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message} [{self.check}]"


def name_of(obj: Obj) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def pod_spec(obj: Obj) -> Obj | None:
    path = _POD_PATHS.get(obj.get("kind", ""))
    node: Any = obj
    for key in path or ():
        node = node.get(key) if isinstance(node, dict) else None
    return node if path and isinstance(node, dict) else None


def containers(obj: Obj) -> Iterator[tuple[Obj, Obj, str]]:
    """(pod spec, container, where) for every container and init container of ``obj``."""
    spec = pod_spec(obj)
    if spec is None:
        return
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            yield spec, container, f"{name_of(obj)} container {container.get('name')}"


def _pod_labels(obj: Obj) -> dict[str, str]:
    template = obj.get("spec", {}).get("template", {}) if obj.get("kind") != "Pod" else obj
    return (template.get("metadata") or {}).get("labels") or {}


def _namespace(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("namespace") or "default"


# --- containers -----------------------------------------------------------------------


def check_no_replication_controllers(objects: list[Obj]) -> list[Problem]:
    return [
        Problem("workload-kind", name_of(o), "ReplicationController is deprecated: use a Deployment")
        for o in objects
        if o.get("kind") == "ReplicationController"
    ]


def check_resources(objects: list[Obj]) -> list[Problem]:
    """Requests let the scheduler place pods and the HPA compute utilisation; limits cap them."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                missing = [r for r in ("cpu", "memory") if r not in (resources.get(bound) or {})]
                if missing:
                    problems.append(Problem("resources", where, f"no {bound} for {', '.join(missing)}"))
    return problems


def check_probes(objects: list[Obj]) -> list[Problem]:
    """A container that serves (declares a port) needs readiness and liveness probes."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            if not container.get("ports"):
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in container:
                    problems.append(Problem("probes", where, f"serves on a port but has no {probe}"))
    return problems


def check_security(objects: list[Obj]) -> list[Problem]:
    """Non-root, no privilege escalation, a read-only root file system."""
    problems = []
    for obj in objects:
        for spec, container, where in containers(obj):
            pod_context = spec.get("securityContext") or {}
            context = container.get("securityContext") or {}
            non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
            user = context.get("runAsUser", pod_context.get("runAsUser"))
            if non_root is not True:
                problems.append(Problem("non-root", where, "runAsNonRoot is not true"))
            if user == 0:
                problems.append(Problem("non-root", where, "runAsUser is 0 (root)"))
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(Problem("non-root", where, "allowPrivilegeEscalation is not false"))
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(Problem("read-only-root", where, "readOnlyRootFilesystem is not true"))
    return problems


def check_images(objects: list[Obj]) -> list[Problem]:
    """Every image names a fixed version: a tag other than latest, or a digest."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            image = str(container.get("image") or "")
            if "@sha256:" in image:
                continue
            last = image.rsplit("/", 1)[-1]
            tag = last.split(":", 1)[1] if ":" in last else None
            if not image:
                problems.append(Problem("image-pinned", where, "no image"))
            elif tag is None or tag == "latest":
                problems.append(
                    Problem(
                        "image-pinned",
                        where,
                        f"image {image!r} is not pinned to a version (a tag other than latest, or a digest)",
                    )
                )
    return problems


def check_secrets_not_plain(objects: list[Obj]) -> list[Problem]:
    """Credentials come from Secrets, never from a literal value in a manifest."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            for variable in container.get("env") or []:
                name, value = str(variable.get("name", "")), variable.get("value")
                if value in (None, ""):
                    continue
                if _SECRET_NAME.search(name):
                    problems.append(
                        Problem(
                            "secrets",
                            where,
                            f"{name} has a literal value: take it from a Secret (valueFrom.secretKeyRef)",
                        )
                    )
                elif _URL_PASSWORD.search(str(value)):
                    problems.append(
                        Problem(
                            "secrets",
                            where,
                            f"{name} holds a URL with a literal "
                            "password: build it from $(VARS) set from a Secret",
                        )
                    )
            for arg in [*(container.get("command") or []), *(container.get("args") or [])]:
                if _URL_PASSWORD.search(str(arg)):
                    problems.append(
                        Problem("secrets", where, "an argument holds a URL with a literal password")
                    )
        if obj.get("kind") == "Secret":
            problems += _secret_in_manifest(obj)
        elif obj.get("kind") == "ConfigMap":
            problems += _credentials_in_config_map(obj)
    return problems


def _secret_in_manifest(secret: Obj) -> list[Problem]:
    """A Secret written out in YAML: stringData is plain text, data only base64 of it.

    Generated Secrets are the exception: kustomize's secretGenerator reads an
    untracked file (deploy/components/postgres-secret) and names the Secret with
    a hash of its content, which is how they are told apart here. Its
    ``literals`` would put the values in the kustomization itself: tests keep
    those out of deploy/.
    """
    filled = [key for key in ("stringData", "data") if secret.get(key)]
    name = str((secret.get("metadata") or {}).get("name") or "")
    if not filled or _GENERATED_NAME.search(name):
        return []
    what = "in plain text" if filled[0] == "stringData" else "only base64-encoded, which anyone reads"
    return [
        Problem(
            "secrets",
            name_of(secret),
            f"{filled[0]} in a manifest: the values are {what}; "
            "create the Secret with `kubectl create secret` or a secretGenerator "
            "reading an untracked file",
        )
    ]


def _credentials_in_config_map(config_map: Obj) -> list[Problem]:
    """A ConfigMap is readable by anyone who may read the namespace's configuration:
    no credential-looking key with a value, no `password = ...` in a config file."""
    problems = []
    for section in ("data", "binaryData"):
        for key, value in (config_map.get(section) or {}).items():
            text = str(value or "")
            if not text.strip():
                continue
            if _CREDENTIAL_KEY.search(str(key)):
                problems.append(
                    Problem(
                        "secrets",
                        name_of(config_map),
                        f"{section} key {key!r} looks like a credential and has a value: put it in a Secret",
                    )
                )
            elif _URL_PASSWORD.search(text):
                problems.append(
                    Problem("secrets", name_of(config_map), f"{key!r} holds a URL with a literal password")
                )
            elif section == "data" and str(key).endswith(_CONFIG_FILE_SUFFIXES):
                for line in text.splitlines():
                    setting = _CONFIG_SETTING.match(line)
                    if setting and _CREDENTIAL_KEY.search(setting.group(1)):
                        problems.append(
                            Problem(
                                "secrets",
                                name_of(config_map),
                                f"{key!r} sets "
                                f"{setting.group(1)} to a literal value: take it "
                                "from a Secret (an environment variable)",
                            )
                        )
    return problems


def check_variable_references(objects: list[Obj]) -> list[Problem]:
    """$(VAR) is expanded only from variables defined before it (in env) or at all (in args).

    Kustomize's strategic merge puts patched variables first, so a reference
    that was fine in the base can end up before its definition.
    """
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            defined: list[str] = []
            env = [str(v.get("name")) for v in container.get("env") or []]
            for variable in container.get("env") or []:
                for ref in _VAR_REFERENCE.findall(str(variable.get("value") or "")):
                    if ref not in defined:
                        later = "is defined after it" if ref in env else "is not defined"
                        problems.append(
                            Problem(
                                "variables",
                                where,
                                f"{variable.get('name')} uses $({ref}), which {later}: it stays unexpanded",
                            )
                        )
                defined.append(str(variable.get("name")))
            for arg in [*(container.get("command") or []), *(container.get("args") or [])]:
                for ref in _VAR_REFERENCE.findall(str(arg)):
                    if ref not in env:
                        problems.append(
                            Problem(
                                "variables", where, f"argument {arg!r} uses $({ref}), which is not in env"
                            )
                        )
    return problems


# --- Services, autoscaling, disruption -----------------------------------------------


def check_services_select_pods(objects: list[Obj]) -> list[Problem]:
    """A Service whose selector matches no pod template answers nothing."""
    templates = [(_namespace(o), _pod_labels(o)) for o in objects if pod_spec(o) is not None]
    problems = []
    for service in (o for o in objects if o.get("kind") == "Service"):
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            continue  # selector-less Services point at manual Endpoints
        if not any(
            ns == _namespace(service) and selector.items() <= labels.items() for ns, labels in templates
        ):
            problems.append(
                Problem("service-selector", name_of(service), f"selector {selector} matches no pod template")
            )
    return problems


# The private IPv4 ranges (RFC 1918), where clusters put their pods and Services.
_PRIVATE_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_EVERYONE = ("0.0.0.0/0", "::/0")


def check_exposure(objects: list[Obj]) -> list[Problem]:
    """Load balancers admit named ranges, and no ipBlock lets the cluster's own pods in.

    A LoadBalancer without loadBalancerSourceRanges is open to the internet (or
    the whole VPC). An ipBlock that holds a whole private range holds the pod
    range too, and NetworkPolicies match pods by address as well as by label:
    every pod would get in past the label rules, unless `except` cuts it out.
    """
    problems = []
    for service in (o for o in objects if o.get("kind") == "Service"):
        spec = service.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        ranges = [str(r) for r in spec.get("loadBalancerSourceRanges") or []]
        if not ranges:
            problems.append(
                Problem(
                    "exposure",
                    name_of(service),
                    "a LoadBalancer without loadBalancerSourceRanges is open to every address",
                )
            )
        elif set(ranges) & set(_EVERYONE):
            problems.append(
                Problem("exposure", name_of(service), "loadBalancerSourceRanges admits every address")
            )
    for policy in (o for o in objects if o.get("kind") == "NetworkPolicy"):
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            for peer in rule.get("from") or []:
                block = peer.get("ipBlock") or {}
                try:
                    network = ipaddress.ip_network(str(block.get("cidr")), strict=False)
                except ValueError:
                    continue  # a placeholder, or for the API server to reject
                held = [
                    str(p) for p in _PRIVATE_RANGES if p.version == network.version and network.supernet_of(p)
                ]
                if held and not block.get("except"):
                    problems.append(
                        Problem(
                            "exposure",
                            name_of(policy),
                            f"ipBlock {network} holds "
                            f"all of {held[0]}, where the cluster's pods are: "
                            "they would match it whatever their labels; name "
                            "a narrower range or add `except`",
                        )
                    )
    return problems


def check_autoscaling(objects: list[Obj]) -> list[Problem]:
    """Each HPA: autoscaling/v2, explicit scale-down behaviour, a real target within its bounds."""
    problems = []
    workloads = {
        (o.get("kind"), _namespace(o), o["metadata"]["name"]): o for o in objects if pod_spec(o) is not None
    }
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    for hpa in (o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"):
        where, spec = name_of(hpa), hpa.get("spec") or {}
        if hpa.get("apiVersion") != "autoscaling/v2":
            problems.append(Problem("hpa", where, f"{hpa.get('apiVersion')}: use autoscaling/v2"))
        if not (spec.get("behavior") or {}).get("scaleDown"):
            problems.append(
                Problem(
                    "hpa",
                    where,
                    "no behavior.scaleDown: write the scale-down policy out rather than rely on defaults",
                )
            )
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if not all(isinstance(bound, int) for bound in (low, high)):
            continue  # the schema check reports it
        if low > high:
            problems.append(Problem("hpa", where, f"minReplicas {low} > maxReplicas {high}"))
        ref = spec.get("scaleTargetRef") or {}
        target = workloads.get((ref.get("kind"), _namespace(hpa), ref.get("name")))
        if target is None:
            problems.append(
                Problem(
                    "hpa", where, f"its target {ref.get('kind')}/{ref.get('name')} is not among the objects"
                )
            )
            continue
        replicas = (target.get("spec") or {}).get("replicas", 1)
        if not low <= replicas <= high:
            problems.append(
                Problem(
                    "hpa", where, f"{name_of(target)} has {replicas} replicas, outside the HPA's {low}-{high}"
                )
            )
        for _spec, container, container_where in containers(target):
            if "cpu" not in ((container.get("resources") or {}).get("requests") or {}):
                problems.append(
                    Problem(
                        "hpa", container_where, "no CPU request: the HPA's CPU utilisation is relative to it"
                    )
                )
        labels = _pod_labels(target)
        if not any(
            _namespace(b) == _namespace(target)
            and ((b.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items() <= labels.items()
            for b in budgets
        ):
            problems.append(
                Problem(
                    "disruption-budget",
                    name_of(target),
                    "autoscaled but no PodDisruptionBudget selects its pods",
                )
            )
    return problems


# --- the model server and the load generator -----------------------------------------


def _is_mlscale_serve(container: Obj) -> bool:
    words = [*(container.get("command") or []), *(container.get("args") or [])]
    return words[:2] == ["mlscale", "serve"]


def _option(words: list[str], *names: str) -> str | None:
    for index, word in enumerate(words):
        if word in names and index + 1 < len(words):
            return str(words[index + 1])
        for name in names:
            if name.startswith("--") and str(word).startswith(f"{name}="):
                return str(word).split("=", 1)[1]
    return None


def check_model_server(objects: list[Obj]) -> list[Problem]:
    """mlscale serve: scraped by Prometheus, and drained before it stops."""
    problems = []
    for obj in objects:
        template = (obj.get("spec") or {}).get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        for spec, container, where in containers(obj):
            if not _is_mlscale_serve(container):
                continue
            if annotations.get("prometheus.io/scrape") != "true":
                problems.append(Problem("metrics", where, "no prometheus.io/scrape annotation"))
            words = [*(container.get("command") or []), *(container.get("args") or [])]
            pre_stop = ((container.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}
            pause = float(pre_stop.get("seconds", 0))
            drain = float(_option(words, "--drain-delay") or 0)
            if pause == 0 and drain == 0:
                problems.append(
                    Problem(
                        "graceful-shutdown",
                        where,
                        "no preStop sleep and no --drain-delay: requests routed during endpoint removal fail",
                    )
                )
            grace = float(spec.get("terminationGracePeriodSeconds", 30))
            graceful = float(_option(words, "--graceful-timeout") or 30)
            if grace < pause + drain + graceful:
                problems.append(
                    Problem(
                        "graceful-shutdown",
                        where,
                        f"terminationGracePeriodSeconds "
                        f"{grace:g} < preStop {pause:g} + drain {drain:g} + "
                        f"graceful timeout {graceful:g}: in-flight requests are "
                        "killed",
                    )
                )
    return problems


def check_locust(objects: list[Obj]) -> list[Problem]:
    """Locust runs the locustfile mlscale ships, as master or worker, against TARGET_HOST."""
    problems = []
    for obj in objects:
        for _spec, container, where in containers(obj):
            words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
            if not words or words[0].rsplit("/", 1)[-1] != "locust":
                continue
            locustfile = _option(words, "-f", "--locustfile")
            if locustfile != LOCUSTFILE_IN_IMAGE:
                problems.append(
                    Problem(
                        "locust",
                        where,
                        f"runs {locustfile!r}, not mlscale's locustfile {LOCUSTFILE_IN_IMAGE}",
                    )
                )
            if not {"--master", "--worker"} & set(words):
                problems.append(Problem("locust", where, "neither --master nor --worker"))
            env = {v.get("name") for v in container.get("env") or []}
            if "TARGET_HOST" not in env and _option(words, "-H", "--host") is None:
                problems.append(Problem("locust", where, "no TARGET_HOST (or --host): no target"))
    return problems


POLICIES: tuple[Callable[[list[Obj]], list[Problem]], ...] = (
    check_no_replication_controllers,
    check_resources,
    check_probes,
    check_security,
    check_images,
    check_secrets_not_plain,
    check_variable_references,
    check_services_select_pods,
    check_exposure,
    check_autoscaling,
    check_model_server,
    check_locust,
)


def check_all(objects: list[Obj]) -> list[Problem]:
    """Every policy's problems. A policy that trips over a malformed object (one the
    schemas reject, say) reports that, rather than stopping the others."""
    problems = []
    for policy in POLICIES:
        try:
            problems += policy(objects)
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
            name = policy.__name__.removeprefix("check_")
            problems.append(
                Problem(
                    "policy-error",
                    name,
                    f"could not check malformed objects ({exc!r}); see the schema problems",
                )
            )
    return problems


# --- a rendered overlay against its plan ---------------------------------------------


def check_against_plan(objects: list[Obj], sizing: DeploySizing) -> list[Problem]:
    """The rendered numbers are the plan's: replicas, CPU, memory, workers, HPA, Locust."""
    problems: list[Problem] = []

    def expect(where: str, what: str, actual: object, wanted: object) -> None:
        if actual != wanted:
            problems.append(Problem("plan", where, f"{what} is {actual!r}, the plan says {wanted!r}"))

    by_name = {(o.get("kind"), o["metadata"]["name"]): o for o in objects}
    server = by_name.get(("Deployment", SERVER))
    hpa = by_name.get(("HorizontalPodAutoscaler", SERVER))
    locust = by_name.get(("Deployment", LOCUST_WORKER))
    for found, label in (
        (server, f"Deployment/{SERVER}"),
        (hpa, f"HorizontalPodAutoscaler/{SERVER}"),
        (locust, f"Deployment/{LOCUST_WORKER}"),
    ):
        if found is None:
            problems.append(Problem("plan", label, "missing from the rendered objects"))
    if server is not None:
        expect(name_of(server), "replicas", server["spec"].get("replicas"), sizing.pods)
        for _spec, container, where in containers(server):
            if container.get("name") != SERVER_CONTAINER:
                continue
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                values = resources.get(bound) or {}
                expect(where, f"{bound}.cpu", cpu_millicores(values.get("cpu")), sizing.cpu_millicores)
                expect(where, f"{bound}.memory", memory_mib(values.get("memory")), sizing.memory_mib)
            words = [*(container.get("command") or []), *(container.get("args") or [])]
            expect(where, "-w", _option(words, "-w", "--workers"), str(sizing.workers_per_pod))
    if hpa is not None:
        spec = hpa.get("spec") or {}
        expect(name_of(hpa), "minReplicas", spec.get("minReplicas"), sizing.hpa_min_replicas)
        expect(name_of(hpa), "maxReplicas", spec.get("maxReplicas"), sizing.hpa_max_replicas)
        targets = [
            m["resource"]["target"].get("averageUtilization")
            for m in spec.get("metrics") or []
            if m.get("type") == "Resource" and m["resource"].get("name") == "cpu"
        ]
        expect(name_of(hpa), "CPU target", targets, [sizing.hpa_target_cpu_utilization])
    if locust is not None:
        # The count depends on the CPU each worker has, as rendered: a worker of
        # half a CPU sends half the requests.
        workers = [
            c for c in (pod_spec(locust) or {}).get("containers") or [] if c.get("name") == LOCUST_CONTAINER
        ]
        requests = ((workers[0].get("resources") or {}).get("requests") or {}) if workers else {}
        millicores = cpu_millicores(requests.get("cpu")) or 1000
        wanted = locust_workers_for(sizing.target_rps, millicores / 1000)
        expect(
            name_of(locust),
            f"replicas (workers of {millicores}m CPU)",
            locust["spec"].get("replicas"),
            wanted,
        )
    return problems


def cpu_millicores(quantity: object) -> int | None:
    """``"500m"``, ``"0.5"`` or ``0.5`` as 500; None when absent or unreadable."""
    text = str(quantity) if quantity is not None else ""
    try:
        return round(float(text[:-1])) if text.endswith("m") else round(float(text) * 1000)
    except ValueError:
        return None


_MEMORY_UNITS = {
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024**2,
    "k": 1000 / 1024**2,
    "M": 1000**2 / 1024**2,
    "G": 1000**3 / 1024**2,
}


def memory_mib(quantity: object) -> int | None:
    """``"512Mi"``, ``"1Gi"`` or bytes as MiB, rounded up; None when absent or unreadable."""
    text = str(quantity) if quantity is not None else ""
    for unit, factor in _MEMORY_UNITS.items():
        if text.endswith(unit):
            text, scale = text[: -len(unit)], factor
            break
    else:
        scale = 1 / 1024**2
    try:
        value = float(text) * scale
    except ValueError:
        return None
    return int(value) if value == int(value) else int(value) + 1
