"""Autoscaling on requests in flight: the objects that scale the model server on them.

The server exports ``mlscale_in_flight_requests`` (mlscale/serving/metrics.py: a
gauge summed over a pod's worker processes), so each pod has one series.
Prometheus scrapes it through the pod's ``prometheus.io/*`` annotations; the
labels ``namespace`` and ``pod`` are the ones the usual ``kubernetes-pods``
scrape job (Prometheus' example configuration, the prometheus-community chart)
attaches. Two ways to scale on it, both an ``autoscaling/v2`` HPA in the end:

- KEDA (the default): a ``ScaledObject`` whose ``prometheus`` trigger sums the
  gauge over the Deployment's pods; KEDA gives the HPA an External metric with
  the trigger's default metricType, AverageValue, so the HPA keeps
  sum / replicas at the threshold: the per-pod target.
  https://keda.sh/docs/latest/reference/scaledobject-spec/ and
  https://keda.sh/docs/latest/scalers/prometheus/
- prometheus-adapter: the HPA reads a Pods metric of the same name, which the
  adapter serves from a rule (``prometheus-adapter-values.yaml``, written beside
  the overlay for the adapter's Helm release, which lives in its own namespace).
  https://github.com/kubernetes-sigs/prometheus-adapter/blob/master/docs/config.md

The target is the plan's (:func:`mlscale.simulate.inflight.plan_inflight_target`),
the number ``mlscale simulate --policy inflight --plan`` runs with. These
builders are pure: numbers in, objects (dicts) out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlscale.k8s import SERVER
from mlscale.k8s.documents import document
from mlscale.k8s.plan import DeploySizing

# mlscale/serving/metrics.py names the gauge; a test holds the two names equal.
# (Not imported: the k8s renderer has no business importing prometheus_client.)
INFLIGHT_METRIC = "mlscale_in_flight_requests"
# Where Prometheus answers when installed as the prometheus-community chart's
# release "prometheus" in the namespace "monitoring"; --prometheus-url changes it.
DEFAULT_PROMETHEUS_URL = "http://prometheus-server.monitoring.svc"
KEDA = "keda"
PROMETHEUS_ADAPTER = "prometheus-adapter"


@dataclass(frozen=True, kw_only=True)
class InflightScaling:
    """Scale the model server on requests in flight instead of CPU (``--policy inflight``)."""

    via: str  # "keda" (a ScaledObject) or "prometheus-adapter" (an HPA on a Pods metric)
    target: float  # requests in flight per pod: mlscale.simulate.inflight.plan_inflight_target
    prometheus_url: str  # where KEDA queries Prometheus


def threshold_text(target: float) -> str:
    """The per-pod target as KEDA's threshold and a Kubernetes quantity: ``3.47``, ``2``.

    Fixed-point to hundredths (the target's own precision), never an exponent.
    """
    return f"{target:.2f}".rstrip("0").rstrip(".")


def pods_query(namespace: str, deployment: str) -> str:
    """PromQL: the requests in flight in all pods of ``deployment``, summed.

    A Deployment's pods are named ``<deployment>-<replicaset hash>-<suffix>``: the
    pattern matches those and no other Deployment's whose name merely starts alike.
    """
    pods = f"{deployment}-[a-z0-9]+-[a-z0-9]+"
    return f'sum({INFLIGHT_METRIC}{{namespace="{namespace}",pod=~"{pods}"}})'


def scaled_object(
    *,
    name: str,
    deployment: str,
    namespace: str,
    min_replicas: int,
    max_replicas: int,
    target: float,
    prometheus_url: str,
    behavior: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A KEDA ScaledObject scaling ``deployment`` on the summed in-flight gauge."""
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
        "minReplicaCount": min_replicas,
        "maxReplicaCount": max_replicas,
        # Prometheus scrapes every 15-30 s; KEDA's default polling (30 s) would add up
        # to half a minute more. The HPA that KEDA makes reads the metric every 15 s.
        "pollingInterval": 15,
    }
    if behavior:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    spec["triggers"] = [
        {
            "type": "prometheus",
            # AverageValue, KEDA's default written out: the HPA divides the sum by the
            # replicas, so the threshold is per pod.
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url,
                "query": pods_query(namespace, deployment),
                "threshold": threshold_text(target),
            },
        }
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def pods_metric(target: float) -> dict[str, Any]:
    """An HPA metric: the gauge per pod, as prometheus-adapter serves it, at ``target``."""
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": INFLIGHT_METRIC},
            "target": {"type": "AverageValue", "averageValue": threshold_text(target)},
        },
    }


