"""The simulated cluster: scheduling, pod lifecycle, metrics-server's samples, and the
cluster autoscaler's sizing and timers."""

from __future__ import annotations

import numpy as np
import pytest

from mlscale.simulate.autoscaler import (
    ClusterAutoscaler,
    in_cooldown,
    nodes_to_add,
    unneeded_nodes,
)
from mlscale.simulate.cluster import Cluster, NodeShape
from mlscale.simulate.metrics import CpuSeries, last_scrape, sample_windows
from mlscale.simulate.settings import AutoscalerSettings, NodePool, PodTemplate


def test_gke_allocatable_leaves_three_one_cpu_pods_on_an_e2_standard_4():
    shape = NodeShape.of(NodePool(), PodTemplate())
    assert (shape.cpu_m, shape.pods_fit) == (3920, 3)
    assert NodeShape.of(NodePool(daemonset_cpu_m=0), PodTemplate()).pods_fit == 3
    assert NodeShape.of(NodePool(), PodTemplate(cpu_request_m=500)).pods_fit == 7
    assert NodeShape.of(NodePool(machine_type="e2-standard-16"), PodTemplate()).pods_fit == 15


def test_scheduling_spreads_pods_and_leaves_the_rest_pending():
    cluster = Cluster(NodePool(min_nodes=2, max_nodes=2), PodTemplate())
    for _ in range(2):
        cluster.add_node(0.0, ready_now=True)
    cluster.create_pods(7, 0.0)
    cluster.schedule(0.0)
    # The least allocated node first: 3 and 3 (alternating), the 7th Pending.
    assert list(cluster.n_pods[:2]) == [3, 3]
    assert (cluster.unbound, cluster.active) == (1, 7)


def test_a_pod_is_ready_at_the_first_probe_after_it_can_serve():
    pod = PodTemplate(image_pull_cold_s=30, image_pull_warm_s=0, app_startup_s=12, readiness_period_s=10)
    cluster = Cluster(NodePool(), pod)
    cluster.add_node(0.0, ready_now=True)
    cluster.create_pods(1, 0.0)
    cluster.schedule(0.0)
    cluster.advance(30.0)  # the image arrives, the container starts
    assert cluster.p_started[0] == 30.0 and cluster.ready == 0
    cluster.advance(49.0)
    assert cluster.ready == 0  # probes at 30, 40: not serving yet; 50: Ready
    cluster.advance(50.0)
    assert cluster.ready == 1
    cluster.create_pods(1, 60.0)
    cluster.schedule(60.0)
    cluster.advance(79.0)
    assert cluster.ready == 1
    cluster.advance(80.0)  # warm node: no pull, Ready at 60 + 20
    assert cluster.ready == 2


def test_deleted_pods_release_their_node_after_termination():
    pod = PodTemplate(prestop_s=0, drain_s=2, grace_period_s=30)
    cluster = Cluster(NodePool(), pod)
    cluster.add_node(0.0, ready_now=True)
    cluster.start_ready_pods(3, 0.0)
    cluster.create_pods(1, 0.0)
    assert cluster.schedule(0.0) == 0  # full: Pending
    cluster.delete_pods(1, 10.0)  # the Pending pod goes first (unscheduled)
    assert (cluster.active, cluster.unbound, cluster.ready) == (3, 0, 3)
    cluster.delete_pods(1, 10.0)
    assert cluster.ready == 2 and cluster.n_cpu_used[0] == 3100
    cluster.advance(11.9)
    assert cluster.n_cpu_used[0] == 3100
    cluster.advance(12.0)
    assert cluster.n_cpu_used[0] == 2100


