"""Render a kustomize overlay sized from a plan.

The folder written is self-contained, so that ``kubectl kustomize DIR`` and
``kubectl apply -k DIR`` work wherever it is moved: it holds a copy of
deploy/base (and of the chosen overlay, at the same relative place as in
deploy/), the plan it was sized from, and a kustomization with three small
patches: the model server's replicas, CPU, memory and worker processes, the
HPA's bounds and target, and the Locust workers for the target load (as many
as the CPU the overlay gives each of them calls for).

:func:`overlay_files` is pure (plan in, file texts out); :func:`render_plan`
does the copying and writing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from mlscale.errors import ConfigurationError
from mlscale.k8s import LOCUST_CONTAINER, LOCUST_WORKER, SERVER, SERVER_CONTAINER
from mlscale.k8s.documents import document
from mlscale.k8s.inflight import KEDA, InflightScaling, inflight_files
from mlscale.k8s.objects import cpu_millicores
from mlscale.k8s.paths import deploy_root, overlay_dir
from mlscale.k8s.plan import RPS_PER_LOCUST_WORKER, DeploySizing, sizing_from_plan
from mlscale.schemas.plan import Plan

# The first line of every kustomization this module writes: a folder that has
# a kustomization without it is someone else's, and is never overwritten.
MARKER = "# Written by `mlscale k8s render`"
PLAN_FILE = "plan.json"
# What render owns in an output folder, and replaces on every run.
_OWNED = (
    "kustomization.yaml",
    PLAN_FILE,
    "server.yaml",
    "hpa.yaml",
    "locust.yaml",
    "scaledobject.yaml",
    "prometheus-adapter-values.yaml",
    "servingruntime.yaml",
    "inferenceservice.yaml",
    "namespace.yaml",
    "base",
    "overlays",
    "components",
)


def render_plan(
    plan: Plan,
    out_dir: str,
    *,
    overlay: str | None = None,
    model_uri: str | None = None,
    inflight: InflightScaling | None = None,
) -> str:
    """Write an overlay sized from ``plan`` to ``out_dir``; returns the folder's path.

    ``overlay`` (``"local"`` or ``"gke"``) builds on that overlay instead of the
    bare base (``None`` or ``"base"``); ``model_uri`` replaces the base's
    ``models:/wine-quality/1``; ``inflight`` scales on requests in flight
    instead of the base's HPA on CPU.
    """
    overlay = None if overlay == "base" else overlay
    sizing = sizing_for_overlay(plan, overlay)
    root = deploy_root()
    source_overlay = overlay_dir(overlay) if overlay is not None else None
    out = prepare_out_dir(out_dir)
    # *.env files are credentials a user created for a secret generator: they
    # stay where they are.
    ignore = shutil.ignore_patterns("*.env", "__pycache__")
    shutil.copytree(root / "base", out / "base", ignore=ignore)
    shutil.copytree(root / "components", out / "components", ignore=ignore)
    resource = "base"
    if source_overlay is not None:
        resource = f"overlays/{overlay}"
        shutil.copytree(source_overlay, out / resource, ignore=ignore)
    server_args = base_server_args(out / "base" / "server.yaml")
    keda = inflight is not None and inflight.via == KEDA
    files = overlay_files(
        sizing,
        resource=resource,
        server_args=server_args,
        model_uri=model_uri,
        extra_resources=("scaledobject.yaml",) if keda else (),
    )
    if inflight is not None:
        files.update(
            inflight_files(
                sizing,
                inflight,
                namespace=base_namespace(out / "base"),
                behavior=base_hpa_behavior(out / "base" / "server.yaml"),
            )
        )
    write_files(out, files, plan)
    return str(out)


def write_files(out: Path, files: dict[str, str], plan: Plan) -> None:
    """The rendered files and the plan they come from, into ``out``."""
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / PLAN_FILE).write_text(plan.to_json() + "\n", encoding="utf-8")


def sizing_for_overlay(plan: Plan, overlay: str | None) -> DeploySizing:
    """The plan's sizing, with the Locust workers counted for the overlay's worker CPU.

    The local overlay gives each worker half a CPU: rendering on it needs twice
    the workers of one CPU that the bare base or gke get for the same load.
    """
    root = deploy_root()
    folders = [root / "base"] + ([overlay_dir(overlay)] if overlay not in (None, "base") else [])
    return sizing_from_plan(plan).with_locust_worker_cpu(locust_worker_cpu(folders))


def locust_worker_cpu(folders: list[Path]) -> float:
    """Cores per Locust worker: its CPU request in the last of ``folders`` that sets it.

    The base, then the overlay's patches; the request, because that is what the
    scheduler reserves (the committed manifests set limit = request). Only
    plain YAML documents naming the Deployment are read, which is how the base
    and the overlays set it; the render's patch then writes the value it
    counted with, so the count and the CPU cannot drift apart.
    """
    cores = 1.0
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            try:
                documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigurationError(f"Cannot read {path}: {exc}") from None
            for doc in documents:
                found = _worker_cpu_in(doc)
                if found is not None:
                    cores = found
    return cores


def _worker_cpu_in(doc: Any) -> float | None:
    if not (
        isinstance(doc, dict)
        and doc.get("kind") == "Deployment"
        and (doc.get("metadata") or {}).get("name") == LOCUST_WORKER
    ):
        return None
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        if isinstance(container, dict) and container.get("name") == LOCUST_CONTAINER:
            resources = container.get("resources") or {}
            for bound in ("requests", "limits"):
                millicores = cpu_millicores((resources.get(bound) or {}).get("cpu"))
                if millicores:
                    return millicores / 1000
    return None


def overlay_files(
    sizing: DeploySizing,
    *,
    resource: str,
    server_args: list[str],
    model_uri: str | None = None,
    extra_resources: tuple[str, ...] = (),
) -> dict[str, str]:
    """The kustomization and its patches, as file name -> YAML text; ``extra_resources``
    are files of whole objects the kustomization adds to ``resource``."""
    args = set_option(server_args, ("-w", "--workers"), str(sizing.workers_per_pod))
    if model_uri:
        args = set_option(args, ("-m", "--model-uri"), model_uri)
    cpu, memory = f"{sizing.cpu_millicores}m", f"{sizing.memory_mib}Mi"
    server = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": SERVER},
        "spec": {
            "replicas": sizing.pods,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": SERVER_CONTAINER,
                            "args": args,
                            "resources": {
                                "requests": {"cpu": cpu, "memory": memory},
                                "limits": {"cpu": cpu, "memory": memory},
                            },
                        }
                    ]
                }
            },
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": SERVER},
        "spec": {
            "minReplicas": sizing.hpa_min_replicas,
            "maxReplicas": sizing.hpa_max_replicas,
            # A list without a merge key: the patch replaces it whole.
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": sizing.hpa_target_cpu_utilization,
                        },
                    },
                }
            ],
        },
    }
    worker_cpu = f"{round(sizing.locust_worker_cpu * 1000)}m"
    locust = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": LOCUST_WORKER},
        "spec": {
            "replicas": sizing.locust_workers,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": LOCUST_CONTAINER,
                            "resources": {"requests": {"cpu": worker_cpu}, "limits": {"cpu": worker_cpu}},
                        }
                    ]
                }
            },
        },
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [resource, *extra_resources],
        "patches": [{"path": "server.yaml"}, {"path": "hpa.yaml"}, {"path": "locust.yaml"}],
    }
    target = f"{sizing.target:g} {'concurrent users' if sizing.target_kind == 'users' else 'requests/s'}"
    return {
        "kustomization.yaml": document(
            kustomization,
            [
                MARKER[2:] + f" from {PLAN_FILE}; render again rather than edit.",
                sizing.sentence or f"Sized for {target}.",
                "Apply: kubectl apply -k .   Check: mlscale k8s validate .",
            ],
        ),
        "server.yaml": document(
            server,
            [
                f"The model server at the target load ({target}): {sizing.pods} pods",
                f"of {cpu} CPU and {memory}, {sizing.workers_per_pod} worker process(es) each.",
                "CPU request = limit: the HPA's utilisation is relative to the request,",
                "and a pod never uses CPU the scheduler did not reserve.",
            ],
        ),
        "hpa.yaml": document(
            hpa,
            [
                f"From the plan: {sizing.hpa_min_replicas} to {sizing.hpa_max_replicas} pods, adding",
                f"pods above {sizing.hpa_target_cpu_utilization} % of the CPU request. The scale-up",
                "and scale-down behaviour stays the base's.",
            ],
        ),
        "locust.yaml": document(
            locust,
            [
                f"{sizing.locust_workers} Locust worker(s) of {worker_cpu} CPU for {sizing.target_rps:g} requests/s:",
                f"one worker of one CPU per {RPS_PER_LOCUST_WORKER:g} requests/s, fewer for a smaller one,",
                "rounded up (users: one request per think time).",
                "The CPU is the overlay's, written here because the count depends on it.",
                "Add workers if Locust warns that a worker's CPU is above 90 %.",
            ],
        ),
    }


def base_namespace(base: Path) -> str:
    """The namespace the base puts its objects in (its kustomization's ``namespace``)."""
    try:
        data = yaml.safe_load((base / "kustomization.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"Cannot read {base / 'kustomization.yaml'}: {exc}") from None
    return str(data.get("namespace") or "default")


def base_hpa_behavior(server_yaml: Path) -> dict[str, Any] | None:
    """The base HPA's ``behavior``, which a KEDA ScaledObject carries over to the HPA it makes."""
    try:
        documents = list(yaml.safe_load_all(server_yaml.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"Cannot read {server_yaml}: {exc}") from None
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
            behavior = (doc.get("spec") or {}).get("behavior")
            return behavior if isinstance(behavior, dict) else None
    return None


def base_server_args(server_yaml: Path) -> list[str]:
    """The model server container's args in the base, which the sizing patch amends."""
    try:
        documents = list(yaml.safe_load_all(server_yaml.read_text(encoding="utf-8")))
        deployment = next(
            d for d in documents if d and d.get("kind") == "Deployment" and d["metadata"]["name"] == SERVER
        )
        container = next(
            c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == SERVER_CONTAINER
        )
        return [str(arg) for arg in container["args"]]
    except (OSError, yaml.YAMLError, StopIteration, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{server_yaml} has no Deployment {SERVER!r} with a container {SERVER_CONTAINER!r} "
            f"and args: {exc!r}."
        ) from exc


def set_option(args: list[str], names: tuple[str, ...], value: str) -> list[str]:
    """``args`` with the option ``names`` (``-w``, ``--workers``…) set to ``value``.

    Its first occurrence keeps its place (``-w 2`` or ``--workers=2``); other
    occurrences are dropped; an option not there is appended.
    """
    result: list[str] = []
    placed = False
    index = 0
    while index < len(args):
        arg = args[index]
        inline = next((n for n in names if n.startswith("--") and arg.startswith(f"{n}=")), None)
        if arg in names or inline:
            if not placed:
                result += [f"{inline}={value}"] if inline else [arg, value]
                placed = True
            index += 1 if inline else 2
            continue
        result.append(arg)
        index += 1
    return result if placed else [*result, names[0], value]


def check_writable(out: Path) -> None:
    """Render only into a new or empty folder, or over a previous render."""
    if out.exists() and not out.is_dir():
        raise ConfigurationError(f"--out {out} is a file; give a folder.")
    if not out.exists() or not any(out.iterdir()):
        return
    kustomization = out / "kustomization.yaml"
    first = ""
    if kustomization.is_file():
        first = kustomization.read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
    if not first.startswith(MARKER):
        raise ConfigurationError(
            f"{out} is not empty and was not written by `mlscale k8s render`; "
            "render into a new or empty folder."
        )


def prepare_out_dir(out_dir: str) -> Path:
    """``out_dir``, created, with what an earlier render wrote there removed."""
    out = Path(out_dir)
    check_writable(out)
    for name in _OWNED:
        _remove(out / name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        os.remove(path)