def adapter_values() -> dict[str, Any]:
    """Helm values for prometheus-adapter: one custom-metrics rule serving the gauge per pod.

    The series carries ``namespace`` and ``pod`` labels, mapped to those resources, so
    the adapter answers the HPA's ``pods/mlscale_in_flight_requests`` for each pod.
    """
    return {
        "rules": {
            "custom": [
                {
                    "seriesQuery": f'{INFLIGHT_METRIC}{{namespace!="",pod!=""}}',
                    "resources": {
                        "overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
                    },
                    "name": {"matches": f"^{INFLIGHT_METRIC}$", "as": INFLIGHT_METRIC},
                    "metricsQuery": "sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)",
                }
            ]
        }
    }


def inflight_files(
    sizing: DeploySizing, inflight: InflightScaling, *, namespace: str, behavior: dict[str, Any] | None
) -> dict[str, str]:
    """The files that scale the server on requests in flight, replacing hpa.yaml's CPU target."""
    target = threshold_text(inflight.target)
    why = [
        f"{target} requests in flight per pod: the plan's pod at 80 % of its capacity at the SLA",
        "(mlscale.simulate.inflight; `mlscale simulate --plan plan.json --policy inflight` runs it).",
    ]
    if inflight.via == KEDA:
        delete = {
            "$patch": "delete",
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": SERVER},
        }
        obj = scaled_object(
            name=SERVER,
            deployment=SERVER,
            namespace=namespace,
            min_replicas=sizing.hpa_min_replicas,
            max_replicas=sizing.hpa_max_replicas,
            target=inflight.target,
            prometheus_url=inflight.prometheus_url,
            behavior=behavior,
        )
        return {
            "hpa.yaml": document(
                delete, ["KEDA makes and owns the HPA (scaledobject.yaml): the base's is removed."]
            ),
            "scaledobject.yaml": document(
                obj,
                [
                    f"KEDA scales {SERVER} from {sizing.hpa_min_replicas} to {sizing.hpa_max_replicas} pods on",
                    *why,
                    "The HPA it makes keeps sum(in flight) / pods at the threshold, with the base's behaviour.",
                    "Needs KEDA and a Prometheus that scrapes the pods (deploy/README.md).",
                ],
            ),
        }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": SERVER},
        "spec": {
            "minReplicas": sizing.hpa_min_replicas,
            "maxReplicas": sizing.hpa_max_replicas,
            "metrics": [pods_metric(inflight.target)],
        },
    }
    return {
        "hpa.yaml": document(
            hpa,
            [
                f"From the plan: {sizing.hpa_min_replicas} to {sizing.hpa_max_replicas} pods, adding pods above",
                *why,
                f"The Pods metric {INFLIGHT_METRIC} is prometheus-adapter's: install it with",
                "prometheus-adapter-values.yaml. The behaviour stays the base's.",
            ],
        ),
        "prometheus-adapter-values.yaml": document(
            adapter_values(),
            [
                f"prometheus-adapter's rule for the HPA's Pods metric {INFLIGHT_METRIC}:",
                "helm upgrade --install prometheus-adapter prometheus-community/prometheus-adapter \\",
                "  -n monitoring -f prometheus-adapter-values.yaml --set prometheus.url=http://prometheus-server",
                "Not part of the overlay: the adapter lives in its own namespace.",
            ],
        ),
    }
