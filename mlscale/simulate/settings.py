"""Typed settings of a simulation: the cluster, the pods, the controllers.

Every default is either a Kubernetes / cluster-autoscaler default, with its
source in ``source``, or a number nobody publishes (GKE's metrics resolution,
node boot time, image pull, model load), marked ``unpublished`` and meant to be
swept. ``describe_settings()`` lists them all for ``mlscale simulate
--list-settings``; ``apply_overrides()`` sets any of them from ``--set
section.name=value``.

Sources (the letters the code's comments use):
  [R]  kubernetes/kubernetes pkg/controller/podautoscaler/replica_calculator.go
  [H]  kubernetes/kubernetes pkg/controller/podautoscaler/horizontal.go
  [D]  kubernetes/kubernetes pkg/controller/podautoscaler/config/v1alpha1/defaults.go
  [V2] kubernetes/kubernetes pkg/apis/autoscaling/v2/defaults.go
  [HD] https://kubernetes.io/docs/concepts/workloads/autoscaling/horizontal-pod-autoscale/
  [MS] https://github.com/kubernetes-sigs/metrics-server (pkg/storage/pod.go, FAQ.md)
  [AD] kubernetes/kubernetes cluster/addons/metrics-server/metrics-server-deployment.yaml
  [PL] https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/
  [PR] https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/
  [CA] https://github.com/kubernetes/autoscaler/blob/master/cluster-autoscaler/FAQ.md
  [CF] kubernetes/autoscaler cluster-autoscaler/config/flags/flags.go
  [GKE] https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes
  [KE] https://keda.sh/docs/2.14/concepts/scaling-deployments/
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field

from mlscale.capacity.sizing import NODE_TYPES
from mlscale.errors import ConfigurationError


def _p(default: typing.Any, doc: str, source: str = "") -> typing.Any:
    """A field with its explanation and where its default comes from."""
    return field(default=default, metadata={"doc": doc, "source": source})


UNPUBLISHED = "unpublished: a parameter, sweep it"

# On-demand list prices in us-central1, USD per node-hour (2024). A default for
# comparing policies, not a quote: pass --price-per-node-hour for yours.
NODE_PRICES: dict[str, float] = {
    "e2-standard-2": 0.067,
    "e2-standard-4": 0.134,
    "e2-standard-8": 0.268,
    "e2-standard-16": 0.536,
    "e2-standard-32": 1.072,
    "n2-standard-2": 0.097,
    "n2-standard-4": 0.194,
    "n2-standard-8": 0.388,
    "n2-standard-16": 0.777,
    "c3-standard-4": 0.209,
    "c3-standard-8": 0.418,
}


@dataclass(frozen=True, kw_only=True)
class NodePool:
    """One GKE node pool; allocatable from GKE's reservation formula [GKE]."""

    machine_type: str = _p("e2-standard-4", "GKE machine type (mlscale.capacity.sizing.NODE_TYPES)")
    min_nodes: int = _p(3, "the pool's minimum (the cluster autoscaler never goes below)")
    max_nodes: int = _p(3, "the pool's maximum (equal to min: no cluster autoscaler)")
    initial_nodes: int | None = _p(None, "nodes at the start (default: min_nodes)")
    daemonset_cpu_m: int = _p(100, "CPU the DaemonSets request on every node", "[GKE] kube-proxy: 100m")
    daemonset_memory_mib: int = _p(200, "memory the DaemonSets request on every node", UNPUBLISHED)
    system_cpu_m: tuple[int, ...] = _p(
        (),
        "CPU requested by kube-system Deployments (kube-dns, metrics-server...) on the "
        "first nodes, one value per node; they block that node's scale-down [CA]",
        UNPUBLISHED,
    )
    provision_s: float = _p(
        60.0,
        "from the autoscaler's request to a Ready node",
        "[CA] 3-4 min on GCE; the reference saw ~1 min; " + UNPUBLISHED,
    )
    delete_s: float = _p(
        5.0, "from the decision to delete a node to its removal (taint, then delete)", "[CA]"
    )
    price_per_hour: float | None = _p(None, "USD per node-hour (default: NODE_PRICES, us-central1 list)")

    @property
    def start_nodes(self) -> int:
        return self.min_nodes if self.initial_nodes is None else self.initial_nodes

    @property
    def hourly_price(self) -> float:
        if self.price_per_hour is not None:
            return self.price_per_hour
        return NODE_PRICES.get(self.machine_type, 0.0)


