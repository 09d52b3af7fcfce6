"""What a deployment takes from a plan: read plan.json, check it, derive the rest.

``mlscale plan`` writes plan.json (``mlscale.schemas.plan.Plan``); its ``sizing``
block holds the pods at the target load, the pod's CPU and worker processes, and
the HPA's settings. The schema checks the types; this module checks what a
deployment needs beyond them (bounds, the HPA's range), turns the block into a
:class:`DeploySizing` with one clear message per problem, and adds the one number
the plan does not give: how many Locust workers generate the target load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from mlscale.schemas.plan import Plan, PlanFileError, read_plan_file

# Requests per second one Locust worker (one process, one CPU) is asked to
# send. One worker running mlscale's locustfile sent about 1,300 requests/s
# against a server that answers at once, on one shared core of a development
# machine; a real model answers slower, bodies are bigger, and Locust's own
# advice is to keep a worker well under a saturated core. So: 500.
RPS_PER_LOCUST_WORKER = 500.0
# Memory per model pod when the plan does not say (plans before memory was
# sized from a measurement): a fixed part for the serving process that forks
# the workers, plus one part per worker. The README measures about 280 MB of
# resident memory per `mlscale serve` worker on the example model; 300 Mi
# rounds that up with a little margin, and 256 Mi covers the parent process
# and the page cache of the downloaded model. A flat figure would starve
# `-w 2` and up: 512 Mi is less than two workers' 560 MB, and the kernel
# kills a container at its memory limit.
BASE_MEMORY_MIB = 256.0
MEMORY_PER_WORKER_MIB = 300.0


class PlanError(PlanFileError):
    """plan.json is missing, unreadable, or does not describe a deployment."""


@dataclass(frozen=True, kw_only=True)
class DeploySizing:
    """The numbers a rendered overlay sets; units in the names."""

    pods: int  # replicas at the target load
    cpu_per_pod: float  # cores; request = limit
    memory_per_pod_mib: float  # request = limit
    workers_per_pod: int  # `mlscale serve -w`
    hpa_min_replicas: int
    hpa_max_replicas: int
    hpa_target_cpu_utilization: int  # percent of the CPU request
    target: float
    target_kind: str  # "users" or "rps"
    target_rps: float  # the request rate the load generators must reach
    locust_workers: int  # for workers of `locust_worker_cpu` cores each
    locust_worker_cpu: float  # cores; the overlay's, see render.locust_worker_cpu
    sentence: str

    @property
    def cpu_millicores(self) -> int:
        return round(self.cpu_per_pod * 1000)

    @property
    def memory_mib(self) -> int:
        return math.ceil(self.memory_per_pod_mib)

    def with_locust_worker_cpu(self, cores: float) -> DeploySizing:
        """The same sizing for Locust workers of ``cores`` CPU: more of them when smaller."""
        return replace(
            self, locust_worker_cpu=cores, locust_workers=locust_workers_for(self.target_rps, cores)
        )


def read_plan(path: str) -> Plan:
    """The plan in ``path``: plan.json, or the folder ``mlscale plan --out`` wrote it to."""
    try:
        return read_plan_file(path)
    except PlanFileError as exc:
        raise PlanError(str(exc)) from None


def sizing_from_plan(plan: Plan) -> DeploySizing:
    """Check the plan's ``sizing`` block and derive the Locust worker count."""
    sizing = plan.sizing
    if sizing is None and "sizing" in plan.model_fields_set:
        raise PlanError(
            "The plan has no sizing: no pod size met the SLA at any load measured. Plan again "
            "with a looser SLA or larger pods (--cpus)."
        )
    if sizing is None:
        raise PlanError("The plan has no 'sizing' block: is this a plan.json from `mlscale plan`?")
    hpa = sizing.hpa
    pods = _integer("pods", sizing.pods, low=1)
    cpu = _number("cpu_per_pod", sizing.cpu_per_pod, low=0.001)
    workers = _integer("workers_per_pod", sizing.workers_per_pod, low=1)
    # `sizing.memory_per_pod_mib` is the key `mlscale plan` writes (Sizing.to_dict).
    measured = sizing.memory_per_pod_mib
    memory = (
        memory_for_workers(workers) if measured is None else _number("memory_per_pod_mib", measured, low=16)
    )
    hpa_min = _integer("hpa_min_replicas", hpa.min_replicas, low=1)
    hpa_max = _integer("hpa_max_replicas", hpa.max_replicas, low=1)
    # Above 100 % of the request can never be reached: the limit equals the request.
    utilization = _integer("hpa_target_cpu_utilization", hpa.target_cpu_utilization, low=1, high=100)
    if hpa_min > hpa_max:
        raise PlanError(f"The plan's HPA minimum ({hpa_min}) is above its maximum ({hpa_max}).")
    if not hpa_min <= pods <= hpa_max:
        raise PlanError(
            f"The plan's {pods} pods are outside its HPA bounds {hpa_min}-{hpa_max}: the HPA "
            "would change the replica count at once. Plan again."
        )
    kind = sizing.target_kind
    specific = sizing.target_users if kind == "users" else sizing.target_rps
    target = _number("target", sizing.target if specific is None else specific, low=0.0)
    think_time_s = _number("load_model.think_time_s", plan.load_model.think_time_s, low=0.0)
    target_rps = target if kind == "rps" else _users_to_rps(target, think_time_s, plan, pods)
    return DeploySizing(
        pods=pods,
        cpu_per_pod=cpu,
        memory_per_pod_mib=memory,
        workers_per_pod=workers,
        hpa_min_replicas=hpa_min,
        hpa_max_replicas=hpa_max,
        hpa_target_cpu_utilization=utilization,
        target=target,
        target_kind=kind,
        target_rps=target_rps,
        locust_workers=locust_workers_for(target_rps),
        locust_worker_cpu=1.0,
        sentence=sizing.sentence,
    )


def locust_workers_for(target_rps: float, worker_cpu: float = 1.0) -> int:
    """Locust workers of ``worker_cpu`` cores to send ``target_rps`` requests/s.

    One worker of one CPU per 500 requests/s; a worker of half a CPU sends half
    as much. A Locust worker is one process and never uses more than one core,
    so a larger CPU counts as one.
    """
    per_worker = RPS_PER_LOCUST_WORKER * min(worker_cpu, 1.0)
    return max(1, math.ceil(target_rps / per_worker))


def memory_for_workers(workers: int) -> float:
    """MiB for a model pod of ``workers`` worker processes, when no measurement says."""
    return BASE_MEMORY_MIB + MEMORY_PER_WORKER_MIB * workers


def _users_to_rps(users: float, think_time_s: float, plan: Plan, pods: int) -> float:
    """The request rate of ``users`` closed-loop users: at most one request per think time."""
    if think_time_s > 0:
        return users / think_time_s
    # No think time: each user sends as fast as the servers answer, so the rate
    # is what the pods can serve, as measured.
    rates = [m.max_rps for m in plan.measurements if m.max_rps > 0]
    return pods * max(rates) if rates else users * 10


def _number(name: str, value: float, *, low: float, high: float = math.inf) -> float:
    """``value`` within bounds (the schema has checked that it is a number)."""
    if math.isnan(value) or not low <= value <= high:
        bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise PlanError(f"The plan's {name} must be {bounds}, not {value!r}.")
    return float(value)


def _integer(name: str, value: int, *, low: int, high: float = math.inf) -> int:
    return int(_number(name, value, low=low, high=high))
