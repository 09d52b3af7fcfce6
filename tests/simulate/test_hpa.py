"""The HPA's decisions against the rules of replica_calculator.go and horizontal.go
(kubernetes/kubernetes pkg/controller/podautoscaler), as tables of numbers."""

from __future__ import annotations

import math

import pytest

from mlscale.simulate.hpa import (
    IGNORED,
    MISSING,
    READY,
    UNREADY,
    HpaMemory,
    Proposal,
    cpu_replicas,
    external_average_replicas,
    group_pods,
    normalize_behavior,
    normalize_legacy,
    reconcile,
)
from mlscale.simulate.settings import Behavior, HpaSettings, ScalingPolicy, ScalingRules

R, U, M = READY, UNREADY, MISSING


def cpu(current, target, pods, tolerance=0.1):
    """pods: (class, usage in % of a 1000m request)."""
    return cpu_replicas(
        current=current,
        target_percent=target,
        tolerance=tolerance,
        classes=[c for c, _ in pods],
        usage_m=[10.0 * u for _, u in pods],
        request_m=[1000.0] * len(pods),
    ).replicas


@pytest.mark.parametrize(
    "current, target, pods, expected, why",
    [
        # The tolerance band: |1 - util/target| <= 0.1 keeps the count.
        (4, 80, [(R, 87)] * 4, 4, "1.0875 is inside the band"),
        (4, 80, [(R, 73)] * 4, 4, "0.9125 is inside the band"),
        (4, 80, [(R, 89)] * 4, 5, "1.1125 is outside: ceil(1.1125 * 4)"),
        (4, 80, [(R, 70)] * 4, 4, "0.875 is outside: ceil(0.875 * 4) = 4 all the same"),
        (4, 80, [(R, 40)] * 4, 2, "ceil(0.5 * 4)"),
        (1, 80, [(R, 100)], 2, "a saturated 1-CPU pod: r <= 1.25, one more pod"),
        # Unready (and Pending) pods count as 0 % on a scale-up...
        (4, 50, [(R, 100), (U, 0), (U, 0), (U, 0)], 4, "r' = 0.5 is on the other side of 1: hold"),
        (12, 80, [(R, 100)] * 8 + [(U, 0)] * 4, 12, "the reference's Pending pods stop the HPA"),
        (4, 40, [(R, 100)] * 3 + [(U, 0)], 8, "r' = 75/40: ceil(1.875 * 4)"),
        # ...and are left out of a scale-down.
        (4, 80, [(R, 20), (R, 20), (U, 0), (U, 0)], 1, "r = 0.25 over the ready pods only"),
        # Missing pods count as max(100, target) % on a scale-down, 0 % on a scale-up.
        (7, 50, [(R, 10)] * 6 + [(M, 0)], 4, "util' = floor(160/7) = 22: ceil(0.44 * 7)"),
        (4, 200, [(R, 30), (R, 30), (M, 0), (M, 0)], 3, "target > 100: missing pods at 200 %"),
        (4, 50, [(R, 100)] * 3 + [(M, 0)], 6, "util' = 75: ceil(1.5 * 4)"),
        (4, 80, [(R, 78), (R, 78), (R, 78), (M, 0)], 4, "within tolerance, missing pods change nothing"),
    ],
)
def test_cpu_replicas(current, target, pods, expected, why):
    assert cpu(current, target, pods) == expected, why


def test_no_ready_pod_with_a_metric_means_no_decision():
    proposal = cpu_replicas(
        current=3,
        target_percent=80,
        tolerance=0.1,
        classes=[U, M, M],
        usage_m=[0, 0, 0],
        request_m=[1000] * 3,
    )
    assert proposal.replicas is None


def test_utilisation_is_floored_as_the_controller_does():
    # 3 pods at 999m of 1000m: floor(99.9) = 99; r = 99/90 = 1.1, which in floating
    # point is just outside the band, as in the controller: ceil(1.1 * 3) = 4.
    proposal = cpu_replicas(
        current=3,
        target_percent=90,
        tolerance=0.1,
        classes=[R] * 3,
        usage_m=[999.0] * 3,
        request_m=[1000] * 3,
    )
    assert (proposal.utilization, proposal.replicas) == (99, 4)


@pytest.mark.parametrize(
    "total, target, status, expected",
    [(30, 10, 2, 3), (21, 10, 2, 2), (19, 10, 2, 2), (17, 10, 2, 2), (50, 4, 5, 13), (0.5, 1, 3, 1)],
)
def test_external_average_value(total, target, status, expected):
    assert (
        external_average_replicas(
            status_replicas=status, total=total, target_per_pod=target, tolerance=0.1
        ).replicas
        == expected
    )


