"""The cluster autoscaler on one node pool: scale up for unschedulable pods, scale
down nodes that stayed unneeded.

From kubernetes/autoscaler cluster-autoscaler:
  FAQ   https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md
  flags https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/config/flags/flags.go
  loop  https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/core/static_autoscaler.go

One loop every --scan-interval:
- Scale-up: the unschedulable pods are bin-packed onto template nodes (a new node's
  allocatable minus its DaemonSets); nodes already requested but not yet Ready
  count as if there; all the nodes needed are requested at once, up to the max.
  If every unschedulable pod is younger than 2 s, the loop waits for more.
- Scale-down: a node is unneeded when its requests (DaemonSets included) are under
  --scale-down-utilization-threshold of its allocatable, in CPU and memory, and
  its pods fit on the other nodes; the timers run in every loop, even while
  scale-down is cooling down. A node unneeded for --scale-down-unneeded-time is
  removed, unless a scale-up happened less than --scale-down-delay-after-add ago
  (or a deletion less than --scale-down-delay-after-delete ago), or a scale-up
  happened in this loop. Empty nodes go together (up to --max-empty-bulk-delete);
  a node with pods is drained, one at a time. Never below the pool's minimum.

The cooldown's comparison is the source's: in cooldown while last + delay is after
now, so a node goes at the loop where both timers have run out. Real loops drift
by their own run time; these loops do not, so "exactly when the unneeded time has
passed" means at the first loop at or after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from mlscale.simulate.cluster import NODE_UP, Cluster
from mlscale.simulate.settings import AutoscalerSettings


def nodes_to_add(*, unschedulable: int, pods_fit: int, upcoming: int, nodes: int, max_nodes: int) -> int:
    """Nodes to request: enough template nodes for the unschedulable pods, minus the
    room of the nodes already on their way, within the pool's max [CA]."""
    if unschedulable <= 0 or pods_fit <= 0:
        return 0
    left = unschedulable - upcoming * pods_fit
    needed = math.ceil(left / pods_fit) if left > 0 else 0
    return max(0, min(needed, max_nodes - nodes))


def unneeded_nodes(
    *, utilization: ArrayLike, pods: ArrayLike, free_slots: ArrayLike, blocked: ArrayLike, threshold: float
) -> np.ndarray:
    """Which nodes are unneeded [CA]: under the threshold, not blocked (kube-system
    pods), and their pods fit in the room left on the nodes that stay. Candidates
    are tried from the least utilised; the room their pods take is reserved."""
    utilization = np.asarray(utilization, dtype=float)
    pods = np.asarray(pods, dtype=int)
    free = np.asarray(free_slots, dtype=int).copy()
    blocked = np.asarray(blocked, dtype=bool)
    leaving = np.zeros(len(utilization), dtype=bool)
    candidates = np.flatnonzero((utilization < threshold) & ~blocked)
    for i in candidates[np.argsort(utilization[candidates], kind="stable")]:
        others = ~leaving
        others[i] = False
        need = int(pods[i])
        if need > int(free[others].sum()):
            continue
        leaving[i] = True
        free[i] = 0
        for j in np.argsort(-np.where(others, free, -1), kind="stable"):  # roomiest first
            if need == 0:
                break
            take = min(need, int(free[j]))
            free[j] -= take
            need -= take
    return leaving


def in_cooldown(
    now: float, *, last_scale_up: float, last_delete: float, settings: AutoscalerSettings
) -> bool:
    """isScaleDownInCooldown: last event + delay still after now."""
    return (
        last_scale_up + settings.scale_down_delay_after_add_s > now
        or last_delete + settings.scale_down_delay_after_delete_s > now
    )