@pytest.mark.parametrize(
    "started, has, start",
    [
        (-np.inf, True, 30.0),  # an old pod: the previous scrape to this one
        (20.0, True, 30.0),  # sampled at 30 and 60
        (45.0, True, 45.0),  # fresh (15 s old, under the resolution): its start is the first sample
        (55.0, False, None),  # 5 s old: too fresh
        (35.0, True, 35.0),  # 25 s old: fresh too
        (30.0, False, None),  # started at the last-but-one scrape: not sampled before it, not fresh
        (np.nan, False, None),  # not started
    ],
)
def test_metrics_server_samples(started, has, start):
    has_metric, window_start = sample_windows(
        scrape=60.0, resolution_s=30.0, fresh_min_s=10.0, started=np.array([started])
    )
    assert bool(has_metric[0]) is has
    if has:
        assert window_start[0] == start


def test_scrapes_and_usage():
    assert last_scrape(59.0, 30.0, 0.0) == 30.0
    assert last_scrape(60.0, 30.0, 0.0) == 60.0
    assert last_scrape(4.0, 30.0, 5.0) is None
    series = CpuSeries(100, 1.0)
    series.cumulative[1:] = np.arange(1, 101) * 0.5  # half a core from the start
    series.first_rate = 0.5
    usage = series.pod_usage_cores(
        ready_since=np.array([-np.inf, 45.0, np.nan]),
        window_start=np.array([30.0, 30.0, 30.0]),
        window_end=60.0,
    )
    assert usage.tolist() == [0.5, 0.25, 0.0]  # Ready half the window: half the rate


@pytest.mark.parametrize(
    "unschedulable, fit, upcoming, nodes, maximum, expected",
    [
        (4, 3, 0, 3, 5, 2),
        (4, 3, 1, 4, 5, 1),
        (3, 3, 1, 4, 5, 0),
        (10, 3, 0, 4, 5, 1),
        (0, 3, 0, 3, 5, 0),
        (5, 0, 0, 3, 5, 0),
        (700, 15, 0, 10, 200, 47),
    ],
)
def test_scale_up_bin_packs_on_template_nodes(unschedulable, fit, upcoming, nodes, maximum, expected):
    assert (
        nodes_to_add(
            unschedulable=unschedulable, pods_fit=fit, upcoming=upcoming, nodes=nodes, max_nodes=maximum
        )
        == expected
    )


@pytest.mark.parametrize(
    "utilization, pods, free, blocked, expected",
    [
        (
            [0.3, 0.9, 0.9, 0.1],
            [1, 3, 3, 0],
            [2, 0, 0, 3],
            [0, 0, 0, 0],
            [0, 0, 0, 1],
        ),  # no room for node 0's pod
        ([0.3, 0.9, 0.8, 0.1], [1, 3, 2, 0], [2, 0, 1, 3], [0, 0, 0, 0], [1, 0, 0, 1]),
        ([0.3, 0.3, 0.9], [1, 1, 3], [2, 2, 0], [0, 0, 0], [1, 0, 0]),  # the second needs the first's room
        ([0.1, 0.1], [0, 0], [3, 3], [1, 0], [0, 1]),  # kube-system pods block the first
        ([0.5, 0.49], [1, 1], [2, 2], [0, 0], [0, 1]),  # the threshold is strict
    ],
)
def test_unneeded_nodes(utilization, pods, free, blocked, expected):
    result = unneeded_nodes(
        utilization=utilization,
        pods=pods,
        free_slots=free,
        blocked=np.array(blocked, dtype=bool),
        threshold=0.5,
    )
    assert result.astype(int).tolist() == expected


def _idle_pool(nodes: int, min_nodes: int):
    events = []
    cluster = Cluster(
        NodePool(min_nodes=min_nodes, max_nodes=nodes),
        PodTemplate(),
        events=lambda t, kind, detail: events.append((t, kind)),
    )
    for _ in range(nodes):
        cluster.add_node(0.0, ready_now=True)
    return cluster, events


def _loop(autoscaler, until: float, step: float = 10.0):
    removals = []
    now = 0.0
    while now <= until:
        autoscaler.cluster.advance(now)
        before = autoscaler.last_delete
        autoscaler.run_once(now)
        if autoscaler.last_delete != before:
            removals.append(now)
        now += step
    return removals


