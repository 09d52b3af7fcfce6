"""What a deployment takes from a plan: read plan.json, check it, derive the rest.

``mlscale plan`` writes plan.json; its ``sizing`` block holds the pods at the
target load, the pod's CPU and worker processes, and the HPA's settings. This
module turns that block into a :class:`DeploySizing`, with one clear message
per thing that is missing or out of range, and adds the one number the plan
does not give: how many Locust workers generate the target load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any

from mlscale.errors import ConfigurationError

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


class PlanError(ConfigurationError):
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


def read_plan(path: str) -> dict[str, Any]:
    """The plan in ``path``: plan.json, or the folder ``mlscale plan --out`` wrote it to."""
    if os.path.isdir(path):
        path = os.path.join(path, "plan.json")
    try:
        with open(path, encoding="utf-8") as handle:
            plan = json.load(handle)
    except FileNotFoundError:
        raise PlanError(
            f"No plan at {path}: run `mlscale plan ... --out DIR` first, which writes DIR/plan.json."
        ) from None
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"Cannot read the plan {path}: {exc}.") from None
    if not isinstance(plan, dict):
        raise PlanError(f"{path} is not a plan: expected a JSON object with a 'sizing' block.")
    return plan


def sizing_from_plan(plan: dict[str, Any]) -> DeploySizing:
    """Check the plan's ``sizing`` block and derive the Locust worker count."""
    sizing = plan.get("sizing")
    if sizing is None and "sizing" in plan:
        raise PlanError(
            "The plan has no sizing: no pod size met the SLA at any load measured. Plan again "
            "with a looser SLA or larger pods (--cpus)."
        )
    if not isinstance(sizing, dict):
        raise PlanError("The plan has no 'sizing' block: is this a plan.json from `mlscale plan`?")
    hpa = sizing.get("hpa") if isinstance(sizing.get("hpa"), dict) else {}

    def field(name: str, *, hpa_name: str | None = None, default: Any = None) -> Any:
        value = hpa.get(hpa_name) if hpa_name and hpa_name in hpa else sizing.get(name, default)
        if value is None:
            raise PlanError(f"The plan's sizing has no {name!r}.")
        return value

    pods = _integer("pods", field("pods"), low=1)
    cpu = _number("cpu_per_pod", field("cpu_per_pod"), low=0.001)
    workers = _integer("workers_per_pod", field("workers_per_pod", default=1), low=1)
    # `sizing.memory_per_pod_mib` is the key `mlscale plan` writes (Sizing.to_dict).
    measured = sizing.get("memory_per_pod_mib")
    memory = (
        memory_for_workers(workers) if measured is None else _number("memory_per_pod_mib", measured, low=16)
    )
    hpa_min = _integer("hpa_min_replicas", field("hpa_min_replicas", hpa_name="min_replicas"), low=1)
    hpa_max = _integer("hpa_max_replicas", field("hpa_max_replicas", hpa_name="max_replicas"), low=1)
    # Above 100 % of the request can never be reached: the limit equals the request.
    utilization = _integer(
        "hpa_target_cpu_utilization",
        field("hpa_target_cpu_utilization", hpa_name="target_cpu_utilization"),
        low=1,
        high=100,
    )
    if hpa_min > hpa_max:
        raise PlanError(f"The plan's HPA minimum ({hpa_min}) is above its maximum ({hpa_max}).")
    if not hpa_min <= pods <= hpa_max:
        raise PlanError(
            f"The plan's {pods} pods are outside its HPA bounds {hpa_min}-{hpa_max}: the HPA "
            "would change the replica count at once. Plan again."
        )
    kind = field("target_kind", default="users")
    if kind not in ("users", "rps"):
        raise PlanError(f"The plan's sizing.target_kind is {kind!r}; expected 'users' or 'rps'.")
    specific = sizing.get(f"target_{kind}")
    target = _number("target", field("target") if specific is None else specific, low=0.0)
    think_time_s = _think_time(plan)
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
        sentence=str(sizing.get("sentence") or ""),
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


def _users_to_rps(users: float, think_time_s: float, plan: dict[str, Any], pods: int) -> float:
    """The request rate of ``users`` closed-loop users: at most one request per think time."""
    if think_time_s > 0:
        return users / think_time_s
    # No think time: each user sends as fast as the servers answer, so the rate
    # is what the pods can serve, as measured.
    rates = [m.get("max_rps") for m in plan.get("measurements") or [] if isinstance(m, dict)]
    rates = [float(r) for r in rates if isinstance(r, (int, float)) and r > 0]
    return pods * max(rates) if rates else users * 10


def _think_time(plan: dict[str, Any]) -> float:
    load_model = plan.get("load_model")
    value = load_model.get("think_time_s", 1.0) if isinstance(load_model, dict) else 1.0
    return _number("load_model.think_time_s", 1.0 if value is None else value, low=0.0)


def _number(name: str, value: Any, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise PlanError(f"The plan's {name} must be a number, not {value!r}.")
    if not low <= value <= high:
        bounds = f"at least {low:g}" if high == math.inf else f"between {low:g} and {high:g}"
        raise PlanError(f"The plan's {name} must be {bounds}, not {value!r}.")
    return float(value)


def _integer(name: str, value: Any, *, low: int, high: float = math.inf) -> int:
    number = _number(name, value, low=low, high=high)
    if number != int(number):
        raise PlanError(f"The plan's {name} must be a whole number, not {value!r}.")
    return int(number)