class ClusterAutoscaler:
    def __init__(
        self, settings: AutoscalerSettings, cluster: Cluster, *, say: Callable[[float, str, str], None]
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.pool = cluster.pool
        self.say = say
        self.last_scale_up = -math.inf
        self.last_delete = -math.inf
        self.draining_until = -math.inf
        self._seen = -1  # the cluster's node_version the unneeded nodes were found at

    def run_once(self, now: float) -> int:
        """One loop; returns how many pods were evicted (the ReplicaSet replaces them)."""
        cluster = self.cluster
        scaled_up = False
        hold_scale_down = False
        if cluster.unbound:
            young = self._all_pending_young(now)
            if young:
                hold_scale_down = True  # "waiting one iteration for more"
            else:
                scaled_up = self._scale_up(now)
        return self._scale_down(now, skip_actuation=scaled_up or hold_scale_down)

    def _all_pending_young(self, now: float) -> bool:
        # The pending pods are the live ones not bound: found over the pod arrays at
        # once, not one by one through the scheduler's queue (thousands, in a cluster
        # that has run out of room).
        cluster = self.cluster
        pending = cluster.p_alive & np.isnan(cluster.p_deleted) & (cluster.p_node < 0)
        if not pending.any():
            return False
        return float(cluster.p_created[pending].min()) > now - self.settings.new_pod_buffer_s

    def _scale_up(self, now: float) -> bool:
        cluster = self.cluster
        count = nodes_to_add(
            unschedulable=cluster.unbound,
            pods_fit=cluster.shape.pods_fit,
            upcoming=cluster.nodes_provisioning,
            nodes=cluster.nodes_up + cluster.nodes_provisioning,
            max_nodes=self.pool.max_nodes,
        )
        if count <= 0:
            return False
        for _ in range(count):
            cluster.add_node(now)
        self.last_scale_up = now
        self.say(
            now, "node_requested", f"{count} node(s) requested for {cluster.unbound} unschedulable pod(s)"
        )
        return True

    def _unneeded(self, now: float) -> None:
        """Which nodes are unneeded and since when; the timers start and stop here.
        A function of the nodes' state alone: unchanged since the last loop, so are
        the answer and the timers (a node already unneeded keeps its start)."""
        cluster, shape = self.cluster, self.cluster.shape
        n = cluster._nodes
        up = cluster.n_state[:n] == NODE_UP
        cpu_used, memory_used = cluster.n_cpu_used[:n], cluster.n_memory_used[:n]
        utilization = np.maximum(cpu_used / shape.cpu_m, memory_used / shape.memory_mib)
        slots_cpu = (shape.cpu_m - cpu_used) // cluster.pod.cpu_request_m
        slots_memory = (
            (shape.memory_mib - memory_used) // cluster.pod.memory_request_mib
            if cluster.pod.memory_request_mib
            else slots_cpu
        )
        free = np.where(up, np.maximum(np.minimum(slots_cpu, slots_memory), 0), 0)
        leaving = unneeded_nodes(
            utilization=np.where(up, utilization, np.inf),
            pods=cluster.n_pods[:n],
            free_slots=free,
            blocked=cluster.n_system[:n] | ~up,
            threshold=self.settings.utilization_threshold,
        )
        since = cluster.n_unneeded_since[:n]
        since[leaving & np.isnan(since)] = now
        since[~leaving] = np.nan
        self._seen = cluster.node_version
        self._utilization, self._leaving = utilization, leaving
        # The first node to ripen decides whether any has: since + delay is monotonic.
        self._first_unneeded = float(since[leaving].min()) if leaving.any() else math.inf

    def _scale_down(self, now: float, *, skip_actuation: bool) -> int:
        cluster, settings, pool = self.cluster, self.settings, self.pool
        if cluster.node_version != self._seen:
            self._unneeded(now)
        if skip_actuation or in_cooldown(
            now, last_scale_up=self.last_scale_up, last_delete=self.last_delete, settings=settings
        ):
            return 0
        allowed = cluster.nodes_up + cluster.nodes_provisioning - pool.min_nodes
        if allowed <= 0 or self._first_unneeded + settings.scale_down_unneeded_s > now:
            return 0
        n = cluster._nodes
        utilization, leaving, since = self._utilization, self._leaving, cluster.n_unneeded_since[:n]
        ripe = leaving & (since + settings.scale_down_unneeded_s <= now)
        empty = np.flatnonzero(ripe & (cluster.n_pods[:n] == 0))[::-1]  # the newest first
        if len(empty):
            chosen = empty[: min(allowed, settings.max_empty_bulk_delete)]
            for index in chosen:
                cluster.remove_node(int(index), now)
            self.last_delete = now
            unneeded_for = now - float(np.min(since[chosen]))
            self.say(
                now, "scale_down", f"removing {len(chosen)} empty node(s), unneeded for {unneeded_for:.0f} s"
            )
            return 0
        if now < self.draining_until:
            return 0  # non-empty nodes are drained one at a time
        candidates = np.flatnonzero(ripe)
        index = int(candidates[np.argmin(utilization[candidates])])
        evicted = cluster.remove_node(index, now)
        self.draining_until = now + cluster.pod.termination_s + pool.delete_s
        self.last_delete = now
        self.say(
            now,
            "scale_down",
            f"draining node {index} ({len(evicted)} pod(s) moved), unneeded for {now - since[index]:.0f} s",
        )
        return len(evicted)
