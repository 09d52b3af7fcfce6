"""The pod as a service, one import away: its queue, its calibration, its tables.

The concepts live in their own modules: ``queue`` (the M/M/c and M/M/c//N pod,
its capacity at an SLA), ``calibration`` (the pod from a plan, or the reference
scenario's) and ``tables`` (what the tick loop reads). The names here are the
ones the simulator's callers have always imported from ``service``.
"""

from mlscale.simulate.calibration import (
    check_against_plan,
    fit_closed_pod,
    fit_pod,
    plan_kind,
    plan_think_time,
    pod_from_plan,
    pod_latency,
    reference_pod,
    saturation_throughput,
)
from mlscale.simulate.queue import (
    REPORTED,
    RHO_MAX,
    PodModel,
    PodState,
    capacity_at_sla,
    closed_loop,
    load_at_busy,
    open_loop,
)
from mlscale.simulate.tables import ClosedTable, OpenTable

__all__ = [
    "REPORTED",
    "RHO_MAX",
    "ClosedTable",
    "OpenTable",
    "PodModel",
    "PodState",
    "capacity_at_sla",
    "check_against_plan",
    "closed_loop",
    "fit_closed_pod",
    "fit_pod",
    "load_at_busy",
    "open_loop",
    "plan_kind",
    "plan_think_time",
    "pod_from_plan",
    "pod_latency",
    "reference_pod",
    "saturation_throughput",
]