NOW = 1000.0


def classes(**pod):
    base = {
        "now": NOW,
        "deleting": [False],
        "running": [True],
        "ready": [True],
        "start_time": [0.0],
        "ready_since": [10.0],
        "has_metric": [True],
        "metric_time": [990.0],
        "metric_window": [30.0],
        "cpu_initialization_period": 300.0,
        "initial_readiness_delay": 30.0,
    }
    base.update({k: [v] for k, v in pod.items()})
    return int(group_pods(**base)[0])


@pytest.mark.parametrize(
    "pod, expected",
    [
        ({}, READY),
        ({"deleting": True}, IGNORED),
        ({"running": False, "has_metric": False}, UNREADY),  # Pending
        ({"has_metric": False}, MISSING),
        ({"ready": False, "ready_since": 0.0}, UNREADY),  # never Ready, started long ago
        # Within the CPU initialisation period (started < 5 min ago):
        ({"start_time": 900.0, "ready_since": 950.0, "metric_time": 990.0}, READY),
        ({"start_time": 900.0, "ready_since": 970.0, "metric_time": 990.0}, UNREADY),  # window began unready
        ({"start_time": 900.0, "ready": False, "ready_since": 900.0}, UNREADY),
        # Past it: Ready pods are ready even with a window that began before.
        ({"start_time": 600.0, "ready_since": 980.0}, READY),
    ],
)
def test_group_pods(pod, expected):
    assert classes(**pod) == expected


def legacy(memory, now, current, desired, lo=1, hi=100, window=300.0):
    return normalize_legacy(
        memory, now=now, current=current, desired=desired, min_replicas=lo, max_replicas=hi, window_s=window
    )


@pytest.mark.parametrize(
    "current, desired, hi, expected",
    [(1, 10, 12, 4), (2, 10, 12, 4), (3, 10, 12, 6), (5, 30, 12, 10), (8, 30, 12, 12), (4, 5, 12, 5)],
)
def test_legacy_scale_up_is_at_most_twice_or_four(current, desired, hi, expected):
    assert legacy(HpaMemory(), 0.0, current, desired, hi=hi) == expected


def test_legacy_scale_down_takes_the_maximum_of_five_minutes():
    memory = HpaMemory(recommendations=[[0.0, 10]])  # the first sync records the current count
    replicas = 10
    changes = []
    for step in range(1, 40):
        now = 15.0 * step
        desired = 12 if now == 105.0 else 3  # one high recommendation at 105 s
        result = legacy(memory, now, replicas, desired)
        if result != replicas:
            changes.append((now, result))
            replicas = result
    # 12 at 105 s scales up at once; it then holds until 105 + 300 s has passed.
    assert changes == [(105.0, 12), (420.0, 3)]


def test_legacy_scale_down_has_no_rate_limit():
    memory = HpaMemory(recommendations=[[0.0, 12]])
    assert legacy(memory, 301.0, 12, 1) == 1


def test_reconcile_records_the_current_count_first():
    memory = HpaMemory()
    settings = HpaSettings(target=80, min_replicas=1, max_replicas=10)

    def low():
        return Proposal(1, 10, "")

    assert reconcile(memory, settings, now=0.0, current=6, propose=low).replicas == 6
    assert reconcile(memory, settings, now=300.0, current=6, propose=low).replicas == 6
    assert reconcile(memory, settings, now=315.0, current=6, propose=low).replicas == 1


def test_reconcile_outside_min_max_reads_no_metric():
    settings = HpaSettings(target=80, min_replicas=2, max_replicas=5)

    def boom():
        raise AssertionError("no metric is read outside [min, max]")

    assert reconcile(HpaMemory(), settings, now=0.0, current=7, propose=boom).replicas == 5
    assert reconcile(HpaMemory(), settings, now=0.0, current=1, propose=boom).replicas == 2


def behave(memory, now, current, desired, behavior, lo=1, hi=100):
    result = normalize_behavior(
        memory,
        now=now,
        current=current,
        desired=desired,
        min_replicas=lo,
        max_replicas=hi,
        behavior=behavior,
        default_down_window_s=300.0,
    )
    from mlscale.simulate.hpa import record_scale_event

    record_scale_event(memory, behavior, now, current, result)
    return result


def rules(window, select, *policies):
    return ScalingRules(window, select, tuple(ScalingPolicy(*p) for p in policies))