def test_a_node_goes_exactly_when_its_unneeded_time_has_passed():
    cluster, events = _idle_pool(5, 3)
    autoscaler = ClusterAutoscaler(AutoscalerSettings(), cluster, say=lambda *a: None)
    assert _loop(autoscaler, 1000.0) == [600.0]  # unneeded since 0 s; --scale-down-unneeded-time 10m
    # Empty nodes go together, the newest first, down to the pool's minimum.
    assert sorted(t for t, kind in events if kind == "node_removed") == [605.0, 605.0]
    assert cluster.nodes_up == 3 and list(cluster.n_state[3:5]) == [3, 3]


def test_no_scale_down_before_the_delay_after_a_scale_up():
    cluster, _ = _idle_pool(5, 3)
    autoscaler = ClusterAutoscaler(AutoscalerSettings(), cluster, say=lambda *a: None)
    autoscaler.last_scale_up = 300.0  # the unneeded timers still run meanwhile
    assert _loop(autoscaler, 1200.0) == [900.0]
    assert in_cooldown(899.0, last_scale_up=300.0, last_delete=-1e9, settings=AutoscalerSettings())
    assert not in_cooldown(900.0, last_scale_up=300.0, last_delete=-1e9, settings=AutoscalerSettings())


def test_a_node_that_becomes_needed_again_restarts_its_timer():
    cluster, _ = _idle_pool(4, 3)
    autoscaler = ClusterAutoscaler(AutoscalerSettings(), cluster, say=lambda *a: None)
    _loop(autoscaler, 300.0)
    cluster.start_ready_pods(8, 305.0)  # 3 + 3 + 2 on... every node above half: needed
    cluster.delete_pods(8, 400.0)
    removals = []
    now = 310.0
    while now <= 1100.0:
        cluster.advance(now)
        before = autoscaler.last_delete
        autoscaler.run_once(now)
        if autoscaler.last_delete != before:
            removals.append(now)
        now += 10.0
    # Unneeded again once the pods are gone (410 s): removed 600 s later, not at 600 s.
    assert removals == [1010.0]


def test_scale_up_waits_for_young_pods_and_counts_upcoming_nodes():
    cluster, events = _idle_pool(3, 3)
    cluster.pool = NodePool(min_nodes=3, max_nodes=5)
    autoscaler = ClusterAutoscaler(AutoscalerSettings(), cluster, say=lambda t, k, d: events.append((t, k)))
    cluster.start_ready_pods(9, 0.0)
    cluster.create_pods(4, 100.0)
    cluster.schedule(100.0)
    autoscaler.run_once(101.0)  # younger than 2 s: one more loop
    assert cluster.nodes_provisioning == 0
    autoscaler.run_once(110.0)
    assert cluster.nodes_provisioning == 2 and autoscaler.last_scale_up == 110.0
    autoscaler.run_once(120.0)  # the upcoming nodes hold the Pending pods already
    assert cluster.nodes_provisioning == 2
    cluster.advance(170.0)
    cluster.schedule(170.0)
    assert (cluster.nodes_up, cluster.unbound) == (5, 0)


def test_a_reused_slot_is_scheduled_once():
    cluster = Cluster(NodePool(), PodTemplate())
    cluster.add_node(0.0, ready_now=True)
    cluster.start_ready_pods(3, 0.0)
    cluster.create_pods(1, 1.0)  # Pending: the node is full
    cluster.delete_pods(1, 2.0)  # its slot is free again, its queue entry stale
    cluster.delete_pods(2, 2.0)  # two running pods go: room for two
    cluster.create_pods(1, 3.0)  # reuses the Pending pod's slot
    cluster.advance(10.0)
    cluster.schedule(10.0)
    assert cluster.n_pods[0] == 2 and cluster.n_cpu_used[0] == 100 + 2 * 1000
    assert (cluster.active, cluster.unbound) == (2, 0)
