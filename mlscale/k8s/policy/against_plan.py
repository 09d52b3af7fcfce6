"""A rendered overlay against the plan it was rendered from: replicas, CPU,
memory, worker processes, the HPA's bounds and target, and Locust workers."""

from __future__ import annotations

from mlscale.k8s import LOCUST_CONTAINER, LOCUST_WORKER, SERVER, SERVER_CONTAINER
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
            expect(where, "-w", command_option(words, "-w", "--workers"), str(sizing.workers_per_pod))
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