@dataclass(frozen=True, kw_only=True)
class PodTemplate:
    """The Deployment's pod: requests, start-up and termination."""

    cpu_request_m: int = _p(1000, "CPU request (= limit: a busy pod uses 100 % of it)")
    memory_request_mib: int = _p(512, "memory request")
    image_pull_cold_s: float = _p(30.0, "image pull on a node that has not pulled it yet", UNPUBLISHED)
    image_pull_warm_s: float = _p(0.0, "image pull where the image is cached (IfNotPresent)", UNPUBLISHED)
    app_startup_s: float = _p(
        2.7,
        "container start to able to serve (loading the model)",
        "measured: the wine model baked by `mlscale build-image`, podman run to the first "
        "prediction at --cpus 1, median of 5 (benchmarks/container_bench.py; 2.2-2.7 s)",
    )
    readiness_initial_delay_s: float = _p(0.0, "readinessProbe.initialDelaySeconds", "[PR] default 0")
    readiness_period_s: float = _p(10.0, "readinessProbe.periodSeconds", "[PR] default 10")
    prestop_s: float = _p(0.0, "preStop sleep before SIGTERM", "[PL]")
    drain_s: float = _p(2.0, "SIGTERM to exit: in-flight requests finishing", UNPUBLISHED)
    grace_period_s: float = _p(30.0, "terminationGracePeriodSeconds", "[PL] default 30")
    propagation_delay_s: float = _p(
        2.0,
        "until proxies stop routing to a terminating pod; requests in the gap fail "
        "unless preStop sleeps at least this long",
        "[PL] " + UNPUBLISHED,
    )

    @property
    def cpu_cores(self) -> float:
        return self.cpu_request_m / 1000

    @property
    def termination_s(self) -> float:
        """Deletion to exit [PL]: preStop, then SIGTERM and the drain, killed at the grace
        period; a preStop that overruns it gets a one-off 2 s extension."""
        if self.prestop_s >= self.grace_period_s:
            return self.grace_period_s + 2.0
        return min(self.prestop_s + self.drain_s, self.grace_period_s)


@dataclass(frozen=True, kw_only=True)
class MetricsPipeline:
    """metrics-server: scrapes every resolution; a pod's CPU is the rate between its
    last two samples [MS]."""

    resolution_s: float = _p(
        30.0,
        "--metric-resolution",
        "[MS] binary 60s, release manifest 15s; [AD] GCE addon 30s; GKE " + UNPUBLISHED,
    )
    phase_s: float = _p(0.0, "time of the first scrape (scrapes at phase + k * resolution)")
    fresh_container_min_s: float = _p(
        10.0,
        "a container this old but younger than the resolution gets its start time as its first sample",
        "[MS] pkg/storage/pod.go freshContainerMinMetricsResolution",
    )
    inflight_scrape_s: float = _p(15.0, "scrape interval of the in-flight metric (Prometheus)", UNPUBLISHED)


@dataclass(frozen=True)
class ScalingPolicy:
    """One entry of behavior.scaleUp/scaleDown.policies [V2]."""

    type: str  # "Pods" or "Percent"
    value: int
    period_s: int

    def to_k8s(self) -> dict[str, typing.Any]:
        return {"type": self.type, "value": self.value, "periodSeconds": self.period_s}


@dataclass(frozen=True)
class ScalingRules:
    """behavior.scaleUp or behavior.scaleDown [V2]; a window of None takes the
    controller's --horizontal-pod-autoscaler-downscale-stabilization [H]."""

    stabilization_window_s: int | None
    select_policy: str  # "Max", "Min" or "Disabled"
    policies: tuple[ScalingPolicy, ...]

    def to_k8s(self) -> dict[str, typing.Any]:
        data: dict[str, typing.Any] = {
            "selectPolicy": self.select_policy,
            "policies": [p.to_k8s() for p in self.policies],
        }
        if self.stabilization_window_s is not None:
            data["stabilizationWindowSeconds"] = self.stabilization_window_s
        return data