@pytest.mark.parametrize(
    "scale_up, current, desired, expected",
    [
        (Behavior().scale_up, 1, 10, 5),  # max(1 + 4, 2 * 1): the defaulted path goes to 5, legacy to 4
        (Behavior().scale_up, 10, 100, 20),  # max(10 + 4, 2 * 10)
        (rules(0, "Min", ("Pods", 4, 15), ("Percent", 100, 15)), 10, 100, 14),
        (rules(0, "Max", ("Percent", 50, 60)), 3, 100, 5),  # ceil(3 * 1.5)
        (rules(0, "Disabled", ("Pods", 4, 15)), 3, 100, 3),
    ],
)
def test_behavior_scale_up_policies(scale_up, current, desired, expected):
    behavior = Behavior(scale_up=scale_up)
    assert behave(HpaMemory(), 0.0, current, desired, behavior) == expected


@pytest.mark.parametrize(
    "scale_down, current, desired, expected",
    [
        (rules(0, "Max", ("Percent", 100, 15)), 10, 1, 1),
        (rules(0, "Max", ("Percent", 50, 15)), 10, 1, 5),  # int(10 * 0.5)
        (rules(0, "Max", ("Percent", 30, 15)), 10, 1, 7),  # int(10 * 0.7)
        (rules(0, "Max", ("Pods", 2, 15), ("Percent", 50, 15)), 10, 1, 5),  # Max: the larger change
        (rules(0, "Min", ("Pods", 2, 15), ("Percent", 50, 15)), 10, 1, 8),  # Min: the smaller change
        (rules(0, "Disabled", ("Pods", 2, 15)), 10, 1, 10),
        (rules(0, "Max", ("Percent", 100, 15)), 10, 1, 3),  # never below minReplicas (3 here)
    ],
)
def test_behavior_scale_down_policies(scale_down, current, desired, expected):
    behavior = Behavior(scale_down=scale_down)
    low = 3 if expected == 3 else 1
    assert behave(HpaMemory(), 0.0, current, desired, behavior, lo=low) == expected


def test_a_policy_period_counts_the_changes_strictly_inside_it():
    behavior = Behavior(scale_down=rules(0, "Max", ("Pods", 1, 60)))
    memory = HpaMemory()
    replicas, history = 10, []
    for now in (0.0, 15.0, 30.0, 45.0, 60.0, 75.0, 120.0):
        replicas = behave(memory, now, replicas, 3, behavior)
        history.append(replicas)
    # One pod per 60 s; the change made at 0 s no longer counts at 60 s.
    assert history == [9, 9, 9, 9, 8, 8, 7]


def test_behavior_stabilization_windows():
    up_slowly = Behavior(scale_up=rules(60, "Max", ("Percent", 100, 15)))
    memory = HpaMemory(recommendations=[[0.0, 2]])
    # The scale-up window takes the smallest recommendation of the last 60 s.
    assert behave(memory, 15.0, 2, 8, up_slowly) == 2
    assert behave(memory, 61.0, 2, 8, up_slowly) == 4  # 8 everywhere in the window, 100 %/15 s
    default = Behavior()
    memory = HpaMemory(recommendations=[[0.0, 10]])
    assert behave(memory, 290.0, 10, 2, default) == 10  # the 300 s scale-down window (the flag)
    assert behave(memory, 301.0, 10, 2, default) == 2


def test_behavior_from_a_manifest_fills_the_defaults():
    behavior = Behavior.from_k8s(
        {
            "scaleDown": {
                "stabilizationWindowSeconds": 60,
                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
            }
        }
    )
    assert behavior.scale_up == Behavior().scale_up
    assert behavior.scale_down.stabilization_window_s == 60
    assert behavior.scale_down.select_policy == "Max"
    assert behavior.to_k8s()["scaleDown"]["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 30}]


def test_the_two_paths_differ_from_one_replica():
    settings = HpaSettings(target=50, min_replicas=1, max_replicas=20)

    def hot():
        return Proposal(10, 200, "")

    legacy_result = reconcile(HpaMemory(), settings, now=0.0, current=1, propose=hot).replicas
    behaved = HpaSettings(target=50, min_replicas=1, max_replicas=20, behavior=Behavior())
    behavior_result = reconcile(HpaMemory(), behaved, now=0.0, current=1, propose=hot).replicas
    assert (legacy_result, behavior_result) == (4, 5)
    assert math.isclose(0.1, HpaSettings().tolerance)
