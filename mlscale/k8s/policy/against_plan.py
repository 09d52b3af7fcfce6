"""A rendered folder against the plan it was rendered from: replicas, CPU,
memory, worker processes, the autoscaler's bounds and target (an HPA on CPU or
on requests in flight, or a KEDA ScaledObject), and Locust workers; or, for
``--target kserve``, the InferenceService's."""

from __future__ import annotations

from mlscale.k8s import LOCUST_CONTAINER, LOCUST_WORKER, SERVER, SERVER_CONTAINER
from mlscale.k8s.inflight import INFLIGHT_METRIC, threshold_text
from mlscale.k8s.kserve import KSERVE_CONTAINER
from mlscale.k8s.objects import (
    Obj,
    Problem,
    command_option,
    containers,
    cpu_millicores,
    memory_mib,
    name_of,
    pod_spec,
)
from mlscale.k8s.plan import DeploySizing, locust_workers_for


def scales_on_inflight(objects: list[Obj]) -> bool:
    """Whether the objects scale on requests in flight (a KEDA ScaledObject, an HPA on the
    in-flight Pods metric, an InferenceService on KServe's KEDA autoscaler): then the
    plan's in-flight target is needed to check them."""
    for obj in objects:
        spec = obj.get("spec") or {}
        kind = obj.get("kind")
        if kind == "ScaledObject":
            return True
        if kind == "HorizontalPodAutoscaler" and any(
            m.get("type") == "Pods" and (m.get("pods") or {}).get("metric", {}).get("name") == INFLIGHT_METRIC
            for m in spec.get("metrics") or []
        ):
            return True
        if kind == "InferenceService" and ((spec.get("predictor") or {}).get("autoScaling") or {}).get(
            "metrics"
        ):
            return True
    return False


def check_against_plan(
    objects: list[Obj], sizing: DeploySizing, inflight_target: float | None = None
) -> list[Problem]:
    """The rendered numbers are the plan's: replicas, CPU, memory, workers, the autoscaler,
    Locust. ``inflight_target``: the plan's requests in flight per pod, for objects that
    scale on them (:func:`scales_on_inflight`)."""
    problems: list[Problem] = []

    def expect(where: str, what: str, actual: object, wanted: object) -> None:
        problems.extend(_differs(where, what, actual, wanted))

    if any(o.get("kind") == "InferenceService" for o in objects):
        return _check_kserve(objects, sizing, inflight_target)
    by_name = {(o.get("kind"), o["metadata"]["name"]): o for o in objects}
    server = by_name.get(("Deployment", SERVER))
    hpa = by_name.get(("HorizontalPodAutoscaler", SERVER))
    scaled = by_name.get(("ScaledObject", SERVER))
    locust = by_name.get(("Deployment", LOCUST_WORKER))
    autoscaler = (
        (scaled, f"ScaledObject/{SERVER}")
        if scaled is not None
        else (hpa, f"HorizontalPodAutoscaler/{SERVER}")
    )
    for found, label in (
        (server, f"Deployment/{SERVER}"),
        autoscaler,
        (locust, f"Deployment/{LOCUST_WORKER}"),
    ):
        if found is None:
            problems.append(Problem("plan", label, "missing from the rendered objects"))
    if scaled is not None and hpa is not None:
        problems.append(
            Problem(
                "plan", name_of(hpa), f"beside ScaledObject/{SERVER}: KEDA makes the HPA, remove this one"
            )
        )
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
            expect(where, "-w", command_option(words, "-w", "--workers"), str(sizing.workers_per_pod))
    if hpa is not None:
        spec = hpa.get("spec") or {}
        expect(name_of(hpa), "minReplicas", spec.get("minReplicas"), sizing.hpa_min_replicas)
        expect(name_of(hpa), "maxReplicas", spec.get("maxReplicas"), sizing.hpa_max_replicas)
        metrics = spec.get("metrics") or []
        pods = [m["pods"] for m in metrics if m.get("type") == "Pods"]
        if pods or inflight_target is not None:
            averages = [
                p["target"].get("averageValue") for p in pods if p["metric"].get("name") == INFLIGHT_METRIC
            ]
            wanted_average = [threshold_text(inflight_target)] if inflight_target is not None else []
            expect(name_of(hpa), f"{INFLIGHT_METRIC} target", averages, wanted_average)
        else:
            targets = [
                m["resource"]["target"].get("averageUtilization")
                for m in metrics
                if m.get("type") == "Resource" and m["resource"].get("name") == "cpu"
            ]
            expect(name_of(hpa), "CPU target", targets, [sizing.hpa_target_cpu_utilization])
    if scaled is not None:
        spec = scaled.get("spec") or {}
        expect(name_of(scaled), "minReplicaCount", spec.get("minReplicaCount"), sizing.hpa_min_replicas)
        expect(name_of(scaled), "maxReplicaCount", spec.get("maxReplicaCount"), sizing.hpa_max_replicas)
        thresholds = [
            (t.get("metadata") or {}).get("threshold")
            for t in spec.get("triggers") or []
            if t.get("type") == "prometheus"
            and INFLIGHT_METRIC in str((t.get("metadata") or {}).get("query"))
        ]
        wanted_threshold = [threshold_text(inflight_target)] if inflight_target is not None else []
        expect(name_of(scaled), f"{INFLIGHT_METRIC} threshold", thresholds, wanted_threshold)
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


