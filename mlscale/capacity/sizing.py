"""From a per-pod capacity to pods, nodes and HPA settings, for a GKE node type.

Node allocatable follows GKE's published reservation formula; pods are
counted at the SLA with headroom (pods' CPU at most 80 %, the reference's
advice); nodes hold what is left after the node's reservation and the
DaemonSets' requests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mlscale.errors import ConfigurationError

# vCPUs and memory (GiB) of common GKE machine types.
NODE_TYPES: dict[str, tuple[int, float]] = {
    "e2-standard-2": (2, 8), "e2-standard-4": (4, 16), "e2-standard-8": (8, 32),
    "e2-standard-16": (16, 64), "e2-standard-32": (32, 128),
    "n2-standard-2": (2, 8), "n2-standard-4": (4, 16), "n2-standard-8": (8, 32),
    "n2-standard-16": (16, 64), "c3-standard-4": (4, 16), "c3-standard-8": (8, 32),
}  # fmt: skip

# GKE reserves CPU by core: 6 % of the first, 1 % of the second, 0.5 % each of the
# third and fourth, 0.25 % of every core above four.
_CPU_RESERVED = ((1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025))
# Memory: 25 % of the first 4 GiB, 20 % of the next 4, 10 % of the next 8,
# 6 % of the next 112, 2 % above; plus a 100 MiB eviction threshold.
_MEMORY_RESERVED = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02))


def _tiered(total: float, tiers) -> float:
    reserved, left = 0.0, total
    for size, share in tiers:
        part = min(left, size)
        reserved += part * share
        left -= part
        if left <= 0:
            break
    return reserved


def allocatable_cpu_m(vcpus: int) -> int:
    """Millicores a GKE node of ``vcpus`` offers to pods (4 vCPU: 3920m)."""
    return round(vcpus * 1000 - _tiered(vcpus, _CPU_RESERVED) * 1000)


def allocatable_memory_mib(memory_gib: float) -> int:
    if memory_gib < 1:
        return round(memory_gib * 1024 - 255 - 100)
    reserved_gib = _tiered(memory_gib, _MEMORY_RESERVED)
    return round((memory_gib - reserved_gib) * 1024 - 100)


@dataclass(frozen=True, kw_only=True)
class Sizing:
    target: float
    target_kind: str  # "users" or "rps"
    capacity_per_pod: float  # at the SLA, measured or modelled
    cpu_per_pod: float
    workers_per_pod: int
    memory_per_pod_mib: float
    pods: int
    cores: float
    node_type: str
    pods_per_node: int
    nodes: int
    hpa_min_replicas: int
    hpa_max_replicas: int
    hpa_target_cpu_utilization: int
    monthly_cost: float | None
    sentence: str

    def to_dict(self) -> dict:
        data = asdict(self)
        data[f"target_{self.target_kind}"] = self.target
        data["hpa"] = {
            "min_replicas": self.hpa_min_replicas,
            "max_replicas": self.hpa_max_replicas,
            "target_cpu_utilization": self.hpa_target_cpu_utilization,
        }
        return data


def size(
    *,
    target: float,
    target_kind: str,
    capacity_per_pod: float,
    cpu_per_pod: float,
    workers_per_pod: int,
    sla_text: str,
    node_type: str = "e2-standard-4",
    memory_per_pod_mib: float = 512,
    daemonset_cpu_m: int = 100,
    daemonset_memory_mib: int = 200,
    headroom: float = 0.8,
    price_per_node_hour: float | None = None,
) -> Sizing:
    """The pods and nodes for ``target`` when each pod serves ``capacity_per_pod`` at the SLA."""
    if node_type not in NODE_TYPES:
        raise ConfigurationError(f"Unknown node type {node_type!r}; known: {', '.join(NODE_TYPES)}.")
    if capacity_per_pod <= 0:
        raise ConfigurationError("No pod size met the SLA at any load: there is nothing to size.")
    vcpus, memory_gib = NODE_TYPES[node_type]
    free_cpu_m = allocatable_cpu_m(vcpus) - daemonset_cpu_m
    free_memory = allocatable_memory_mib(memory_gib) - daemonset_memory_mib
    pods_per_node = min(int(free_cpu_m // (cpu_per_pod * 1000)), int(free_memory // memory_per_pod_mib))
    if pods_per_node < 1:
        raise ConfigurationError(
            f"A pod of {cpu_per_pod:g} CPU does not fit on {node_type} ({free_cpu_m}m free after "
            "reservations and DaemonSets): choose a larger node type or a smaller pod."
        )
    pods = max(1, math.ceil(target / (capacity_per_pod * headroom)))
    nodes = math.ceil(pods / pods_per_node)
    cores = pods * cpu_per_pod
    hpa_min = min(2, pods)  # two replicas keep serving through one pod's restart
    hpa_max = max(pods, math.ceil(pods * 1.5))  # room above the target for spikes
    cost = nodes * price_per_node_hour * 730 if price_per_node_hour else None
    unit = "concurrent users" if target_kind == "users" else "requests/s"
    sentence = (
        f"{target:g} {unit} at {sla_text} need {cores:g} "
        f"{'core' if cores == 1 else 'cores'}: {pods} {'pod' if pods == 1 else 'pods'} of "
        f"{cpu_per_pod:g} CPU on {nodes} {node_type} {'node' if nodes == 1 else 'nodes'}"
    )
    return Sizing(
        target=target, target_kind=target_kind, capacity_per_pod=capacity_per_pod,
        cpu_per_pod=cpu_per_pod, workers_per_pod=workers_per_pod,
        memory_per_pod_mib=memory_per_pod_mib, pods=pods, cores=cores,
        node_type=node_type, pods_per_node=pods_per_node, nodes=nodes,
        hpa_min_replicas=hpa_min, hpa_max_replicas=hpa_max,
        hpa_target_cpu_utilization=round(headroom * 100), monthly_cost=cost, sentence=sentence,
    )  # fmt: skip