# The defaults Kubernetes fills into a behavior that leaves a field out [V2].
DEFAULT_SCALE_UP = ScalingRules(0, "Max", (ScalingPolicy("Pods", 4, 15), ScalingPolicy("Percent", 100, 15)))
DEFAULT_SCALE_DOWN = ScalingRules(None, "Max", (ScalingPolicy("Percent", 100, 15),))


@dataclass(frozen=True)
class Behavior:
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN

    def to_k8s(self) -> dict[str, typing.Any]:
        return {"scaleUp": self.scale_up.to_k8s(), "scaleDown": self.scale_down.to_k8s()}

    @classmethod
    def from_k8s(cls, data: dict[str, typing.Any]) -> Behavior:
        """A ``spec.behavior`` as Kubernetes writes it, defaults filled in as [V2] does."""
        if not isinstance(data, dict) or set(data) - {"scaleUp", "scaleDown"}:
            raise ConfigurationError(
                "A behavior has only scaleUp and scaleDown, as in an HPA's spec.behavior."
            )
        return cls(
            _rules(data.get("scaleUp"), DEFAULT_SCALE_UP, "scaleUp"),
            _rules(data.get("scaleDown"), DEFAULT_SCALE_DOWN, "scaleDown"),
        )


def _rules(data: dict[str, typing.Any] | None, default: ScalingRules, name: str) -> ScalingRules:
    if data is None:
        return default
    try:
        window = data.get("stabilizationWindowSeconds", default.stabilization_window_s)
        select = data.get("selectPolicy", default.select_policy)
        policies = (
            tuple(
                ScalingPolicy(str(p["type"]), int(p["value"]), int(p["periodSeconds"]))
                for p in data["policies"]
            )
            if "policies" in data
            else default.policies
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigurationError(
            f"Cannot read behavior.{name}: {exc!r}; write it as in an HPA manifest."
        ) from None
    if select not in ("Max", "Min", "Disabled"):
        raise ConfigurationError(f"behavior.{name}.selectPolicy is Max, Min or Disabled, not {select!r}.")
    if any(p.type not in ("Pods", "Percent") or p.value <= 0 or p.period_s <= 0 for p in policies):
        raise ConfigurationError(
            f"behavior.{name}.policies: type Pods or Percent, positive value and periodSeconds."
        )
    if window is not None and (not isinstance(window, int) or window < 0):
        raise ConfigurationError(
            f"behavior.{name}.stabilizationWindowSeconds must be a whole number of seconds."
        )
    return ScalingRules(window, select, policies)


CPU = "cpu"
INFLIGHT = "inflight"


@dataclass(frozen=True, kw_only=True)
class HpaSettings:
    """A HorizontalPodAutoscaler and the controller's flags [D][HD]."""

    metric: str = _p(CPU, "cpu (Resource Utilization) or inflight (External AverageValue, as KEDA makes)")
    target: float = _p(80.0, "CPU percent of requests, or in-flight requests per pod")
    min_replicas: int = _p(1, "spec.minReplicas")
    max_replicas: int = _p(10, "spec.maxReplicas")
    behavior: Behavior | None = _p(None, "spec.behavior; None is what `kubectl autoscale` creates")
    sync_period_s: float = _p(15.0, "--horizontal-pod-autoscaler-sync-period", "[D] 15s")
    tolerance: float = _p(0.1, "--horizontal-pod-autoscaler-tolerance", "[D] 0.1")
    downscale_stabilization_s: float = _p(
        300.0, "--horizontal-pod-autoscaler-downscale-stabilization", "[D] 5m"
    )
    cpu_initialization_period_s: float = _p(
        300.0, "--horizontal-pod-autoscaler-cpu-initialization-period", "[D] 5m"
    )
    initial_readiness_delay_s: float = _p(
        30.0, "--horizontal-pod-autoscaler-initial-readiness-delay", "[D] 30s"
    )
    phase_s: float = _p(0.0, "time of the first sync")

    def manifest(self) -> dict[str, typing.Any]:
        """The values to put in the HPA manifest."""
        data: dict[str, typing.Any] = {"minReplicas": self.min_replicas, "maxReplicas": self.max_replicas}
        if self.metric == CPU:
            data["metrics"] = [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": round(self.target)},
                    },
                }
            ]
        else:
            data["metrics"] = [
                {
                    "type": "External",
                    "external": {
                        "metric": {"name": "inflight_requests"},
                        "target": {"type": "AverageValue", "averageValue": f"{self.target:g}"},
                    },
                }
            ]
        if self.behavior is not None:
            data["behavior"] = self.behavior.to_k8s()
        return data