def _differs(where: str, what: str, actual: object, wanted: object) -> list[Problem]:
    return (
        []
        if actual == wanted
        else [Problem("plan", where, f"{what} is {actual!r}, the plan says {wanted!r}")]
    )


def _check_kserve(objects: list[Obj], sizing: DeploySizing, inflight_target: float | None) -> list[Problem]:
    """An InferenceService rendered with --target kserve: bounds, autoscaling, the model's pod."""
    problems: list[Problem] = []
    runtimes = [o for o in objects if o.get("kind") == "ServingRuntime"]
    for isvc in (o for o in objects if o.get("kind") == "InferenceService"):
        where = name_of(isvc)
        predictor = (isvc.get("spec") or {}).get("predictor") or {}
        model = predictor.get("model") or {}
        problems += _differs(where, "minReplicas", predictor.get("minReplicas"), sizing.hpa_min_replicas)
        problems += _differs(where, "maxReplicas", predictor.get("maxReplicas"), sizing.hpa_max_replicas)
        if inflight_target is None:
            problems += _differs(where, "scaleMetric", predictor.get("scaleMetric"), "cpu")
            problems += _differs(
                where, "scaleTarget", predictor.get("scaleTarget"), sizing.hpa_target_cpu_utilization
            )
        else:
            thresholds = [
                ((m.get("external") or {}).get("target") or {}).get("value")
                for m in (predictor.get("autoScaling") or {}).get("metrics") or []
                if m.get("type") == "External"
            ]
            wanted = [threshold_text(inflight_target)]
            problems += _differs(where, f"{INFLIGHT_METRIC} threshold", thresholds, wanted)
        resources = model.get("resources") or {}
        for bound in ("requests", "limits"):
            quantities = resources.get(bound) or {}
            cpu, memory = cpu_millicores(quantities.get("cpu")), memory_mib(quantities.get("memory"))
            problems += _differs(where, f"{bound}.cpu", cpu, sizing.cpu_millicores)
            problems += _differs(where, f"{bound}.memory", memory, sizing.memory_mib)
        workers = command_option(model.get("args") or [], "-w", "--workers")
        problems += _differs(where, "-w", workers, str(sizing.workers_per_pod))
        if model.get("runtime") not in {r["metadata"]["name"] for r in runtimes}:
            problems.append(
                Problem(
                    "plan",
                    where,
                    f"runtime {model.get('runtime')!r} is not among the rendered ServingRuntimes",
                )
            )
    for runtime in runtimes:
        names = [c.get("name") for c in (runtime.get("spec") or {}).get("containers") or []]
        problems += _differs(name_of(runtime), "containers", names, [KSERVE_CONTAINER])
    return problems
