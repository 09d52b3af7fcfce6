"""KServe: a ServingRuntime that runs ``mlscale serve``, and an InferenceService sized from a plan.

The runtime (serving.kserve.io/v1alpha1) says how to run mlscale for a model of
format ``mlflow``: KServe's storage initializer downloads the InferenceService's
``storageUri`` to ``/mnt/models`` before the server starts, and fills in the
runtime container's ``{{.Name}}`` (a Go template over the InferenceService's
metadata) with the InferenceService's name; the runtime's args map both onto
``mlscale serve -m /mnt/models --model-name {{.Name}}``. KServe sends traffic to
port 8080 of the container named ``kserve-container``, the container it merges
the predictor's resources and args into (its args are appended to the runtime's).

Protocols: the runtime declares ``v2``, the Open Inference Protocol
(``/v2/health/*``, ``/v2/models/{name}/infer``). KServe has no name for the
MLflow scoring protocol (its protocols are v1, v2, grpc-v1 and grpc-v2; v1 is
TensorFlow Serving's ``:predict``, not MLflow's), so ``/invocations`` is served
on the same port without being declared.

The InferenceService (serving.kserve.io/v1beta1) runs in KServe's raw
deployment mode: a Deployment and an HPA, no Knative. That is the autoscaler
the plan was sized and simulated for: ``scaleMetric: cpu`` and ``scaleTarget``
become the HPA's CPU utilisation target, ``minReplicas`` and ``maxReplicas`` its
bounds. With ``--policy inflight``, KServe's KEDA autoscaler class instead: an
``autoScaling`` External metric with the ``prometheus`` backend, from which
KServe makes a KEDA ScaledObject whose threshold is the metric's
``target.value`` (KServe passes that field, whatever the target's type, as the
trigger's threshold: pkg/controller/v1beta1/inferenceservice/reconcilers/keda).
KServe's documentation: https://kserve.github.io/website/docs/concepts/resources/servingruntime
and https://kserve.github.io/website/docs/model-serving/predictive-inference/autoscaling/keda-autoscaler/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlscale.errors import ConfigurationError
from mlscale.k8s.documents import document
from mlscale.k8s.inflight import pods_query, threshold_text
from mlscale.k8s.paths import deploy_root
from mlscale.k8s.plan import DeploySizing, sizing_from_plan
from mlscale.k8s.render import MARKER, PLAN_FILE, prepare_out_dir, write_files
from mlscale.schemas.plan import Plan

RUNTIME = "mlscale"
MODEL_FORMAT = "mlflow"
# The container KServe merges an InferenceService's model settings into.
KSERVE_CONTAINER = "kserve-container"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri
PORT = 8080  # where KServe sends the traffic of a ServingRuntime's container
DEFAULT_NAME = "wine-quality"
# A placeholder in the gke overlay's style: `mlscale k8s validate --for-apply` fails
# until it is replaced by the folder that holds the model's MLmodel file.
DEFAULT_STORAGE_URI = "gs://YOUR_BUCKET/YOUR_MODEL_DIR"
NAMESPACE = "mlscale"
SERVER_IMAGE = "mlscale/server"
DEPLOYMENT_MODE = "RawDeployment"  # newer KServe calls it Standard and still reads this name


def server_image(base_kustomization: Path) -> str:
    """The server image as the kustomize base pins it: ``mlscale/server:0.1.0`` or its overlay."""
    try:
        data = yaml.safe_load(base_kustomization.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"Cannot read {base_kustomization}: {exc}") from None
    for image in data.get("images") or []:
        if isinstance(image, dict) and image.get("name") == SERVER_IMAGE:
            name = image.get("newName") or SERVER_IMAGE
            return f"{name}:{image['newTag']}" if image.get("newTag") else str(name)
    return SERVER_IMAGE


def serving_runtime(*, image: str, graceful_timeout_s: int = 25) -> dict[str, Any]:
    """The ServingRuntime: ``mlscale serve`` on the model KServe downloaded, on port 8080."""
    probe = {"port": PORT}
    container = {
        "name": KSERVE_CONTAINER,
        "image": image,
        "command": ["mlscale", "serve"],
        "args": [
            "-m",
            MODEL_DIR,
            "--model-name",
            "{{.Name}}",
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
            "--graceful-timeout",
            str(graceful_timeout_s),
        ],
        # The root file system is read-only: downloads, worker metrics and caches go to /tmp.
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "TMPDIR", "value": "/tmp"}],
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        # The server listens once the model is loaded: up to 5 minutes.
        "startupProbe": {
            "httpGet": {"path": "/v2/health/live", **probe},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", **probe},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", **probe},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": RUNTIME},
        "spec": {
            # Added to the pod: Prometheus scrapes the server's own metrics, the in-flight
            # gauge among them.
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(PORT),
                "prometheus.io/path": "/metrics",
            },
            # Not auto-selected: an InferenceService of format mlflow gets mlscale only when
            # it names the runtime, and KServe's own mlflow runtime stays the default.
            "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": False}],
            "protocolVersions": ["v2"],
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}],
        },
    }


def inference_service(
    sizing: DeploySizing,
    *,
    name: str,
    storage_uri: str,
    namespace: str = NAMESPACE,
    inflight_target: float | None = None,
    prometheus_url: str | None = None,
) -> dict[str, Any]:
    """The InferenceService sized from the plan; ``inflight_target`` scales it with KEDA."""
    cpu, memory = f"{sizing.cpu_millicores}m", f"{sizing.memory_mib}Mi"
    predictor: dict[str, Any] = {
        # KServe has no replica count: it starts at minReplicas and the HPA moves it.
        "minReplicas": sizing.hpa_min_replicas,
        "maxReplicas": sizing.hpa_max_replicas,
    }
    annotations = {"serving.kserve.io/deploymentMode": DEPLOYMENT_MODE}
    if inflight_target is None:
        annotations["serving.kserve.io/autoscalerClass"] = "hpa"
        predictor.update(scaleMetric="cpu", scaleTarget=sizing.hpa_target_cpu_utilization)
    else:
        if not prometheus_url:
            raise ConfigurationError("Scaling on requests in flight needs the Prometheus URL KEDA queries.")
        annotations["serving.kserve.io/autoscalerClass"] = "keda"
        predictor["autoScaling"] = {
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "backend": "prometheus",
                            "serverAddress": prometheus_url,
                            # raw deployment mode names the Deployment <name>-predictor
                            "query": pods_query(namespace, f"{name}-predictor"),
                        },
                        "target": {"type": "Value", "value": threshold_text(inflight_target)},
                    },
                }
            ]
        }
    predictor["model"] = {
        "modelFormat": {"name": MODEL_FORMAT},
        "runtime": RUNTIME,
        "storageUri": storage_uri,
        "protocolVersion": "v2",
        # Appended to the runtime's args.
        "args": ["-w", str(sizing.workers_per_pod)],
        # Request = limit, as in the kustomize overlay: the HPA's utilisation is relative
        # to the request, and a pod never uses CPU the scheduler did not reserve.
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
    }
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def render_kserve(
    plan: Plan,
    out_dir: str,
    *,
    name: str = DEFAULT_NAME,
    storage_uri: str = DEFAULT_STORAGE_URI,
    inflight_target: float | None = None,
    prometheus_url: str | None = None,
) -> str:
    """Write the ServingRuntime and the InferenceService sized from ``plan`` as a kustomize
    folder (``kubectl apply -k``, ``mlscale k8s validate``); returns its path."""
    sizing = sizing_from_plan(plan)
    out = prepare_out_dir(out_dir)
    runtime = serving_runtime(image=server_image(deploy_root() / "base" / "kustomization.yaml"))
    isvc = inference_service(
        sizing,
        name=name,
        storage_uri=storage_uri,
        inflight_target=inflight_target,
        prometheus_url=prometheus_url,
    )
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": ["namespace.yaml", "servingruntime.yaml", "inferenceservice.yaml"],
    }
    if inflight_target is None:
        scaling = (
            f"KServe's HPA: {sizing.hpa_min_replicas} to {sizing.hpa_max_replicas} pods, adding pods above "
            f"{sizing.hpa_target_cpu_utilization} % of the CPU request."
        )
    else:
        scaling = (
            f"KServe's KEDA autoscaler: {sizing.hpa_min_replicas} to {sizing.hpa_max_replicas} pods, "
            f"{threshold_text(inflight_target)} requests in flight per pod\n(the plan's pod at 80 % of its "
            "capacity at the SLA, as `mlscale simulate --policy inflight` runs it)."
        )
    files = {
        "kustomization.yaml": document(
            kustomization,
            [
                MARKER[2:] + f" --target kserve from {PLAN_FILE}; render again rather than edit.",
                sizing.sentence or "Sized from the plan.",
                "Needs KServe (raw deployment mode)"
                + (" and KEDA with Prometheus." if inflight_target is not None else "."),
                "Apply: kubectl apply -k .   Check: mlscale k8s validate .",
            ],
        ),
        "namespace.yaml": document(
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            ["The namespace of the runtime and the InferenceService (a ServingRuntime is namespaced)."],
        ),
        "servingruntime.yaml": document(
            runtime,
            [
                f"`mlscale serve` as a KServe runtime for models of format {MODEL_FORMAT}, chosen by name",
                f"(runtime: {RUNTIME}); KServe downloads storageUri to {MODEL_DIR} and fills in {{{{.Name}}}}.",
            ],
        ),
        "inferenceservice.yaml": document(
            isvc,
            [
                f"The model server at the plan's sizes: pods of {sizing.cpu_millicores}m CPU and "
                f"{sizing.memory_mib}Mi,",
                f"{sizing.workers_per_pod} worker process(es) each; {sizing.pods} pods at the target load.",
                *scaling.split("\n"),
                "storageUri: the folder that holds the model's MLmodel file (gs://, s3://, pvc://...).",
            ],
        ),
    }
    write_files(out, files, plan)
    return str(out)
