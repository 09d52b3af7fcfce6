"""A capacity plan's settings from what a person asks for, and the lines that sum a
plan up: the part of `mlscale plan` that is neither flag parsing nor measuring.

``PlanRequest`` holds the values as given (``--cpus 0.5,1``, ``--sla 'p95<1s'``);
``plan_settings`` parses them into the planner's ``PlanSettings``, and
``check_plan_settings`` checks everything a plan can get wrong before its first
measurement. Errors are ``ConfigurationError`` naming the flag.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from mlscale.capacity import pods
from mlscale.capacity.planner import PlanSettings, check_plan, check_sizing
from mlscale.errors import ConfigurationError
from mlscale.loadtest.bodies import PROTOCOL_FORMATS, v2_infer_path
from mlscale.loadtest.sla import parse_sla
from mlscale.protocol.names import default_model_name
from mlscale.schemas.plan import CapacityFit, Plan

# The search's step length, precision and step budget: a quick plan trades error bars
# for minutes.
_STEP_S = {True: 4.0, False: 20.0}
_PRECISION = {True: 0.25, False: 0.1}
_MAX_STEPS = {True: 12, False: 16}


@dataclass(frozen=True, kw_only=True)
class PlanRequest:
    """What a plan is asked for, as the person wrote it (the flags of `mlscale plan`)."""

    sla: str
    kind: str  # "users" (closed loop with think time) or "rps" (open loop)
    target: float
    out_dir: str
    cpus: str = "1"
    workers_per_pod: str = "1"
    model_uri: str | None = None
    url: str | None = None
    think_time_s: float = 1.0
    data: str | None = None
    from_signature: bool = False
    rows_per_request: int = 1
    mix: str | None = None
    start_load: float = 4.0
    node_type: str = "e2-standard-4"
    daemonset_cpu_m: int = 100
    price_per_node_hour: float | None = None
    quick: bool = False
    protocol: str = "mlflow"  # or "v2": the Open Inference Protocol's infer endpoint
    model_name: str | None = None  # the model's name in V2 paths (a --url server's)


def resized_from(request: PlanRequest, earlier: Plan) -> PlanRequest:
    """The request re-sizing from an earlier plan (``--from-plan``): the earlier plan's
    SLA, load model and quickness are kept, since its measurements were made with them."""
    load_model = earlier.load_model
    return replace(
        request,
        sla=earlier.sla.expr,
        think_time_s=load_model.think_time_s,
        rows_per_request=load_model.rows_per_request,
        mix=load_model.mix,
        quick=earlier.quick,
        protocol=load_model.protocol,
    )


def _scoring_path(request: PlanRequest) -> str:
    """Where the load tests send their requests: /invocations, or the V2 infer path of
    the model plan serves itself (its default name) or of --url's (--model-name)."""
    if request.protocol != "v2":
        if request.model_name:
            raise ConfigurationError("--model-name names the model in V2 paths: use it with --protocol v2.")
        return "/invocations"
    if request.model_uri:
        if request.model_name:
            raise ConfigurationError(
                "--model-name is for --url: plan's own servers serve -m under its default name."
            )
        return v2_infer_path(default_model_name(request.model_uri))
    if request.url is None:
        return "/invocations"  # --from-plan: nothing is measured
    if not request.model_name:
        raise ConfigurationError(
            "--protocol v2 with --url needs the model's name for /v2/models/NAME/infer: give "
            "--model-name (the server's --model-name)."
        )
    return v2_infer_path(request.model_name)


def plan_settings(request: PlanRequest) -> PlanSettings:
    """The planner's settings: the SLA and pod sizes parsed, the search tuned to ``quick``."""
    quick = request.quick
    return PlanSettings(
        sla=parse_sla(request.sla),
        kind=request.kind,
        target=request.target,
        out_dir=request.out_dir,
        pods=tuple(pods.parse_pod_specs(request.cpus, request.workers_per_pod)),
        model_uri=request.model_uri,
        url=request.url.rstrip("/") if request.url else None,
        think_time_s=request.think_time_s,
        step_s=_STEP_S[quick],
        data=request.data,
        signature_of=request.model_uri if request.from_signature else None,
        rows_per_request=request.rows_per_request,
        mix=request.mix,
        start_load=request.start_load,
        precision=_PRECISION[quick],
        max_steps=_MAX_STEPS[quick],
        node_type=request.node_type,
        daemonset_cpu_m=request.daemonset_cpu_m,
        price_per_node_hour=request.price_per_node_hour,
        quick=quick,
        protocol=request.protocol,
        path=_scoring_path(request),
        body_format=PROTOCOL_FORMATS.get(request.protocol, "split"),
    )


def check_plan_settings(settings: PlanSettings, *, resizing: bool) -> None:
    """Every setting checked before the first measurement: a bad size or node type found
    after the others were measured would cost all of them. ``resizing`` (from an earlier
    plan's measurements) checks only what sizing uses: nothing is measured."""
    if resizing:
        check_sizing(settings, ())
    else:
        # Read when called (not bound at import): what this machine can measure.
        check_plan(settings, available_cores=os.cpu_count() or 1, quota=pods.quota_supported())


def model_check_line(model: CapacityFit) -> str:
    """The capacity model's check, one line: what a reader needs to trust the plan."""
    error = model.holdout_error
    if error is None:
        return f"Model: {model.note or 'not fitted'}."
    if model.holdout == "step":
        what = f"the {model.holdout_cpu:g}-CPU capacity read without its nearest load step"
    else:
        what = f"{model.holdout_cpu:g} CPU predicted from the other sizes"
    return (
        f"Model check: {what}: {model.holdout_predicted_load:.0f} against "
        f"{model.holdout_measured_load:.0f} measured, {error * 100:.1f} % hold-out error."
    )
