"""The tick loop: load in, controllers on their periods, pods serving, a row out.

Each tick (``settings.tick_s``, 1 s by default):
1. the cluster applies the events that fell due (containers started, pods Ready,
   pods gone, nodes Ready or removed) and the scheduler binds pending pods;
2. the controllers whose period came round run, in the order of a real cluster's
   data flow: manual changes, the HPA (reading the last metrics-server scrape),
   the cluster autoscaler; the ReplicaSet applies their replica counts at once;
3. the ready pods share the tick's load evenly (a Service spreads requests over
   its ready endpoints) and serve it as the queueing model says;
4. one row is written: load, pods, nodes, CPU, latency.

A tick costs a table lookup and a few counters; the per-pod work (the HPA reading
every pod's metric, the cluster autoscaler weighing every node) happens at the
controllers' periods, vectorised, and is redone only when the pods or nodes
changed (the cluster's versions); a Deployment whose pods are all settled has
them all alike to the HPA, so one pod's usage stands for all. 24 hours of 1 s
ticks with 2,000 pods run in about half a second.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from mlscale.loadtest.shapes import USERS, Shape
from mlscale.simulate import hpa as hpa_rules
from mlscale.simulate.autoscaler import ClusterAutoscaler
from mlscale.simulate.cluster import NODE_UP, Cluster
from mlscale.simulate.metrics import CpuSeries, last_scrape, sample_windows
from mlscale.simulate.profile import sample
from mlscale.simulate.queue import REPORTED, RHO_MAX, PodModel
from mlscale.simulate.settings import CPU, SimSettings, validate
from mlscale.simulate.tables import ClosedTable, OpenTable

COLUMNS = (
    "time_s",
    "load",
    "pods_desired",
    "pods_ready",
    "pods_pending",
    "pods_starting",
    "nodes",
    "nodes_provisioning",
    "nodes_billed",
    "cpu_utilization",
    "hpa_metric",
    "node_cpu_utilization",
    "rps",
    "in_flight",
    "failed_rps",
    "p50_ms",
    "p95_ms",
)


@dataclass
class Run:
    """What a simulation produced: the columns tick by tick, and the events."""

    settings: SimSettings
    model: PodModel
    kind: str  # users or rps
    columns: dict[str, np.ndarray]
    events: list[dict[str, Any]] = field(default_factory=list)
    sla_column: str = "p95_ms"
    name: str = ""


@dataclass(frozen=True)
class _LivePods:
    """The live pods' timestamps (NaN: not yet), in slot order, as the HPA reads
    them; and, when every pod is bound, started, Ready and not deleting, the
    latest of those times, which say at once whether all of them are settled."""

    version: int
    started: np.ndarray
    ready_at: np.ndarray
    bound: np.ndarray
    deleting: np.ndarray
    request_m: np.ndarray
    latest: tuple[float, float, float] | None  # (started, Ready, bound)

    @classmethod
    def of(cls, cluster: Cluster, request_m: float) -> _LivePods:
        live = np.flatnonzero(cluster.p_alive)
        started, ready_at, bound = cluster.p_started[live], cluster.p_ready[live], cluster.p_bound[live]
        deleting = ~np.isnan(cluster.p_deleted[live])
        latest = None
        if len(live) and not deleting.any():
            latest = (float(started.max()), float(ready_at.max()), float(bound.max()))
            if any(math.isnan(t) for t in latest):  # a pod not yet bound, started or Ready
                latest = None
        return cls(
            cluster.pod_version, started, ready_at, bound, deleting, np.full(len(live), request_m), latest
        )

    def settled_at(self, now: float, scrape: float, resolution_s: float, initialization_s: float) -> bool:
        """Every pod has two samples (started before the window: ``sample_windows``),
        was Ready by the window's start, and is past the CPU initialisation period
        (``group_pods``): each comparison as those functions make it, on the latest."""
        if self.latest is None:
            return False
        started, ready, bound = self.latest
        window_start = scrape - resolution_s
        return started < window_start and ready <= window_start and not bound + initialization_s > now


def simulate(settings: SimSettings, shape: Shape, model: PodModel, *, name: str = "") -> Run:
    """Replay ``shape`` against the cluster of ``settings`` with pods like ``model``."""
    validate(settings)
    return _Engine(settings, shape, model, name).run()


class _Engine:
    # The HPA's shortcut for a settled Deployment (see _cpu_proposal); the tests turn
    # it off to check that it changes no number.
    settled_shortcut = True

    def __init__(self, settings: SimSettings, shape: Shape, model: PodModel, name: str):
        if settings.service.network_ms:
            # The network's delay is part of every response and of a user's cycle.
            model = dataclasses.replace(model, delay_ms=model.delay_ms + settings.service.network_ms)
        self.settings, self.model, self.shape, self.name = settings, model, shape, name
        self.dt = settings.tick_s
        self.load = sample(shape, self.dt)
        self.ticks = len(self.load)
        self.events: list[dict[str, Any]] = []
        sla_q = settings.sla.quantile
        self.quantiles = REPORTED if sla_q in REPORTED else (*REPORTED, sla_q)
        self.sla_index = self.quantiles.index(sla_q)
        self.closed = shape.kind == USERS
        self.table: ClosedTable | OpenTable
        if self.closed:
            self.table = ClosedTable(model, settings.think_time_s, self.quantiles, float(self.load.max()))
        else:
            self.table = OpenTable(model, self.quantiles)
        self.cluster = Cluster(settings.pool, settings.pod, events=self.say)
        self.series = CpuSeries(self.ticks, self.dt)
        self.in_flight = np.zeros(self.ticks)
        self.autoscaler = (
            ClusterAutoscaler(settings.autoscaler, self.cluster, say=self.say)
            if settings.autoscaler_enabled
            else None
        )
        self.memory = hpa_rules.HpaMemory()
        self.desired = settings.start_replicas()
        if settings.initial_replicas is None and settings.hpa is not None and settings.manual is None:
            self.desired = self.steady_replicas(float(self.load[0]))
        self.hpa_metric = math.nan
        self.backlog = 0.0
        self._live: _LivePods | None = None

    def steady_replicas(self, offered: float) -> int:
        """The replicas the HPA would settle at for ``offered``: a run starts in steady
        state unless told otherwise (the presets start, as the reference did, at 1)."""
        hpa = self.settings.hpa
        assert hpa is not None  # only asked with an HPA

        def metric(pods: int) -> float:
            if self.closed:
                row = self.table.at(offered / pods)
                busy, in_flight = row[1], row[3]
            else:
                rho = min(offered / (pods * self.model.capacity_rps), RHO_MAX)
                busy = rho
                in_flight = rho * self.model.capacity_rps * self.table.at(rho)[0] / 1000
            return 100 * busy if hpa.metric == CPU else in_flight

        low, high = hpa.min_replicas, hpa.max_replicas
        if metric(high) > hpa.target:
            return high
        while low < high:  # the fewest pods at or under the target
            middle = (low + high) // 2
            if metric(middle) <= hpa.target:
                high = middle
            else:
                low = middle + 1
        return low

    def say(self, time: float, kind: str, detail: str) -> None:
        self.events.append({"time_s": round(float(time), 3), "kind": kind, "detail": detail})

    # --- the Deployment's replica count ---------------------------------------------

    def set_replicas(self, replicas: int, now: float) -> None:
        """The ReplicaSet controller: create or delete pods to match, at once."""
        self.desired = replicas
        change = replicas - self.cluster.active
        if change > 0:
            self.cluster.create_pods(change, now)
        elif change < 0:
            self.cluster.delete_pods(-change, now)

    def set_nodes(self, nodes: int, now: float) -> None:
        """A manual resize of the pool: new nodes provision; removed ones (the newest)
        are drained and their pods replaced elsewhere."""
        cluster = self.cluster
        current = cluster.nodes_up + cluster.nodes_provisioning
        for _ in range(max(0, nodes - current)):
            cluster.add_node(now)
        up = cluster.node_indices(NODE_UP)[::-1]
        for index in up[: max(0, current - nodes)]:
            evicted = cluster.remove_node(int(index), now)
            cluster.create_pods(len(evicted), now)
        self.say(now, "manual_nodes", f"node pool resized to {nodes}")

    # --- the HPA --------------------------------------------------------------------

    def _live_pods(self) -> _LivePods:
        """The live pods' timestamps, gathered again only when a pod changed."""
        cluster = self.cluster
        if self._live is None or self._live.version != cluster.pod_version:
            self._live = _LivePods.of(cluster, float(self.settings.pod.cpu_request_m))
        return self._live

    def _cpu_proposal(self, now: float) -> hpa_rules.Proposal:
        settings = self.settings
        metrics, hpa = settings.metrics, settings.hpa
        assert hpa is not None  # proposals come from the HPA's sync
        scrape = last_scrape(now, metrics.resolution_s, metrics.phase_s)
        if scrape is None:
            return hpa_rules.Proposal(None, None, "no scrape yet")
        pods = self._live_pods()
        if self.settled_shortcut and pods.settled_at(
            now, scrape, metrics.resolution_s, hpa.cpu_initialization_period_s
        ):
            # Every pod Ready, started and bound before the sample's window: each one is
            # READY, has a metric, and used the serving share the whole window. One
            # pod's usage, computed as the general path computes each, stands for all.
            usage_m = 1000 * self.series.serving_usage_cores(scrape - metrics.resolution_s, scrape)
            return hpa_rules.cpu_replicas_alike(
                current=self.desired,
                target_percent=hpa.target,
                tolerance=hpa.tolerance,
                pods=len(pods.started),
                usage_m=usage_m,
                request_m=float(pods.request_m[0]),
            )
        started, ready_at, start_time = pods.started, pods.ready_at, pods.bound
        with np.errstate(invalid="ignore"):
            running = started <= now
            ready = ready_at <= now
        has_metric, window_start = sample_windows(
            scrape=scrape,
            resolution_s=metrics.resolution_s,
            fresh_min_s=metrics.fresh_container_min_s,
            started=started,
        )
        usage = 1000 * self.series.pod_usage_cores(
            ready_since=ready_at, window_start=window_start, window_end=scrape
        )
        classes = hpa_rules.group_pods(
            now=now,
            deleting=pods.deleting,
            running=running,
            ready=ready,
            start_time=np.where(np.isnan(start_time), now, start_time),
            ready_since=np.where(ready, ready_at, start_time),
            has_metric=has_metric,
            metric_time=np.full(len(started), scrape),
            metric_window=scrape - window_start,
            cpu_initialization_period=hpa.cpu_initialization_period_s,
            initial_readiness_delay=hpa.initial_readiness_delay_s,
        )
        return hpa_rules.cpu_replicas(
            current=self.desired,
            target_percent=hpa.target,
            tolerance=hpa.tolerance,
            classes=classes,
            usage_m=usage,
            request_m=pods.request_m,
        )

    def _inflight_proposal(self, now: float) -> hpa_rules.Proposal:
        settings = self.settings
        assert settings.hpa is not None  # proposals come from the HPA's sync
        scrape = last_scrape(now, settings.metrics.inflight_scrape_s, settings.metrics.phase_s)
        if scrape is None or self.cluster.active == 0:
            return hpa_rules.Proposal(None, None, "no scrape yet")
        # The gauge as scraped at that instant: the tick before it (or the start).
        index = min(round(scrape / self.dt), self.ticks) - 1
        total = float(self.in_flight[index]) if index >= 0 else self.initial_in_flight
        return hpa_rules.external_average_replicas(
            status_replicas=self.cluster.active,
            total=total,
            target_per_pod=settings.hpa.target,
            tolerance=settings.hpa.tolerance,
        )

    def hpa_sync(self, now: float) -> None:
        hpa = self.settings.hpa
        assert hpa is not None  # synced only with an HPA
        propose = self._cpu_proposal if hpa.metric == CPU else self._inflight_proposal
        current = self.desired
        decision = hpa_rules.reconcile(
            self.memory, hpa, now=now, current=current, propose=lambda: propose(now)
        )
        if decision.proposal is not None and decision.proposal.utilization is not None:
            self.hpa_metric = decision.proposal.utilization
        if decision.replicas != current:
            metric = "" if decision.proposal is None else f", metric {decision.proposal.utilization}"
            self.say(
                now, "hpa_scale", f"{current} -> {decision.replicas} replicas ({decision.reason}{metric})"
            )
            self.set_replicas(decision.replicas, now)

    # --- the loop -------------------------------------------------------------------

    def run(self) -> Run:
        settings, cluster, dt = self.settings, self.cluster, self.dt
        nodes = settings.pool.start_nodes
        if settings.pool.initial_nodes is None and cluster.shape.pods_fit:
            # Enough nodes for the starting pods, as a cluster in steady state has.
            nodes = min(settings.pool.max_nodes, max(nodes, math.ceil(self.desired / cluster.shape.pods_fit)))
        for _ in range(nodes):
            cluster.add_node(0.0, ready_now=True)
        cluster.start_ready_pods(self.desired, 0.0)
        manual = settings.manual
        replica_steps = list(manual.replicas) if manual else []
        node_steps = list(manual.nodes) if manual else []
        hpa = settings.hpa if manual is None else None
        next_hpa = hpa.phase_s if hpa else math.inf
        next_ca = settings.autoscaler.phase_s if self.autoscaler else math.inf
        timeout_ms = settings.service.timeout_s * 1000
        lost_s = max(0.0, settings.pod.propagation_delay_s - settings.pod.prestop_s)
        sla_index = self.sla_index
        node_cpu = cluster.shape.cpu_m / 1000
        cores = settings.pod.cpu_cores
        extra_sla = sla_index >= len(REPORTED)  # the SLA's percentile is a column of its own
        # One tuple a tick, made into columns at the end: cheaper than a store into
        # each of 17 arrays every tick. Only what the controllers read back (the CPU
        # series, the in-flight gauge) goes to its array as the run goes.
        rows: list[tuple[float, ...]] = []
        record = rows.append
        pending_since = None
        cumulative = self.series.cumulative
        in_flight_series = self.in_flight
        load = self.load
        serve = self.serve
        # Pods that served before the start have the first tick's CPU rate in the past.
        start = serve(load[0], cluster.ready)
        self.series.first_rate = start[1] * cores
        self.initial_in_flight = start[2]
        self.backlog = 0.0
        used = 0.0  # the CPU series' running total (cumulative[i])
        for i in range(self.ticks):
            now = i * dt
            cluster.advance(now)
            while replica_steps and replica_steps[0][0] <= now:
                replicas = replica_steps.pop(0)[1]
                if replicas != self.desired:
                    self.say(now, "manual_scale", f"{self.desired} -> {replicas} replicas")
                self.set_replicas(replicas, now)
            while node_steps and node_steps[0][0] <= now:
                self.set_nodes(node_steps.pop(0)[1], now)
            if cluster.dirty and cluster.unbound:
                cluster.schedule(now)
            if hpa is not None and now >= next_hpa:
                next_hpa += hpa.sync_period_s
                self.hpa_sync(now)
            if self.autoscaler is not None and now >= next_ca:
                next_ca += settings.autoscaler.scan_interval_s
                evicted = self.autoscaler.run_once(now)
                if evicted:
                    cluster.create_pods(evicted, now)  # the ReplicaSet replaces evicted pods
            if cluster.dirty and cluster.unbound:
                cluster.schedule(now)
            if cluster.unbound and pending_since is None:
                pending_since = now
                self.say(now, "pods_pending", f"{cluster.unbound} pod(s) Pending: no node has room")
            elif not cluster.unbound and pending_since is not None:
                self.say(
                    now, "pods_scheduled", f"no pod Pending any more (after {now - pending_since:.0f} s)"
                )
                pending_since = None

            ready = cluster.ready
            offered = load[i]
            served, busy, in_flight, failed, p50, p95, p_sla = serve(offered, ready)
            if cluster.ready_deleted:
                # Requests routed to pods already told to stop, until proxies catch up.
                failed += cluster.ready_deleted * (served / max(ready, 1)) * lost_s / dt
                cluster.ready_deleted = 0
            used = used + busy * cores * dt
            cumulative[i + 1] = used
            in_flight_series[i] = in_flight
            if p95 > timeout_ms:
                p50, p95, p_sla = min(p50, timeout_ms), timeout_ms, min(p_sla, timeout_ms)
            nodes_up = cluster.nodes_up
            record(
                (
                    now,
                    offered,
                    self.desired,
                    ready,
                    cluster.unbound,
                    cluster.starting,
                    nodes_up,
                    cluster.nodes_provisioning,
                    cluster.billable_nodes(),
                    100 * busy,
                    self.hpa_metric,
                    100 * ready * busy * cores / (nodes_up * node_cpu) if nodes_up else 0.0,
                    served,
                    in_flight,
                    failed,
                    p50,
                    p95,
                    p_sla,
                )
            )
        table = np.array(rows, dtype=float).reshape(self.ticks, len(COLUMNS) + 1)
        names = (*COLUMNS, self.sla_name()) if extra_sla else COLUMNS
        columns = {name: np.ascontiguousarray(table[:, k]) for k, name in enumerate(names)}
        return Run(
            settings=settings,
            model=self.model,
            kind=self.shape.kind,
            columns=columns,
            events=self.events,
            sla_column=self.sla_name(),
            name=self.name,
        )

    def serve(self, offered: float, ready: int) -> tuple[float, float, float, float, float, float, float]:
        """(served rps, busy share, in flight, failed rps, p50, p95, SLA percentile)
        for one tick of ``offered`` load on ``ready`` pods.

        Closed loop: the table of the finite-source queue at users per pod. Open loop:
        the stationary M/M/c up to RHO_MAX (held there up to capacity); beyond capacity
        a backlog builds at the excess rate, drains when capacity returns, and adds its
        drain time to every percentile; requests that would wait past the timeout fail."""
        dt = self.dt
        if ready == 0:
            # No endpoints: the Service refuses at once, every request fails.
            self.backlog = 0.0
            failed = offered / max(self.settings.think_time_s, 1e-3) if self.closed else offered
            return 0.0, 0.0, 0.0, failed, math.nan, math.nan, math.nan
        if self.closed:
            closed = cast(ClosedTable, self.table)  # a closed loop's table (see __init__)
            throughput, busy, in_flight, p50, p95, p_sla = closed.serving(offered / ready, self.sla_index)
            return (throughput * ready, busy, in_flight * ready, 0.0, p50, p95, p_sla)
        capacity = ready * self.model.capacity_rps
        timeout_s = self.settings.service.timeout_s
        before = self.backlog
        backlog = max(0.0, before + (offered - capacity) * dt)
        failed = 0.0
        if backlog > capacity * timeout_s:
            failed = (backlog - capacity * timeout_s) / dt
            backlog = capacity * timeout_s
        self.backlog = backlog
        rho = offered / capacity
        opened = cast(OpenTable, self.table)  # an open loop's table (see __init__)
        mean, p50, p95, p_sla = opened.serving(min(RHO_MAX, rho), self.sla_index)
        queued_ms = 1000 * backlog / capacity
        served = min(offered + before / dt, capacity)
        busy = 1.0 if (backlog > 0 or rho >= 1) else rho
        in_flight = served * mean / 1000 + backlog
        return (served, busy, in_flight, failed, p50 + queued_ms, p95 + queued_ms, p_sla + queued_ms)

    def sla_name(self) -> str:
        percentile = self.settings.sla.percentile
        return "p95_ms" if self.sla_index == 1 else ("p50_ms" if self.sla_index == 0 else f"{percentile}_ms")
