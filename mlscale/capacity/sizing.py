"""From a per-pod capacity to pods, nodes and HPA settings, for a GKE node type.

Node allocatable follows GKE's published reservation formula; pods are
counted at the SLA with headroom (pods' CPU at most 80 %, the reference's
advice); nodes hold what is left after the node's reservation and the
DaemonSets' requests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from mlscale.errors import ConfigurationError

# vCPUs and memory (GiB) of common GKE machine types.
NODE_TYPES: dict[str, tuple[int, float]] = {
    "e2-standard-2": (2, 8),
    "e2-standard-4": (4, 16),
    "e2-standard-8": (8, 32),
    "e2-standard-16": (16, 64),
    "e2-standard-32": (32, 128),
    "n2-standard-2": (2, 8),
    "n2-standard-4": (4, 16),
    "n2-standard-8": (8, 32),
    "n2-standard-16": (16, 64),
    "c3-standard-4": (4, 16),
    "c3-standard-8": (8, 32),
}

# GKE reserves CPU by core: 6 % of the first, 1 % of the second, 0.5 % each of the
# third and fourth, 0.25 % of every core above four.
_CPU_RESERVED = ((1, 0.06), (1, 0.01), (2, 0.005), (math.inf, 0.0025))
# Memory: 25 % of the first 4 GiB, 20 % of the next 4, 10 % of the next 8,
# 6 % of the next 112, 2 % above; plus a 100 MiB eviction threshold.
_MEMORY_RESERVED = ((4, 0.25), (4, 0.20), (8, 0.10), (112, 0.06), (math.inf, 0.02))


def _tiered(total: float, tiers: tuple[tuple[float, float], ...]) -> float:
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


# A pod's memory: the measured peak resident set with half again for what a short
# test does not reach (larger batches, fragmentation), in 64 Mi steps; never below
# 256 Mi. Unmeasured: 256 Mi plus about 300 Mi per worker (one worker with the
# example model peaks near 280 MB), so that a `-w 2` pod gets about twice the memory.
MEMORY_MARGIN = 1.5
MEMORY_STEP_MIB = 64
MEMORY_FLOOR_MIB = 256
MEMORY_PER_WORKER_MIB = 300
# The HPA's CPU target: at most the headroom (80 %), never below 30 % (a target that
# low scales on noise and idle workers' own CPU).
HPA_TARGET_MAX = 80
HPA_TARGET_MIN = 30


def pod_memory_mib(peak_rss_mb: float | None, workers: int) -> tuple[int, str]:
    """The pod's memory request = limit, and where it comes from."""
    if peak_rss_mb is None or not math.isfinite(peak_rss_mb) or peak_rss_mb <= 0:
        memory = MEMORY_FLOOR_MIB + MEMORY_PER_WORKER_MIB * workers
        return memory, f"not measured: {MEMORY_FLOOR_MIB} Mi + {MEMORY_PER_WORKER_MIB} Mi per worker"
    memory = MEMORY_STEP_MIB * math.ceil(peak_rss_mb * MEMORY_MARGIN / MEMORY_STEP_MIB)
    return max(MEMORY_FLOOR_MIB, memory), f"measured peak {peak_rss_mb:.0f} Mi x {MEMORY_MARGIN:g}"


def cpu_share_at(points: list[tuple[float, float]], load: float) -> float | None:
    """The pod's CPU use (a share of its CPU) at ``load``, read linearly between the
    measured (load, share) points; (0, 0) below the lightest, the heaviest's above it
    (CPU stops growing once the pod is saturated)."""
    points = sorted((x, c) for x, c in points if math.isfinite(c) and c >= 0 and x > 0)
    if not points:
        return None
    below = (0.0, 0.0)
    for point in points:
        if point[0] >= load:
            low, high = below, point
            share = (load - low[0]) / (high[0] - low[0]) if high[0] > low[0] else 1.0
            return low[1] + share * (high[1] - low[1])
        below = point
    return points[-1][1]


def hpa_cpu_target(points: list[tuple[float, float]], load: float) -> tuple[int, str]:
    """The HPA's target CPU utilisation: what the pod shows at ``load``, the load it
    is sized for. A pod that meets its SLA only up to 60 % CPU would never reach an
    80 % target before the SLA broke, so the HPA must scale out at 60 %."""
    share = cpu_share_at(points, load)
    if share is None:
        return HPA_TARGET_MAX, f"CPU not measured: {HPA_TARGET_MAX} %, the reference's advice"
    measured = math.floor(share * 100)
    target = min(HPA_TARGET_MAX, max(HPA_TARGET_MIN, measured))
    bound = "" if target == measured else f", {'capped' if target < measured else 'raised'} to {target} %"
    return target, f"the pod's measured CPU at load {load:.4g} (80 % of its capacity): {measured} %{bound}"