@dataclass(frozen=True, kw_only=True)
class ManualScaling:
    """Fixed replica counts (and node counts) by phase, as in the reference's first
    experiment: ((start_s, replicas), ...) and ((start_s, nodes), ...)."""

    replicas: tuple[tuple[float, int], ...]
    nodes: tuple[tuple[float, int], ...] = ()


@dataclass(frozen=True, kw_only=True)
class AutoscalerSettings:
    """The cluster autoscaler's flags [CF][CA]; enabled when the pool's max > min."""

    scan_interval_s: float = _p(10.0, "--scan-interval", "[CF] 10s")
    scale_down_unneeded_s: float = _p(600.0, "--scale-down-unneeded-time", "[CF] 10m")
    scale_down_delay_after_add_s: float = _p(600.0, "--scale-down-delay-after-add", "[CF] 10m")
    scale_down_delay_after_delete_s: float = _p(10.0, "--scale-down-delay-after-delete", "[CF] scan interval")
    utilization_threshold: float = _p(0.5, "--scale-down-utilization-threshold", "[CF] 0.5")
    max_empty_bulk_delete: int = _p(10, "--max-empty-bulk-delete: empty nodes removed at once", "[CF] 10")
    new_pod_buffer_s: float = _p(2.0, "unschedulable pods younger than this wait one more loop", "[CA] 2s")
    phase_s: float = _p(0.0, "time of the first loop")


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """What the pods' clients see, beyond the pod's own queue."""

    network_ms: float = _p(0.0, "fixed delay added to every response (load balancer, network)", UNPUBLISHED)
    timeout_s: float = _p(60.0, "requests waiting longer fail (mlscale serve --timeout)")


@dataclass(frozen=True, kw_only=True)
class Sla:
    percentile: str = "p95"
    limit_ms: float = 1000.0

    @property
    def quantile(self) -> float:
        return quantile_of(self.percentile)

    @property
    def expr(self) -> str:
        return f"{self.percentile}<{self.limit_ms:g}ms"


def quantile_of(percentile: str) -> float:
    """``p95`` → 0.95, ``p999`` → 0.999, ``p50`` → 0.5."""
    digits = percentile.lower().removeprefix("p")
    if not digits.isdigit() or percentile.lower() == "p0":
        raise ConfigurationError(f"A percentile is written p50, p95, p99 or p999, not {percentile!r}.")
    return float("0." + digits)


