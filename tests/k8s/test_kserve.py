"""`mlscale k8s render --target kserve` and `--policy inflight`: the objects carry the
plan's numbers, validate against KServe's and KEDA's schemas, and a broken copy fails.

The plan here has measured steps (the test of the kustomize render uses one
without): the in-flight target is read off the pod fitted to them, and every
expected number below is computed from the plan, never written as a constant.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mlscale.k8s import SERVER
from mlscale.k8s.crds import custom_problems
from mlscale.k8s.inflight import INFLIGHT_METRIC, InflightScaling, adapter_values, threshold_text
from mlscale.k8s.kserve import (
    KSERVE_CONTAINER,
    MODEL_DIR,
    PORT,
    inference_service,
    render_kserve,
    serving_runtime,
)
from mlscale.k8s.objects import command_option, cpu_millicores, memory_mib
from mlscale.k8s.plan import sizing_from_plan
from mlscale.k8s.render import render_plan
from mlscale.k8s.validate import validate_dir
from mlscale.schemas.plan import Plan, parse_plan
from mlscale.simulate.inflight import plan_inflight_target
from mlscale.simulate.queue import PodModel
from tests.k8s.test_k8s import find, kustomize, renders
from tests.simulate.test_service import sizing_block, synthetic_plan

VERSION = "1.30"


def measured_plan() -> dict:
    """A users plan whose 1-CPU pod was measured step by step (a queue of 4 servers),
    sized at 3 pods of 2 workers with an HPA from 2 to 5 at 70 % CPU."""
    data = synthetic_plan(PodModel(servers=4, service_rate=500.0, delay_ms=2.0))
    data["sizing"] = sizing_block(
        1.0,
        2,
        384,
        pods=3,
        memory_per_pod_mib=900,
        hpa_min_replicas=2,
        hpa_max_replicas=5,
        hpa_target_cpu_utilization=70,
        hpa={"min_replicas": 2, "max_replicas": 5, "target_cpu_utilization": 70},
    )
    return data


PLAN: Plan = parse_plan(measured_plan())


def read(folder: str, name: str) -> dict:
    return yaml.safe_load((Path(folder) / name).read_text())


# --- KServe ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["cpu", "inflight"])
@renders
def test_a_kserve_render_has_the_plans_numbers_and_validates(tmp_path, policy):
    target = plan_inflight_target(PLAN) if policy == "inflight" else None
    out = render_kserve(PLAN, str(tmp_path / "kserve"), inflight_target=target, prometheus_url="http://prom")
    report = validate_dir(out)
    assert report.ok and report.against_plan, report.text()

    sizing = sizing_from_plan(PLAN)
    objects = kustomize(Path(out))
    runtime = find(objects, "ServingRuntime", "mlscale")
    isvc = find(objects, "InferenceService", "wine-quality")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (
        sizing.hpa_min_replicas,
        sizing.hpa_max_replicas,
    )
    for bound in ("requests", "limits"):
        assert cpu_millicores(model["resources"][bound]["cpu"]) == sizing.cpu_millicores
        assert memory_mib(model["resources"][bound]["memory"]) == sizing.memory_mib
    assert command_option(model["args"], "-w") == str(sizing.workers_per_pod)
    assert (model["modelFormat"]["name"], model["runtime"]) == ("mlflow", "mlscale")
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    if policy == "cpu":
        assert (predictor["scaleMetric"], predictor["scaleTarget"]) == (
            "cpu",
            sizing.hpa_target_cpu_utilization,
        )
        assert annotations["serving.kserve.io/autoscalerClass"] == "hpa"
    else:
        assert annotations["serving.kserve.io/autoscalerClass"] == "keda"
        (metric,) = predictor["autoScaling"]["metrics"]
        assert metric["external"]["target"]["value"] == threshold_text(target)
        assert metric["external"]["metric"]["serverAddress"] == "http://prom"
        assert INFLIGHT_METRIC in metric["external"]["metric"]["query"]
        assert "wine-quality-predictor-" in metric["external"]["metric"]["query"]

    # The runtime: mlscale serve on what KServe downloaded, named as KServe names it.
    assert runtime["spec"]["supportedModelFormats"] == [{"name": "mlflow", "autoSelect": False}]
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == KSERVE_CONTAINER
    args = container["args"]
    assert command_option(args, "-m") == MODEL_DIR
    assert command_option(args, "--model-name") == "{{.Name}}"
    assert command_option(args, "--port") == str(PORT)
    assert command_option(args, "--host") == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # The storageUri placeholder is a warning, and an error just before applying.
    assert "YOUR_BUCKET" in report.placeholders
    assert not validate_dir(out, for_apply=True).ok


@renders
def test_a_kserve_render_edited_away_from_its_plan_fails_validation(tmp_path):
    out = render_kserve(PLAN, str(tmp_path / "kserve"), storage_uri="gs://models/wine/1")
    path = Path(out) / "inferenceservice.yaml"
    isvc = read(out, "inferenceservice.yaml")
    isvc["spec"]["predictor"]["maxReplicas"] += 1
    path.write_text(yaml.safe_dump(isvc))
    report = validate_dir(out)
    assert [p.check for p in report.problems] == ["plan"]
    assert "maxReplicas" in report.problems[0].message


def test_kserve_objects_fit_kserve_types_and_broken_copies_do_not():
    sizing = sizing_from_plan(PLAN)
    runtime = serving_runtime(image="mlscale/server:0.1.0")
    isvc = inference_service(
        sizing, name="wine", storage_uri="gs://b/m", inflight_target=2.5, prometheus_url="http://p"
    )
    assert custom_problems(runtime, VERSION) == []
    assert custom_problems(isvc, VERSION) == []

    broken = copy.deepcopy(runtime)
    broken["spec"]["protocolVersions"].append("mlflow")  # KServe has no such protocol
    broken["spec"]["containers"][0]["imagePullPolicy "] = "Always"  # a typo
    broken["spec"]["supportedModelFormat"] = []  # singular: unknown
    messages = [p.message for p in custom_problems(broken, VERSION)]
    assert any("'mlflow' is not one of v1, v2, grpc-v1, grpc-v2" in m for m in messages)
    assert any("imagePullPolicy " in m for m in messages)
    assert any("spec.supportedModelFormat: unknown field" in m for m in messages)

    broken = copy.deepcopy(isvc)
    predictor = broken["spec"]["predictor"]
    predictor["minReplicas"] = "2"  # a string where an integer belongs
    predictor["scaleMetric"] = "inflight"  # not one of KServe's
    predictor["model"]["resource"] = {}  # a typo of resources, in the inline Container
    del predictor["model"]["modelFormat"]
    messages = [p.message for p in custom_problems(broken, VERSION)]
    assert any("spec.predictor.minReplicas: '2' is not an integer" in m for m in messages)
    assert any("scaleMetric: 'inflight' is not one of" in m for m in messages)
    assert any("'resource' was unexpected" in m for m in messages)
    assert any("spec.predictor.model.modelFormat: required" in m for m in messages)


# --- in flight, on the kustomize overlay ---------------------------------------------


@renders
def test_keda_scales_the_server_at_the_plans_inflight_target(tmp_path):
    target = plan_inflight_target(PLAN)
    inflight = InflightScaling(via="keda", target=target, prometheus_url="http://prom:9090")
    out = render_plan(PLAN, str(tmp_path / "keda"), inflight=inflight)
    report = validate_dir(out)
    assert report.ok and report.against_plan, report.text()

    sizing = sizing_from_plan(PLAN)
    objects = kustomize(Path(out))
    assert not [o for o in objects if o["kind"] == "HorizontalPodAutoscaler"]  # KEDA makes its own
    scaled = find(objects, "ScaledObject", SERVER)
    spec = scaled["spec"]
    assert scaled["metadata"]["namespace"] == find(objects, "Deployment", SERVER)["metadata"]["namespace"]
    assert spec["scaleTargetRef"]["name"] == SERVER
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        sizing.hpa_min_replicas,
        sizing.hpa_max_replicas,
    )
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["threshold"] == threshold_text(target)
    assert trigger["metadata"]["query"].startswith(f"sum({INFLIGHT_METRIC}{{")
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]  # the base's
    # The server is still the plan's.
    server = find(objects, "Deployment", SERVER)
    assert server["spec"]["replicas"] == sizing.pods


@renders
def test_prometheus_adapter_serves_the_metric_the_hpa_reads(tmp_path):
    target = plan_inflight_target(PLAN)
    inflight = InflightScaling(via="prometheus-adapter", target=target, prometheus_url="http://prom")
    out = render_plan(PLAN, str(tmp_path / "adapter"), inflight=inflight)
    report = validate_dir(out)
    assert report.ok and report.against_plan, report.text()

    sizing = sizing_from_plan(PLAN)
    objects = kustomize(Path(out))
    assert not [o for o in objects if o["kind"] == "ScaledObject"]
    hpa = find(objects, "HorizontalPodAutoscaler", SERVER)["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (sizing.hpa_min_replicas, sizing.hpa_max_replicas)
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": threshold_text(target)}
    assert hpa["behavior"]["scaleDown"]  # the base's behaviour survives the patch
    # The adapter's rule, beside the overlay, serves that very metric name per pod.
    (rule,) = read(out, "prometheus-adapter-values.yaml")["rules"]["custom"]
    assert rule == adapter_values()["rules"]["custom"][0]
    assert rule["name"]["as"] == metric["pods"]["metric"]["name"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}

    # Edited to another target, the folder no longer matches its plan.
    path = Path(out) / "hpa.yaml"
    path.write_text(
        path.read_text().replace(f"averageValue: '{threshold_text(target)}'", "averageValue: '99'")
    )
    problems = validate_dir(out).problems
    assert [p.check for p in problems] == ["plan"] and INFLIGHT_METRIC in problems[0].message


def test_a_scaled_object_fits_kedas_schema_and_broken_copies_do_not(tmp_path):
    from mlscale.k8s.inflight import scaled_object

    obj = scaled_object(
        name=SERVER,
        deployment=SERVER,
        namespace="mlscale",
        min_replicas=2,
        max_replicas=5,
        target=2.5,
        prometheus_url="http://prom",
        behavior={"scaleDown": {"stabilizationWindowSeconds": 300}},
    )
    assert custom_problems(obj, VERSION) == []
    broken = copy.deepcopy(obj)
    broken["spec"]["minReplicaCount"] = "2"
    assert "spec.minReplicaCount" in custom_problems(broken, VERSION)[0].message
    broken = copy.deepcopy(obj)
    broken["spec"]["triggers"][0]["metricTyp"] = "AverageValue"
    assert custom_problems(broken, VERSION)[0].message == "KEDA: spec.triggers[0].metricTyp: unknown field"
    broken = copy.deepcopy(obj)
    broken["spec"]["triggers"][0]["metadata"]["threshold"] = 2.5  # KEDA's metadata is strings
    assert "threshold" in custom_problems(broken, VERSION)[0].message


def test_the_metric_scaled_on_is_the_one_the_server_exports():
    from mlscale.serving.metrics import Metrics

    assert Metrics().in_flight._name == INFLIGHT_METRIC


def test_the_kserve_plan_check_names_what_differs():
    from mlscale.k8s.policy.against_plan import check_against_plan, scales_on_inflight

    sizing = sizing_from_plan(PLAN)
    runtime = serving_runtime(image="mlscale/server:0.1.0")
    isvc = inference_service(sizing, name="wine", storage_uri="gs://b/m")
    assert not scales_on_inflight([runtime, isvc])
    assert check_against_plan([runtime, isvc], sizing) == []
    isvc["spec"]["predictor"]["model"]["runtime"] = "kserve-mlserver"
    isvc["spec"]["predictor"]["model"]["args"] = ["-w", str(sizing.workers_per_pod + 1)]
    messages = [p.message for p in check_against_plan([runtime, isvc], sizing)]
    assert messages == [
        f"-w is '{sizing.workers_per_pod + 1}', the plan says '{sizing.workers_per_pod}'",
        "runtime 'kserve-mlserver' is not among the rendered ServingRuntimes",
    ]
    scaled = inference_service(
        sizing, name="wine", storage_uri="gs://b/m", inflight_target=1.5, prometheus_url="u"
    )
    assert scales_on_inflight([runtime, scaled])
    assert check_against_plan([runtime, scaled], sizing, 1.5) == []
    (problem,) = check_against_plan([runtime, scaled], sizing, 2.0)
    assert problem.message == f"{INFLIGHT_METRIC} threshold is ['1.5'], the plan says ['2']"
