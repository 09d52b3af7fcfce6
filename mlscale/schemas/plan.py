"""plan.json: what ``mlscale plan`` measured, the capacity model it fitted, the sizing.

One schema, written and read only through :class:`Plan`: the planner builds one,
``write_plan_file`` writes it, and every reader (the Kubernetes renderer, the
simulator's calibration, the demo, the reports) takes a ``Plan``, never a dict.

Versions. ``schema_version`` is 1. A plan without it was written before the
schema (the same keys): it loads as version 1. A plan from a newer mlscale, or
one that does not validate, is a :class:`PlanFileError` naming the field and
saying to run ``mlscale plan`` again; never a traceback.

Unknown keys are an error (``extra="forbid"``), not silently dropped: a key this
version does not know is either a typo in a hand-edited plan or a newer layout,
and a plan re-written without it would lose it without a word. A newer layout
also carries a newer ``schema_version``, which is refused first with a clearer
message.

The JSON on disk keeps the layout written before the schema (same keys, same
order, ``json.dumps(indent=2)``), plus ``schema_version``. Loads stay whole numbers
where they were measured as such (``int | float``), so a plan round-trips to the
same text. ``python -m mlscale.schemas`` prints the JSON Schema published at
``docs/plan.schema.json``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, ValidationError

from mlscale.errors import ConfigurationError

PLAN_SCHEMA_VERSION = 1
PLAN_FILE = "plan.json"

# Strict scalars: a plan is JSON written by mlscale, so "2" or true where a number
# belongs is a damaged plan, not something to coerce. A float field takes a whole
# number (JSON does not tell 2 from 2.0); an int field does not take 2.5.
Int = StrictInt
Float = StrictFloat
Bool = StrictBool
# Loads: whole numbers or not, as they were measured, so the plan round-trips to its text.
Number = StrictInt | StrictFloat


# Why a size's search ended: it converged, or it gives only a bound (see capacity.search).
StopReason = Literal["converged", "ceiling", "invalid", "max_steps", "floor"]


class PlanFileError(ConfigurationError):
    """plan.json is missing, unreadable, from a newer mlscale, or not a plan."""


class _Frozen(BaseModel):
    # Frozen: a plan is a record of what was measured; ``model_copy(update=...)`` makes
    # a changed one. NaN and infinities are written as JSON's constants, as json.dump does.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")


class PlanSla(_Frozen):
    expr: str  # as given, e.g. "p95<1s"
    percentile: str | None = None  # the latency percentile it bounds, e.g. "p95"
    limit_ms: Float | None = None


class LoadModel(_Frozen):
    kind: Literal["users", "rps"]  # closed loop with think time, or open loop
    think_time_s: Float = 1.0
    rows_per_request: Int = 1
    mix: str | None = None
    # The scoring protocol measured: MLflow's /invocations or the V2 infer endpoint.
    protocol: Literal["mlflow", "v2"] = "mlflow"


class PlanStep(_Frozen):
    """One load test of the search: a load held, and what it measured."""

    load: Number
    rps: Float
    latency_ms: Float | None  # the SLA's percentile
    mean_ms: Float | None = None
    p50_ms: float | None = None
    error_rate: Float = 0.0
    meets: Bool
    valid: Bool = True
    stable: Bool = True
    requests: Int | None = None
    min_requests: Int | None = None
    enough_requests: Bool = True
    duration_s: Float | None = None
    server_cpu: Float | None = None  # cores, mean while the load held
    server_cpu_share: Float | None = None  # of the pod's CPU (None for --url)
    server_rss_mb_peak: Float | None = None


class AtLimit(_Frozen):
    """Where the percentile crosses the limit, between the steps around it."""

    load: Float
    rps: Float
    mean_ms: Float


class Measurement(_Frozen):
    """One pod size's search."""

    cpu: Float
    workers: Int
    max_users: Number | None = None  # the same as max_load for a users plan
    max_load: Number | None  # None: not even the smallest load met the SLA
    max_rps: Float = 0.0
    p95_ms_at_max: float | None = None  # the SLA's percentile at max_load
    mean_ms_at_max: Float | None = None
    stopped_by: StopReason = "converged"
    peak_rss_mb: Float | None = None
    few_requests_at: tuple[Number, ...] = ()
    steps: tuple[PlanStep, ...]
    at_limit: AtLimit | None = None  # set by the fit


class TailFit(_Frozen):
    kind: str
    quantile: Float
    limit_ms: Float
    think_time_s: Float
    delay_ms: Float
    tail_ratio: Float
    mean_at_limit_ms: Float


class PredictedSize(_Frozen):
    cpu: Float
    max_rps: Float
    max_load: Float


class QueueFit(_Frozen):
    """A pod's queue given in the plan (written by hand or by another tool): the
    simulator takes it as is instead of fitting one to the steps."""

    servers: Int
    service_rate_per_s: Float
    delay_ms: Float = 0.0