@dataclass(frozen=True, kw_only=True)
class SimSettings:
    tick_s: float = _p(1.0, "simulated seconds per step")
    think_time_s: float = _p(1.0, "closed loop: seconds a user waits between answer and next request")
    initial_replicas: int | None = _p(
        None, "replicas at the start (default: where the HPA settles for the first load)"
    )
    pool: NodePool = field(default_factory=NodePool)
    pod: PodTemplate = field(default_factory=PodTemplate)
    metrics: MetricsPipeline = field(default_factory=MetricsPipeline)
    hpa: HpaSettings | None = field(default_factory=HpaSettings)
    manual: ManualScaling | None = None
    autoscaler: AutoscalerSettings = field(default_factory=AutoscalerSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    sla: Sla = field(default_factory=Sla)

    @property
    def autoscaler_enabled(self) -> bool:
        return self.pool.max_nodes > self.pool.min_nodes

    def start_replicas(self) -> int:
        if self.initial_replicas is not None:
            return self.initial_replicas
        if self.manual is not None:
            return self.manual.replicas[0][1] if self.manual.replicas else 1
        return self.hpa.min_replicas if self.hpa else 1


_SECTIONS = ("pool", "pod", "metrics", "hpa", "autoscaler", "service")


def describe_settings(settings: SimSettings | None = None) -> list[tuple[str, str, str, str]]:
    """(key, value, explanation, source) for every setting ``--set`` accepts."""
    settings = settings or SimSettings()
    rows = [
        (f.name, repr(getattr(settings, f.name)), f.metadata.get("doc", ""), f.metadata.get("source", ""))
        for f in dataclasses.fields(settings)
        if f.metadata
    ]
    for section in _SECTIONS:
        value = getattr(settings, section) or HpaSettings()
        for f in dataclasses.fields(value):
            if f.metadata:
                rows.append(
                    (
                        f"{section}.{f.name}",
                        repr(getattr(value, f.name)),
                        f.metadata["doc"],
                        f.metadata["source"],
                    )
                )
    return rows


def _coerce(text: str, annotation: object, key: str) -> object:
    kind = str(annotation)  # a string: annotations are not evaluated (__future__)
    optional = "None" in kind
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if kind.startswith("tuple"):
            return tuple(int(v) for v in text.split(",") if v.strip())
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
        if kind.startswith("str"):
            return text
        if kind.startswith("Behavior"):
            return Behavior.from_k8s(json.loads(text))
    except ValueError:
        raise ConfigurationError(f"--set {key}: cannot read {text!r} as {kind}.") from None
    raise ConfigurationError(f"--set {key}: this setting cannot be set from the command line.")


def apply_overrides(settings: SimSettings, assignments: typing.Iterable[str]) -> SimSettings:
    """``["hpa.tolerance=0.2", "pool.provision_s=90"]`` applied to ``settings``."""
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        section, _, name = key.rpartition(".")
        if not sep or (section and section not in _SECTIONS):
            raise ConfigurationError(
                f"--set takes SECTION.NAME=VALUE (sections: {', '.join(_SECTIONS)}), not {assignment!r}; "
                "`mlscale simulate --list-settings` lists them."
            )
        target = getattr(settings, section) if section else settings
        if section == "hpa" and target is None:
            raise ConfigurationError(f"--set {key}: this simulation has no HPA (--policy manual or none).")
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields or not fields[name].metadata:
            raise ConfigurationError(
                f"--set: unknown setting {key!r}; `mlscale simulate --list-settings` lists them."
            )
        value = _coerce(text.strip(), fields[name].type, key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigurationError(f"--set {key}: must not be negative.")
        updated = dataclasses.replace(target, **{name: value})
        changes: dict[str, typing.Any] = {section: updated}
        settings = dataclasses.replace(settings, **changes) if section else updated
    validate(settings)
    return settings


def validate(settings: SimSettings) -> None:
    """Reject settings no cluster could have, with a message that says which."""

    pool, pod = settings.pool, settings.pod
    if pool.machine_type not in NODE_TYPES:
        raise ConfigurationError(f"Unknown node type {pool.machine_type!r}; known: {', '.join(NODE_TYPES)}.")
    if not 0 <= pool.min_nodes <= pool.max_nodes or pool.max_nodes < 1:
        raise ConfigurationError(
            f"Nodes: need 0 <= min ({pool.min_nodes}) <= max ({pool.max_nodes}), max >= 1."
        )
    if not pool.min_nodes <= pool.start_nodes <= pool.max_nodes:
        raise ConfigurationError("The initial node count must lie between the pool's min and max.")
    if pod.cpu_request_m <= 0:
        raise ConfigurationError("The pod's CPU request must be positive.")
    if settings.tick_s <= 0 or settings.tick_s > 15:
        raise ConfigurationError("The tick must be between 0 and 15 s (the HPA syncs every 15 s).")
    if settings.metrics.resolution_s < settings.tick_s:
        raise ConfigurationError("The metrics resolution must be at least one tick.")
    hpa = settings.hpa
    if hpa is not None:
        if hpa.metric not in (CPU, INFLIGHT):
            raise ConfigurationError(f"The HPA scales on cpu or inflight, not {hpa.metric!r}.")
        if not 1 <= hpa.min_replicas <= hpa.max_replicas:
            raise ConfigurationError(
                f"Replicas: need 1 <= min ({hpa.min_replicas}) <= max ({hpa.max_replicas})."
            )
        if hpa.target <= 0:
            raise ConfigurationError("The HPA's target must be positive.")
    if settings.sla.limit_ms <= 0:
        raise ConfigurationError("The SLA's limit must be positive.")
