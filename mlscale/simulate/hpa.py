"""The Horizontal Pod Autoscaler's decisions, as pure functions of their inputs.

Transcribed from the controller's source, kubernetes/kubernetes
pkg/controller/podautoscaler/:
  replica_calculator.go  https://github.com/kubernetes/kubernetes/blob/master/pkg/controller/podautoscaler/replica_calculator.go
  horizontal.go          https://github.com/kubernetes/kubernetes/blob/master/pkg/controller/podautoscaler/horizontal.go
and the documentation,
  https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/

Time is an argument (``now``, seconds); the controller's memory of past
recommendations and scale events is a small ``HpaMemory`` the caller keeps.
Comparisons keep the source's strictness (``Before``/``After``), which decides
whether an event exactly one period old still counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from mlscale.simulate.settings import Behavior, HpaSettings, ScalingRules

# Pod classes of groupPods [R].
READY, UNREADY, MISSING, IGNORED = 0, 1, 2, 3


def group_pods(
    *,
    now: float,
    deleting: ArrayLike,
    running: ArrayLike,
    ready: ArrayLike,
    start_time: ArrayLike,
    ready_since: ArrayLike,
    has_metric: ArrayLike,
    metric_time: ArrayLike,
    metric_window: ArrayLike,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
) -> np.ndarray:
    """The class of each pod for a CPU metric, as ``groupPods`` [R] assigns it.

    Arrays, one entry per pod: ``deleting`` (has a deletionTimestamp), ``running``
    (phase Running: its containers started; else Pending), ``ready`` (Ready
    condition true), ``start_time`` (status.startTime), ``ready_since`` (the Ready
    condition's lastTransitionTime), ``has_metric``, ``metric_time`` and
    ``metric_window`` (the sample's timestamp and window).
    """
    deleting = np.asarray(deleting, dtype=bool)
    running = np.asarray(running, dtype=bool)
    ready = np.asarray(ready, dtype=bool)
    has_metric = np.asarray(has_metric, dtype=bool)
    start_time = np.asarray(start_time, dtype=float)
    ready_since = np.asarray(ready_since, dtype=float)
    classes = np.full(len(deleting), READY, dtype=np.int8)
    in_initialization = start_time + cpu_initialization_period > now
    with np.errstate(invalid="ignore"):
        # Within the initialisation period: unready if not Ready, or if the sample's
        # window began before the pod became Ready (its CPU then was start-up work).
        early = ~ready | (
            np.asarray(metric_time, dtype=float) < ready_since + np.asarray(metric_window, dtype=float)
        )
        # Later: unready only if not Ready and never was (the condition changed within
        # the initial readiness delay of the start).
        late = ~ready & (start_time + initial_readiness_delay > ready_since)
    unready = np.where(in_initialization, early, late)
    classes[unready] = UNREADY
    classes[running & ~has_metric] = MISSING
    classes[~running] = UNREADY  # Pending pods are unready, before any metric is read
    classes[deleting] = IGNORED
    return classes


def _utilization(usage_m: ArrayLike, request_m: ArrayLike) -> int:
    """floor(100 · Σusage / Σrequest) over the pods given, in integer millicores [U]."""
    return round(float(np.sum(usage_m))) * 100 // round(float(np.sum(request_m)))


@dataclass(frozen=True)
class Proposal:
    replicas: int | None  # None: no metrics for any ready pod, the HPA does not act
    utilization: float | None  # the metric as the HPA reports it
    reason: str


def cpu_replicas(
    *,
    current: int,
    target_percent: float,
    tolerance: float,
    classes: ArrayLike,
    usage_m: ArrayLike,
    request_m: ArrayLike,
) -> Proposal:
    """Desired replicas for a CPU Utilization target: ``GetResourceReplicas`` [R].

    ``usage_m`` is each pod's CPU (millicores, any value where it has none) and
    ``request_m`` its request; ``classes`` from ``group_pods``."""
    classes = np.asarray(classes)
    usage_m = np.asarray(usage_m, dtype=float)
    request_m = np.asarray(request_m, dtype=float)
    is_ready = classes == READY
    if not is_ready.any():
        return Proposal(None, None, "no metrics for any ready pod")
    utilization = _utilization(usage_m[is_ready], request_m[is_ready])
    ratio = utilization / target_percent
    unready = classes == UNREADY
    missing = classes == MISSING
    scale_up_with_unready = unready.any() and ratio > 1.0
    if not scale_up_with_unready and not missing.any():
        return _ready_pods_replicas(current, utilization, ratio, tolerance, int(is_ready.sum()))
    # Recompute with stand-ins: missing pods use max(100, target) % of their request
    # on a scale-down and 0 on a scale-up; unready pods 0 on a scale-up.
    counted = is_ready.copy()
    stand_in = usage_m.copy()
    if missing.any() and ratio != 1.0:
        share = max(100.0, target_percent) / 100 if ratio < 1.0 else 0.0
        stand_in[missing] = request_m[missing] * share
        counted |= missing
    if scale_up_with_unready:
        stand_in[unready] = 0.0
        counted |= unready
    new_ratio = _utilization(stand_in[counted], request_m[counted]) / target_percent
    if abs(1.0 - new_ratio) <= tolerance or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
        return Proposal(current, utilization, "stand-ins reverse or cancel the change")
    replicas = math.ceil(new_ratio * int(counted.sum()))
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return Proposal(current, utilization, "the pod count would reverse the direction")
    return Proposal(replicas, utilization, "with stand-ins for unready and missing pods")


def _ready_pods_replicas(
    current: int, utilization: int, ratio: float, tolerance: float, ready: int
) -> Proposal:
    if abs(1.0 - ratio) <= tolerance:
        return Proposal(current, utilization, "within tolerance")
    return Proposal(math.ceil(ratio * ready), utilization, "ready pods")


def cpu_replicas_alike(
    *, current: int, target_percent: float, tolerance: float, pods: int, usage_m: float, request_m: float
) -> Proposal:
    """``cpu_replicas`` for ``pods`` pods that are all READY and alike: the same
    usage, the same request. The same sums as over the arrays (a sum of equal terms
    depends only on their count), without the per-pod work."""
    if pods <= 0:
        return Proposal(None, None, "no metrics for any ready pod")
    utilization = _utilization(np.full(pods, usage_m), np.full(pods, request_m))
    return _ready_pods_replicas(current, utilization, utilization / target_percent, tolerance, pods)


def external_average_replicas(
    *, status_replicas: int, total: float, target_per_pod: float, tolerance: float
) -> Proposal:
    """Desired replicas for an External metric with an AverageValue target, the HPA
    KEDA generates [KE]: ``GetExternalPerPodMetricReplicas`` [R]. No unready or
    missing pods here: the metric is the service's, not the pods'."""
    replicas = status_replicas
    ratio = total / (target_per_pod * status_replicas)
    if abs(1.0 - ratio) > tolerance:
        replicas = math.ceil(total / target_per_pod)
    return Proposal(replicas, total / status_replicas, "in-flight requests per pod")


@dataclass
class HpaMemory:
    """What the controller remembers between syncs, per HPA [H]."""

    recommendations: list[list[float]] = field(default_factory=list)  # [time, replicas]
    scale_up_events: list[list[float]] = field(default_factory=list)  # [time, change]
    scale_down_events: list[list[float]] = field(default_factory=list)


def _record(entries: list[list[float]], now: float, value: int, is_old: Callable[[float], bool]) -> None:
    """Replace the last outdated entry, or append: as the controller keeps its lists."""
    old = [i for i, (t, _) in enumerate(entries) if is_old(t)]
    if old:
        entries[old[-1]] = [now, value]
    else:
        entries.append([now, value])


def normalize_legacy(
    memory: HpaMemory,
    *,
    now: float,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    window_s: float,
) -> int:
    """``normalizeDesiredReplicas`` [H], the path of an HPA without ``behavior``:
    the largest recommendation of the last ``window_s`` (downscale stabilisation),
    then at most max(2·current, 4) and within [min, max]. No limit on the way down."""
    cutoff = now - window_s
    stabilized = max([desired] + [r for t, r in memory.recommendations if not t < cutoff])
    _record(memory.recommendations, now, desired, lambda t: t < cutoff)
    scale_up_limit = int(max(2.0 * current, 4.0))  # scaleUpLimitFactor, scaleUpLimitMinimum
    maximum = min(max_replicas, scale_up_limit)
    return int(max(min_replicas, min(stabilized, maximum)))


def _change_in_period(events: list[list[float]], now: float, period_s: float) -> int:
    """getReplicasChangePerPeriod [H]: events strictly inside the period."""
    cutoff = now - period_s
    return sum(int(change) for t, change in events if t > cutoff)


def scale_up_limit(rules: ScalingRules, memory: HpaMemory, now: float, current: int) -> int:
    """calculateScaleUpLimitWithScalingRules [H]."""
    if rules.select_policy == "Disabled":
        return current
    pick = min if rules.select_policy == "Min" else max
    result = None
    for policy in rules.policies:
        start = (
            current
            - _change_in_period(memory.scale_up_events, now, policy.period_s)
            + _change_in_period(memory.scale_down_events, now, policy.period_s)
        )
        if policy.type == "Pods":
            proposed = start + policy.value
        else:  # rounded up, or a small Deployment could never grow
            proposed = math.ceil(start * (1 + policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def scale_down_limit(rules: ScalingRules, memory: HpaMemory, now: float, current: int) -> int:
    """calculateScaleDownLimitWithBehaviors [H]."""
    if rules.select_policy == "Disabled":
        return current
    pick = max if rules.select_policy == "Min" else min
    result = None
    for policy in rules.policies:
        start = (
            current
            - _change_in_period(memory.scale_up_events, now, policy.period_s)
            + _change_in_period(memory.scale_down_events, now, policy.period_s)
        )
        proposed = start - policy.value if policy.type == "Pods" else int(start * (1 - policy.value / 100))
        result = proposed if result is None else pick(result, proposed)
    return current if result is None else result


def normalize_behavior(
    memory: HpaMemory,
    *,
    now: float,
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    behavior: Behavior,
    default_down_window_s: float,
) -> int:
    """``normalizeDesiredReplicasWithBehaviors`` [H]: stabilise (up: the smallest
    recommendation in its window, down: the largest), then the policies' rate."""
    up_window = behavior.scale_up.stabilization_window_s or 0
    stated = behavior.scale_down.stabilization_window_s
    down_window = default_down_window_s if stated is None else stated
    up_cutoff, down_cutoff = now - up_window, now - down_window
    up, down = desired, desired
    for t, r in memory.recommendations:
        if t > up_cutoff:
            up = min(up, int(r))
        if t > down_cutoff:
            down = max(down, int(r))
    stabilized = min(max(current, up), down)
    _record(memory.recommendations, now, desired, lambda t: t < up_cutoff and t < down_cutoff)
    if stabilized > current:
        limit = max(scale_up_limit(behavior.scale_up, memory, now, current), current)
        return min(stabilized, min(max_replicas, limit))
    if stabilized < current:
        limit = min(scale_down_limit(behavior.scale_down, memory, now, current), current)
        return max(stabilized, max(min_replicas, limit))
    return stabilized


def _longest_period(rules: ScalingRules) -> int:
    return max((p.period_s for p in rules.policies), default=0)


def record_scale_event(
    memory: HpaMemory, behavior: Behavior | None, now: float, before: int, after: int
) -> None:
    """storeScaleEvent [H]: only the behavior path keeps scale events."""
    if behavior is None or before == after:
        return
    if after > before:
        cutoff = now - _longest_period(behavior.scale_up)
        _record(memory.scale_up_events, now, after - before, lambda t: t < cutoff)
    else:
        cutoff = now - _longest_period(behavior.scale_down)
        _record(memory.scale_down_events, now, before - after, lambda t: t < cutoff)


@dataclass(frozen=True)
class Decision:
    replicas: int
    proposal: Proposal | None
    reason: str


def reconcile(
    memory: HpaMemory, settings: HpaSettings, *, now: float, current: int, propose: Callable[[], Proposal]
) -> Decision:
    """One sync of one HPA, ``reconcileAutoscaler`` [H]: ``propose()`` returns the
    metric's ``Proposal`` and is not called when current is outside [min, max]."""
    if not memory.recommendations:
        # recordInitialRecommendation: the current count is the first recommendation,
        # so nothing scales down during the first stabilisation window.
        memory.recommendations.append([now, current])
    if current > settings.max_replicas:
        desired, proposal, reason = settings.max_replicas, None, "above maxReplicas"
    elif current < settings.min_replicas:
        desired, proposal, reason = settings.min_replicas, None, "below minReplicas"
    else:
        proposal = propose()
        if proposal.replicas is None:
            return Decision(current, proposal, proposal.reason)
        desired = max(0, proposal.replicas)
        reason = proposal.reason
        if settings.behavior is None:
            desired = normalize_legacy(
                memory,
                now=now,
                current=current,
                desired=desired,
                min_replicas=settings.min_replicas,
                max_replicas=settings.max_replicas,
                window_s=settings.downscale_stabilization_s,
            )
        else:
            desired = normalize_behavior(
                memory,
                now=now,
                current=current,
                desired=desired,
                min_replicas=settings.min_replicas,
                max_replicas=settings.max_replicas,
                behavior=settings.behavior,
                default_down_window_s=settings.downscale_stabilization_s,
            )
    if desired != current:
        record_scale_event(memory, settings.behavior, now, current, desired)
    return Decision(desired, proposal, reason)