def check_node(
    node_type: str,
    *,
    cpu_per_pod: float,
    memory_per_pod_mib: float,
    daemonset_cpu_m: int,
    daemonset_memory_mib: int = 200,
) -> int:
    """Pods of this size one node holds after its reservation and the DaemonSets;
    ConfigurationError naming the flag when the node type is unknown or none fits."""
    if node_type not in NODE_TYPES:
        raise ConfigurationError(f"--node-type {node_type!r} is unknown; known: {', '.join(NODE_TYPES)}.")
    vcpus, memory_gib = NODE_TYPES[node_type]
    free_cpu_m = allocatable_cpu_m(vcpus) - daemonset_cpu_m
    free_memory = allocatable_memory_mib(memory_gib) - daemonset_memory_mib
    pods_per_node = min(int(free_cpu_m // (cpu_per_pod * 1000)), int(free_memory // memory_per_pod_mib))
    if pods_per_node < 1:
        raise ConfigurationError(
            f"A pod of {cpu_per_pod:g} CPU and {memory_per_pod_mib:.0f} Mi does not fit on "
            f"{node_type} ({max(free_cpu_m, 0)}m and {max(free_memory, 0)} Mi free after "
            f"reservations and --daemonset-cpu {daemonset_cpu_m}): choose a larger --node-type, "
            "smaller pods (--cpus) or less --daemonset-cpu."
        )
    return pods_per_node


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
    hpa_target_reason: str
    memory_reason: str
    monthly_cost: float | None
    sentence: str

    def to_dict(self) -> dict[str, Any]:
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
    memory_per_pod_mib: float | None = None,
    peak_rss_mb: float | None = None,
    cpu_by_load: list[tuple[float, float]] | None = None,
    daemonset_cpu_m: int = 100,
    daemonset_memory_mib: int = 200,
    headroom: float = 0.8,
    price_per_node_hour: float | None = None,
) -> Sizing:
    """The pods and nodes for ``target`` when each pod serves ``capacity_per_pod`` at the SLA.

    Memory: ``memory_per_pod_mib`` if given, else from the measured ``peak_rss_mb``
    (``pod_memory_mib``). HPA target: from the pod's measured CPU share at each load,
    ``cpu_by_load`` (``hpa_cpu_target``), else 80 %."""
    if not (math.isfinite(target) and target > 0):
        raise ConfigurationError(f"The target must be a positive number, not {target!r}.")
    if not capacity_per_pod or capacity_per_pod <= 0:
        raise ConfigurationError("No pod size met the SLA at any load: there is nothing to size.")
    if memory_per_pod_mib is None:
        memory_per_pod_mib, memory_reason = pod_memory_mib(peak_rss_mb, workers_per_pod)
    else:
        memory_reason = "given"
    pods_per_node = check_node(
        node_type,
        cpu_per_pod=cpu_per_pod,
        memory_per_pod_mib=memory_per_pod_mib,
        daemonset_cpu_m=daemonset_cpu_m,
        daemonset_memory_mib=daemonset_memory_mib,
    )
    pods = max(1, math.ceil(target / (capacity_per_pod * headroom)))
    nodes = math.ceil(pods / pods_per_node)
    cores = pods * cpu_per_pod
    hpa_min = min(2, pods)  # two replicas keep serving through one pod's restart
    hpa_max = max(pods, math.ceil(pods * 1.5))  # room above the target for spikes
    # Pods are sized to carry ``headroom`` of their capacity: the CPU they show there
    # is what the HPA must hold them at.
    hpa_target, hpa_reason = hpa_cpu_target(cpu_by_load or [], capacity_per_pod * headroom)
    hpa_target = min(hpa_target, round(headroom * 100))
    cost = nodes * price_per_node_hour * 730 if price_per_node_hour else None
    unit = "concurrent users" if target_kind == "users" else "requests/s"
    sentence = (
        f"{target:g} {unit} at {sla_text} need {cores:g} "
        f"{'core' if cores == 1 else 'cores'}: {pods} {'pod' if pods == 1 else 'pods'} of "
        f"{cpu_per_pod:g} CPU on {nodes} {node_type} {'node' if nodes == 1 else 'nodes'}"
    )
    return Sizing(
        target=target,
        target_kind=target_kind,
        capacity_per_pod=capacity_per_pod,
        cpu_per_pod=cpu_per_pod,
        workers_per_pod=workers_per_pod,
        memory_per_pod_mib=memory_per_pod_mib,
        pods=pods,
        cores=cores,
        node_type=node_type,
        pods_per_node=pods_per_node,
        nodes=nodes,
        hpa_min_replicas=hpa_min,
        hpa_max_replicas=hpa_max,
        hpa_target_cpu_utilization=hpa_target,
        hpa_target_reason=hpa_reason,
        memory_reason=memory_reason,
        monthly_cost=cost,
        sentence=sentence,
    )
