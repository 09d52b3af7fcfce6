"""Rendered Kubernetes objects as ``kubectl kustomize`` prints them (dicts), the
problems found in them, and the small readers every check shares: an object's
name, its pod template, its containers, an option of a container's command, and
CPU and memory quantities."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

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


def pod_labels(obj: Obj) -> dict[str, str]:
    template = obj.get("spec", {}).get("template", {}) if obj.get("kind") != "Pod" else obj
    return (template.get("metadata") or {}).get("labels") or {}


def namespace(obj: Obj) -> str:
    return (obj.get("metadata") or {}).get("namespace") or "default"


def command_option(words: list[str], *names: str) -> str | None:
    """The value of ``names`` (``-w 2``, ``--workers=2``) in a command's words; None if absent."""
    for index, word in enumerate(words):
        if word in names and index + 1 < len(words):
            return str(words[index + 1])
        for name in names:
            if name.startswith("--") and str(word).startswith(f"{name}="):
                return str(word).split("=", 1)[1]
    return None


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
