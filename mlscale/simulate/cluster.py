"""The cluster: one node pool, the Deployment's pods, the scheduler and the kubelet.

State lives in NumPy arrays (one slot per pod or node) and changes through
timed events (container started, pod Ready, pod gone, node Ready, node removed)
kept in a heap, so a tick with nothing happening costs a comparison. Counters
(ready, pending, starting) are updated at each transition: the tick loop reads
them without scanning pods.

The rules:
- Node allocatable: GKE's reservation formula [GKE] (``mlscale.capacity.sizing``),
  minus the DaemonSets' requests on every node (and kube-system Deployments on the
  first nodes, which also keep those nodes from being scaled down [CA]).
- Scheduling: a pod binds to a Ready, untainted node whose free CPU and memory
  cover its requests; among those, the least allocated one (the default
  NodeResourcesFit scoring); otherwise it stays Pending, unschedulable.
  https://kubernetes.io/docs/concepts/scheduling-eviction/resource-bin-packing/
- Start-up: image pull (cold on a node that has not pulled the image yet), then
  the container starts; Ready at the first readiness probe after the app can
  serve (probes every periodSeconds from initialDelaySeconds) [PR].
- Termination: deleted pods leave the Service at once, hold their node's
  resources for preStop + drain (capped by the grace period) [PL].
- Scale-down picks victims as the ReplicaSet does (controller_utils.go
  ActivePodsWithRanks): unscheduled first, then not running, not ready, on the
  nodes with the most replicas, ready for the shortest time, newest.
  https://github.com/kubernetes/kubernetes/blob/master/pkg/controller/controller_utils.go
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlscale.capacity.sizing import (
    NODE_TYPES,
    allocatable_cpu_m,
    allocatable_memory_mib,
)
from mlscale.simulate.settings import NodePool, PodTemplate

# Events, ordered by time in the heap.
POD_STARTED, POD_READY, POD_GONE, NODE_READY, NODE_REMOVED = range(5)
# Node states.
PROVISIONING, NODE_UP, REMOVING, REMOVED = range(4)


@dataclass(frozen=True)
class NodeShape:
    cpu_m: int  # allocatable
    memory_mib: int
    pods_fit: int  # Deployment pods a new node holds, after DaemonSets

    @classmethod
    def of(cls, pool: NodePool, pod: PodTemplate) -> NodeShape:
        vcpus, memory_gib = NODE_TYPES[pool.machine_type]
        cpu, memory = allocatable_cpu_m(vcpus), allocatable_memory_mib(memory_gib)
        fit_cpu = (cpu - pool.daemonset_cpu_m) // pod.cpu_request_m
        fit_memory = (
            (memory - pool.daemonset_memory_mib) // pod.memory_request_mib
            if pod.memory_request_mib
            else fit_cpu
        )
        return cls(cpu, memory, max(0, int(min(fit_cpu, fit_memory))))


class Cluster:
    def __init__(
        self, pool: NodePool, pod: PodTemplate, *, events: Callable[[float, str, str], None] | None = None
    ) -> None:
        self.pool, self.pod = pool, pod
        self.shape = NodeShape.of(pool, pod)
        self.say = events or (lambda time, kind, detail: None)
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._sequence = 0
        # Pods: slots are reused once a pod is gone; ``generation`` tells a stale
        # event (for a pod deleted before it became Ready) from a live one.
        self._pods = 0
        self.p_generation = np.zeros(0, dtype=np.int64)
        self.p_alive = np.zeros(0, dtype=bool)
        self.p_node = np.zeros(0, dtype=np.int32)
        self.p_created = np.zeros(0)
        self.p_bound = np.zeros(0)
        self.p_started = np.zeros(0)
        self.p_ready = np.zeros(0)
        self.p_deleted = np.zeros(0)
        self._free_slots: list[int] = []
        self.pending: deque[int] = deque()
        # Nodes: never reused (a removed node's history stays for the cost).
        self.n_state = np.zeros(0, dtype=np.int8)
        self.n_requested = np.zeros(0)
        self.n_up = np.zeros(0)
        self.n_removed = np.zeros(0)
        self.n_cpu_used = np.zeros(0)  # requests bound, DaemonSets and kube-system included
        self.n_memory_used = np.zeros(0)
        self.n_pods = np.zeros(0, dtype=np.int32)  # Deployment pods not deleted
        self.n_system = np.zeros(0, dtype=bool)
        self.n_image_at = np.zeros(0)  # when the image is (will be) on the node
        self.n_unneeded_since = np.zeros(0)
        self._nodes = 0
        # Counters the tick loop reads.
        self.active = 0  # pods not deleted (the ReplicaSet's replicas)
        self.ready = 0  # Ready and not deleted: serving
        self.unbound = 0  # not deleted, not bound: Pending, unschedulable
        self.terminating = 0
        self.nodes_up = 0
        self.nodes_provisioning = 0
        self.nodes_removing = 0
        self.dirty = False  # capacity changed: try the pending pods again
        # Bumped at every change of the nodes' (pods') state: what the controllers
        # derive from that state is recomputed only when it moves, which in a long run
        # is a few hundred times, not at each of their thousands of loops.
        self.node_version = 0
        self.pod_version = 0
        # Ready pods deleted since the caller last reset it: proxies keep routing to
        # them until the endpoint update propagates [PL].
        self.ready_deleted = 0

    # --- growth of the arrays ------------------------------------------------------

    def _grow_pods(self) -> None:
        size = max(64, 2 * len(self.p_alive))
        extra = size - len(self.p_alive)

        def grow(array: np.ndarray, fill: float) -> np.ndarray:
            return np.concatenate([array, np.full(extra, fill, dtype=array.dtype)])

        self.p_generation = grow(self.p_generation, 0)
        self.p_alive = grow(self.p_alive, False)
        self.p_node = grow(self.p_node, -1)
        for name in ("p_created", "p_bound", "p_started", "p_ready", "p_deleted"):
            setattr(self, name, grow(getattr(self, name), np.nan))
        self._free_slots.extend(range(size - 1, size - extra - 1, -1))

    def _grow_nodes(self) -> None:
        size = max(16, 2 * len(self.n_state))
        extra = size - len(self.n_state)

        def grow(array: np.ndarray, fill: float) -> np.ndarray:
            return np.concatenate([array, np.full(extra, fill, dtype=array.dtype)])

        self.n_state = grow(self.n_state, REMOVED)
        for name in ("n_requested", "n_up", "n_removed", "n_image_at", "n_unneeded_since"):
            setattr(self, name, grow(getattr(self, name), np.nan))
        self.n_cpu_used = grow(self.n_cpu_used, 0.0)
        self.n_memory_used = grow(self.n_memory_used, 0.0)
        self.n_pods = grow(self.n_pods, 0)
        self.n_system = grow(self.n_system, False)

    def _push(self, time: float, kind: int, index: int, generation: int = 0) -> None:
        self._sequence += 1
        heapq.heappush(self._heap, (time, self._sequence, kind, index, generation))

    # --- nodes ---------------------------------------------------------------------

    def add_node(self, now: float, *, ready_now: bool = False) -> int:
        """Request a node; Ready after the pool's provisioning delay."""
        if self._nodes == len(self.n_state):
            self._grow_nodes()
        index = self._nodes
        self._nodes += 1
        self.n_state[index] = PROVISIONING
        self.n_requested[index] = now
        system = self.pool.system_cpu_m[index] if index < len(self.pool.system_cpu_m) else 0
        self.n_cpu_used[index] = self.pool.daemonset_cpu_m + system
        self.n_memory_used[index] = self.pool.daemonset_memory_mib
        self.n_system[index] = system > 0
        self.n_pods[index] = 0
        self.nodes_provisioning += 1
        self.node_version += 1
        if ready_now:
            self._node_ready(index, now)
        else:
            self._push(now + self.pool.provision_s, NODE_READY, index)
        return index

    def _node_ready(self, index: int, now: float) -> None:
        self.n_state[index] = NODE_UP
        self.n_up[index] = now
        self.node_version += 1
        self.nodes_provisioning -= 1
        self.nodes_up += 1
        self.dirty = True

    def remove_node(self, index: int, now: float) -> list[int]:
        """Taint a node and remove it [CA]: its pods are evicted (returned: the caller's
        ReplicaSet replaces them), the node goes once they have exited."""
        self.n_state[index] = REMOVING
        self.node_version += 1
        self.nodes_up -= 1
        self.nodes_removing += 1
        victims = [
            int(s) for s in np.flatnonzero(self.p_alive & (self.p_node == index) & np.isnan(self.p_deleted))
        ]
        for slot in victims:
            self._delete(slot, now)
        leave = now + self.pool.delete_s + (self.pod.termination_s if victims else 0.0)
        self._push(leave, NODE_REMOVED, index)
        return victims

    def node_indices(self, state: int) -> np.ndarray:
        return np.flatnonzero(self.n_state[: self._nodes] == state)

    def billable_nodes(self) -> int:
        """Nodes the cloud charges for: requested and not yet removed."""
        return self.nodes_up + self.nodes_provisioning + self.nodes_removing

    # --- pods ----------------------------------------------------------------------

    def create_pods(self, count: int, now: float) -> None:
        for _ in range(count):
            if not self._free_slots:
                self._grow_pods()
            slot = self._free_slots.pop()
            self.p_generation[slot] += 1
            self.p_alive[slot] = True
            self.p_node[slot] = -1
            self.p_created[slot] = now
            self.p_bound[slot] = self.p_started[slot] = self.p_ready[slot] = self.p_deleted[slot] = np.nan
            self.pending.append(slot)
            self.active += 1
            self.unbound += 1
        self.pod_version += 1
        self.dirty = True

    def start_ready_pods(self, count: int, now: float) -> None:
        """Pods that have run since long before ``now``: bound, started and Ready."""
        self.create_pods(count, now)
        self.schedule(now, instant=True)

    def schedule(self, now: float, *, instant: bool = False) -> int:
        """Bind pending pods, first come first served; returns how many bound."""
        self.dirty = False
        bound = 0
        cpu, memory = self.pod.cpu_request_m, self.pod.memory_request_mib
        count = self._nodes
        while self.pending:
            slot = self.pending[0]
            if not self.p_alive[slot] or not math.isnan(self.p_deleted[slot]) or self.p_node[slot] >= 0:
                # Deleted while Pending, or an old entry of a reused slot already bound.
                self.pending.popleft()
                continue
            free_cpu = self.shape.cpu_m - self.n_cpu_used[:count]
            free_memory = self.shape.memory_mib - self.n_memory_used[:count]
            fits = (self.n_state[:count] == NODE_UP) & (free_cpu >= cpu) & (free_memory >= memory)
            if not fits.any():
                break  # the pods are alike: if this one fits nowhere, none does
            # Least allocated first (the default scoring), the lowest index on a tie.
            score = np.where(fits, free_cpu / self.shape.cpu_m + free_memory / self.shape.memory_mib, -1.0)
            node = int(np.argmax(score))
            self.pending.popleft()
            self._bind(slot, node, now, instant)
            bound += 1
        return bound

    def _bind(self, slot: int, node: int, now: float, instant: bool) -> None:
        pod = self.pod
        self.p_node[slot] = node
        self.p_bound[slot] = now
        self.n_cpu_used[node] += pod.cpu_request_m
        self.n_memory_used[node] += pod.memory_request_mib
        self.n_pods[node] += 1
        self.unbound -= 1
        self.node_version += 1
        self.pod_version += 1
        if instant:  # a pod that was running before the simulation began
            self.n_image_at[node] = -math.inf
            self.p_bound[slot] = self.p_started[slot] = self.p_ready[slot] = -math.inf
            self.ready += 1
            return
        # The first pod on a node pulls the image; the others wait for that pull
        # (or pull from the cache once it is there).
        image_at = self.n_image_at[node]
        if math.isnan(image_at):
            image_at = self.n_image_at[node] = now + pod.image_pull_cold_s
        start = max(now + pod.image_pull_warm_s, image_at)
        self._push(start, POD_STARTED, slot, int(self.p_generation[slot]))

    def ready_delay_s(self) -> float:
        """Container start to Ready: the first probe at or after the app can serve [PR]."""
        pod = self.pod
        wait = max(0.0, pod.app_startup_s - pod.readiness_initial_delay_s)
        return (
            pod.readiness_initial_delay_s
            + math.ceil(wait / pod.readiness_period_s - 1e-9) * pod.readiness_period_s
        )

    def delete_pods(self, count: int, now: float) -> None:
        """The ReplicaSet removes ``count`` pods, the ones it ranks first."""
        live = np.flatnonzero(self.p_alive & np.isnan(self.p_deleted))
        if count <= 0 or len(live) == 0:
            return
        node = self.p_node[live]
        unbound = node < 0
        not_running = np.isnan(self.p_started[live]) | (self.p_started[live] > now)
        not_ready = np.isnan(self.p_ready[live])
        colocated = np.where(unbound, 0, self.n_pods[np.maximum(node, 0)])
        ready_since = np.nan_to_num(self.p_ready[live], nan=np.inf, neginf=-1e18)
        created = self.p_created[live]
        # lexsort: the last key sorts first. Each key is "larger is deleted earlier".
        keys = (created, ready_since, colocated, not_ready, not_running, unbound)
        order = np.lexsort(tuple(-np.asarray(k, dtype=float) for k in keys))
        for slot in live[order[:count]]:
            self._delete(int(slot), now)

    def _delete(self, slot: int, now: float) -> None:
        self.p_deleted[slot] = now
        self.pod_version += 1
        self.active -= 1
        if not math.isnan(self.p_ready[slot]):
            self.ready -= 1
            self.ready_deleted += 1
        node = int(self.p_node[slot])
        if node < 0:
            self.unbound -= 1
            self._free(slot)
            return
        self.n_pods[node] -= 1
        self.node_version += 1
        self.terminating += 1
        if math.isnan(self.p_started[slot]):
            self._gone(slot, now)  # never started: nothing to stop
            return
        self._push(now + self.pod.termination_s, POD_GONE, slot, int(self.p_generation[slot]))

    def _gone(self, slot: int, now: float) -> None:
        node = int(self.p_node[slot])
        self.n_cpu_used[node] -= self.pod.cpu_request_m
        self.n_memory_used[node] -= self.pod.memory_request_mib
        self.node_version += 1
        self.terminating -= 1
        self._free(slot)
        self.dirty = True

    def _free(self, slot: int) -> None:
        self.p_alive[slot] = False
        self.p_generation[slot] += 1  # invalidates its pending events
        self.pod_version += 1
        self._free_slots.append(slot)

    # --- time ----------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Apply every event due at or before ``now``."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            time, _, kind, index, generation = heapq.heappop(heap)
            if kind == NODE_READY:
                self._node_ready(index, time)
                self.say(time, "node_ready", f"node {index} Ready ({self.nodes_up} up)")
            elif kind == NODE_REMOVED:
                self.n_state[index] = REMOVED
                self.n_removed[index] = time
                self.node_version += 1
                self.nodes_removing -= 1
                self.say(time, "node_removed", f"node {index} removed ({self.nodes_up} up)")
            elif generation != self.p_generation[index]:
                continue  # the pod was deleted or replaced since
            elif kind == POD_STARTED:
                self.p_started[index] = time
                self.pod_version += 1
                if math.isnan(self.p_deleted[index]):
                    self._push(time + self.ready_delay_s(), POD_READY, index, generation)
            elif kind == POD_READY:
                if math.isnan(self.p_deleted[index]):
                    self.p_ready[index] = time
                    self.pod_version += 1
                    self.ready += 1
            elif kind == POD_GONE:
                self._gone(index, time)

    @property
    def starting(self) -> int:
        """Bound, not deleted, not yet Ready."""
        return self.active - self.unbound - self.ready
