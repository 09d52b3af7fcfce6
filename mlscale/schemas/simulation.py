"""summary.json of a simulation: cost, SLA time, the pod and policy simulated, events.

Built by ``mlscale.simulate.results.summarize`` as a :class:`SimulationSummary`
and written through it; the comparison, the demo and the reports read it so.
Unknown keys are an error (``extra="forbid"``): every summary is written by this
code, so an unknown key is a bug, not a newer layout.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

SIMULATION_SCHEMA_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class SimulatedSla(_Record):
    expr: str
    percentile: str | None
    limit_ms: float | None


class SimulatedCluster(_Record):
    machine_type: str
    min_nodes: int
    max_nodes: int
    pods_per_node: int
    cluster_autoscaler: bool


class SimulationEvent(_Record):
    time_s: float
    kind: str  # e.g. "pods_pending", "sla_violation", "load_fall"
    detail: str


class PresetInfo(_Record):
    """The reference experiment a run replays (``--preset``)."""

    name: str
    description: str


class SimulationSummary(_Record):
    """summary.json of ``mlscale simulate`` (one scenario, or one candidate of a comparison)."""

    schema_version: int = SIMULATION_SCHEMA_VERSION
    name: str
    duration_s: float
    tick_s: float
    load_kind: str  # "users" or "rps"
    sla: SimulatedSla
    sla_violation_s: float
    sla_met_share: float
    node_hours: float
    price_per_node_hour: float
    cost: float
    pod_hours: float
    max_pods_pending: int
    max_pods_ready: int
    max_nodes: int
    requests: float
    failed_requests: float
    worst_latency_ms: float | None
    first_pending_s: float | None
    scale_up_delay_s: float | None
    load_fall_s: float | None
    scale_down_s: float | None
    # {"kind": "hpa" | "manual" | "none", ...}: its keys depend on the kind (the HPA's
    # manifest is the Kubernetes object), so it stays a JSON object.
    policy: dict[str, Any]
    cluster: SimulatedCluster
    # The queue simulated (PodModel.to_dict) and the pod's requests.
    pod: dict[str, Any]
    events: tuple[SimulationEvent, ...] = ()
    preset: PresetInfo | None = None  # set only when a preset was replayed

    def to_json_dict(self) -> dict[str, Any]:
        """summary.json's content, ``schema_version`` first; ``preset`` only when set."""
        data = self.model_dump(mode="json", exclude_unset=True)
        data.pop("schema_version", None)
        return {"schema_version": self.schema_version, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2)


class PolicyOutcome(_Record):
    """One autoscaling policy of ``mlscale simulate --compare``, as compare.json lists it."""

    name: str
    description: str
    meets_sla: bool
    sla_violation_s: float
    cost: float
    node_hours: float
    pod_hours: float
    max_pods_pending: int
    max_pods_ready: int
    worst_latency_ms: float | None
    manifest: dict[str, Any]  # the HPA's values, as Kubernetes spells them


class PolicyComparison(_Record):
    """compare.json: every candidate policy on the same load, and the cheapest that meets the SLA."""

    schema_version: int = SIMULATION_SCHEMA_VERSION
    sla: str
    allowed_violation: float  # the share of the time a policy may spend over the SLA
    best: str | None  # the cheapest that meets it; None when none does
    verdict: str
    policies: tuple[PolicyOutcome, ...]

    def outcome(self, name: str) -> PolicyOutcome:
        return next(p for p in self.policies if p.name == name)

    def to_json_dict(self) -> dict[str, Any]:
        """compare.json's content, ``schema_version`` first."""
        data = self.model_dump(mode="json")
        data.pop("schema_version")
        return {"schema_version": self.schema_version, **data}

    def to_json(self) -> str:
        return json.dumps(self.to_json_dict(), indent=2)