class CapacityFit(_Frozen):
    """plan.json's ``model``: the throughput law, the tail model and the hold-out check.

    Without a converged size only ``note`` and the empty hold-out are set."""

    holdout_error: Float | None = None
    fitted_cpus: tuple[Float, ...] = ()
    note: str | None = None
    law: str | None = None  # "usl" or "usl+cfs-quota"
    # "lambda" is a Python keyword: the attribute is ``lam``, the key "lambda".
    lam: Float | None = Field(default=None, alias="lambda")
    sigma: Float | None = None
    kappa: Float | None = None
    throttle_lost_ms: Float | None = None
    cfs_period_ms: Float | None = None
    tail: TailFit | None = None
    largest_cpu: Float | None = None
    predicted: tuple[PredictedSize, ...] | None = None
    holdout: Literal["step"] | None = None  # a load step held out; absent: a size
    holdout_cpu: Float | None = None
    holdout_step_load: Number | None = None
    holdout_predicted_load: Float | None = None
    holdout_measured_load: Float | None = None
    holdout_throughput_error: Float | None = None
    latency: QueueFit | None = None  # never written by `mlscale plan`; see QueueFit

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_inf_nan="constants",
        validate_by_name=True,
        validate_by_alias=True,
    )


class Hpa(_Frozen):
    min_replicas: Int
    max_replicas: Int
    target_cpu_utilization: Int  # percent of the CPU request


class PlanSizing(_Frozen):
    """The pods and nodes for the target, and the HPA's settings."""

    target: Number
    target_kind: Literal["users", "rps"]
    capacity_per_pod: Number
    cpu_per_pod: Float
    workers_per_pod: Int = 1
    memory_per_pod_mib: Number | None = None  # a whole number when not measured
    pods: Int
    cores: Float
    node_type: str
    pods_per_node: Int
    nodes: Int
    hpa_min_replicas: Int
    hpa_max_replicas: Int
    hpa_target_cpu_utilization: Int
    hpa_target_reason: str = ""
    memory_reason: str = ""
    monthly_cost: Float | None = None
    sentence: str
    target_users: Number | None = None  # the target again, under its kind's name
    target_rps: Number | None = None
    hpa: Hpa


class Plan(_Frozen):
    """plan.json."""

    schema_version: Int = PLAN_SCHEMA_VERSION
    sla: PlanSla
    load_model: LoadModel
    quick: Bool = False
    measurements: tuple[Measurement, ...]
    model: CapacityFit = CapacityFit()  # plans written by hand before the fit may lack it
    sizing: PlanSizing | None = None
    sizing_error: str | None = None
    incomplete: Bool | None = None  # True when the measuring stopped early

    def to_json_dict(self) -> dict[str, Any]:
        """The plan as plan.json holds it: the keys that were set (a plan written before a
        key existed keeps not having it), ``schema_version`` first."""
        data = self.model_dump(mode="json", exclude_unset=True, by_alias=True)
        data.pop("schema_version", None)
        return {"schema_version": self.schema_version, **data}

    def to_json(self) -> str:
        """plan.json's text: ``json.dumps(indent=2)``, as the planner wrote it before."""
        return json.dumps(self.to_json_dict(), indent=2)

    def measurement_of(self, cpu: float, workers: int | None = None) -> Measurement | None:
        """The search of the ``cpu`` pod with ``workers`` workers, or of any worker count."""
        exact = [m for m in self.measurements if m.cpu == cpu and (workers is None or m.workers == workers)]
        loose = [m for m in self.measurements if m.cpu == cpu]
        return (exact or loose)[0] if exact or loose else None


def parse_plan(data: Any, *, source: str = "the plan") -> Plan:
    """A plan from decoded JSON; PlanFileError naming the field when it is not one."""
    if not isinstance(data, dict):
        raise PlanFileError(f"{source} is not a plan: expected a JSON object written by `mlscale plan`.")
    version = data.get("schema_version", PLAN_SCHEMA_VERSION)  # absent: written before the schema
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PlanFileError(f"{source} has schema_version {version!r}, not a version number.")
    if version > PLAN_SCHEMA_VERSION:
        raise PlanFileError(
            f"{source} is a plan of schema version {version}, written by a newer mlscale; this "
            f"one reads version {PLAN_SCHEMA_VERSION}: upgrade mlscale, or run `mlscale plan` again."
        )
    try:
        return Plan.model_validate(data)
    except ValidationError as exc:
        raise PlanFileError(
            f"{source} is not a plan written by `mlscale plan`: {_first_error(exc)}"
        ) from None


def _first_error(exc: ValidationError) -> str:
    """The first problem, with the field's path (``sizing.hpa.min_replicas``) and what to do."""
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "the plan"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}. Run `mlscale plan` to make one."


def read_plan_file(path: str) -> Plan:
    """The plan in ``path``: plan.json, or the folder ``mlscale plan --out`` wrote it to."""
    if os.path.isdir(path):
        path = os.path.join(path, PLAN_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise PlanFileError(
            f"No plan at {path}: run `mlscale plan ... --out DIR` first, which writes DIR/plan.json."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanFileError(f"Cannot read the plan {path}: {exc}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path} is not valid JSON (line {exc.lineno}): {exc.msg}.") from None
    return parse_plan(data, source=path)


def write_plan_file(path: str, plan: Plan) -> None:
    """plan.json, through the schema."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(plan.to_json())


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of plan.json (what ``docs/plan.schema.json`` publishes)."""
    schema = Plan.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlscale plan.json"
    return schema


def plan_json_schema_text() -> str:
    return json.dumps(plan_json_schema(), indent=2) + "\n"
