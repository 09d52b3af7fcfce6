"""The Kubernetes manifests: they render, fit the schemas, meet the policies, follow the plan.

No cluster is reachable from the tests, so the manifests are proven the way
`mlscale k8s validate` proves them: `kubectl kustomize` renders them, every
object validates against the Kubernetes OpenAPI schemas (unknown fields are
errors), and the policies hold. Broken copies show that each layer can fail.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from mlscale.cli.main import main
from mlscale.k8s import LOCUSTFILE_IN_IMAGE
from mlscale.k8s.kubectl import find_kubectl
from mlscale.k8s.objects import Problem, cpu_millicores, memory_mib
from mlscale.k8s.placeholders import find_placeholders
from mlscale.k8s.plan import (
    PlanError,
    locust_workers_for,
    memory_for_workers,
    read_plan,
    sizing_from_plan,
)
from mlscale.k8s.policy import check_exposure, check_secrets_not_plain, check_variable_references
from mlscale.k8s.render import render_plan, set_option, sizing_for_overlay
from mlscale.k8s.validate import validate_dir
from mlscale.loadtest import CONFIG_ENV
from mlscale.loadtest.runner import locustfile_path
from mlscale.processes import free_port
from mlscale.schemas.plan import Plan, PlanFileError, parse_plan
from tests.loadtest.test_runs import fake_server
from tests.support.models import small_frame
from tests.support.server_process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = ROOT / "docker"

_without_kubectl = pytest.mark.skipif(
    find_kubectl() is None, reason="kubectl (which bundles kustomize) is not installed"
)


def needs_kubectl(test):
    """For tests that run kubectl: skipped without it, and slow (a process each)."""
    return pytest.mark.slow(_without_kubectl(test))


needs_schemas = pytest.mark.skipif(
    __import__("importlib").util.find_spec("kubernetes_validate") is None,
    reason="kubernetes-validate (the OpenAPI schemas) is not installed",
)


def renders(test):
    """For tests that render with kubectl and validate against the schemas."""
    return needs_kubectl(needs_schemas(test))


# A plan in the shape `mlscale plan` writes (trimmed to what render reads and
# a little more): 1,200 users with 1 s of think time, 3 pods of half a CPU. As JSON
# (PLAN_DATA, for the tests that damage it) and as the typed plan the code takes.
PLAN_DATA = {
    "sla": {"expr": "p95<1s", "percentile": "p95", "limit_ms": 1000.0},
    "load_model": {"kind": "users", "think_time_s": 1.0},
    "quick": True,
    "measurements": [
        {
            "cpu": 0.5,
            "workers": 2,
            "max_users": 512,
            "max_load": 512,
            "max_rps": 3351.5,
            "p95_ms_at_max": 164.8,
            "stopped_by": "converged",
            "steps": [],
        }
    ],
    "model": {"holdout_error": None, "law": "usl", "lambda": 2443.1, "sigma": 0.03, "kappa": 0.001},
    "sizing": {
        "target": 1200.0,
        "target_kind": "users",
        "target_users": 1200.0,
        "capacity_per_pod": 512,
        "cpu_per_pod": 0.5,
        "workers_per_pod": 2,
        "pods": 3,
        "cores": 1.5,
        "node_type": "e2-standard-4",
        "pods_per_node": 7,
        "nodes": 1,
        "hpa_min_replicas": 2,
        "hpa_max_replicas": 5,
        "hpa_target_cpu_utilization": 70,
        "monthly_cost": None,
        "sentence": "1200 concurrent users at p95<1s need 1.5 cores",
        "hpa": {"min_replicas": 2, "max_replicas": 5, "target_cpu_utilization": 70},
    },
}


PLAN = parse_plan(PLAN_DATA)


def rps_plan(**sizing) -> Plan:
    plan = copy.deepcopy(PLAN_DATA)
    plan["load_model"] = {"kind": "rps"}
    plan["sizing"].update(target_kind="rps", target_rps=1800.0, **sizing)
    del plan["sizing"]["target_users"]
    return parse_plan(plan)


def kustomize(directory: Path) -> list[dict]:
    done = subprocess.run(
        [find_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(objects: list[dict], kind: str, name: str) -> dict:
    return find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- the committed manifests -----------------------------------------------------------


@pytest.mark.parametrize("folder", ["base", "overlays/local", "overlays/gke"])
@renders
def test_every_overlay_renders_and_validates(folder):
    report = validate_dir(DEPLOY / folder)
    assert report.ok, report.text()
    assert len(report.objects) >= 19
    assert "ReplicationController" not in " ".join(report.objects)
    assert report.kubernetes_versions[0] == "1.30"
    # The gke overlay is a template: its placeholders are warnings, listed.
    expected = GKE_PLACEHOLDERS if folder == "overlays/gke" else set()
    assert set(report.placeholders) == expected
    assert all(f"warning: {name} in " in report.text() for name in expected)


GKE_PLACEHOLDERS = {
    "YOUR_PROJECT",
    "YOUR_REGION",
    "YOUR_BUCKET",
    "YOUR_MODEL_CLIENTS_CIDR",
    "YOUR_TRACKING_CLIENTS_CIDR",
}


@needs_kubectl
def test_the_gke_overlay_exposes_only_named_ranges():
    objects = kustomize(DEPLOY / "overlays" / "gke")
    balancers = {
        o["metadata"]["name"]: o["spec"]
        for o in objects
        if o["kind"] == "Service" and o["spec"].get("type") == "LoadBalancer"
    }
    # The Locust UI has no login and /swarm takes any host: not on a load balancer.
    assert set(balancers) == {"mlscale-server", "mlflow-tracking"}
    assert find(objects, "Service", "locust-master")["spec"].get("type", "ClusterIP") == "ClusterIP"
    for name, spec in balancers.items():
        # The client's address reaches the pod, so the NetworkPolicy can name the same range.
        assert spec["externalTrafficPolicy"] == "Local", name
        assert spec["loadBalancerSourceRanges"] == [
            f"YOUR_{'MODEL' if name == 'mlscale-server' else 'TRACKING'}_CLIENTS_CIDR"
        ]
    blocks = {
        o["metadata"]["name"]: [
            peer["ipBlock"]
            for rule in o["spec"].get("ingress", [])
            for peer in rule["from"]
            if "ipBlock" in peer
        ]
        for o in objects
        if o["kind"] == "NetworkPolicy"
    }
    assert blocks["mlscale-server-from-load-balancer"] == [{"cidr": "YOUR_MODEL_CLIENTS_CIDR"}]
    assert blocks["mlflow-tracking-from-vpc"] == [{"cidr": "YOUR_TRACKING_CLIENTS_CIDR"}]
    assert not any(b for name, b in blocks.items() if "locust" in name)
    assert check_exposure(objects) == []
    # MLflow's Host check: the private 172.16/12, not all of 172.*.
    tracking = container(objects, "Deployment", "mlflow-tracking")
    hosts = next(v["value"] for v in tracking["env"] if v["name"] == "MLFLOW_SERVER_ALLOWED_HOSTS").split(",")
    assert "172.*" not in hosts and [h for h in hosts if h.startswith("172.")] == [
        f"172.{i}.*" for i in range(16, 32)
    ]


@renders
def test_validate_for_apply_fails_until_the_readme_fills_the_placeholders(tmp_path):
    """deploy/README.md's step 4, run on a copy: placeholders are errors until it has."""
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("*.env"))
    gke = tmp_path / "deploy" / "overlays" / "gke"
    runner = CliRunner()
    result = runner.invoke(main, ["k8s", "validate", "--for-apply", "--kubernetes-version", "1.33", str(gke)])
    assert result.exit_code == 1
    assert "YOUR_MODEL_CLIENTS_CIDR is not filled in" in result.output and "[placeholder]" in result.output
    assert "Traceback" not in result.output

    readme = (DEPLOY / "README.md").read_text()
    step = re.search(r"\*\*4\. Fill in.*?```bash\n(.*?)```", readme, re.S).group(1)
    sed = step.split("mlscale k8s validate")[0]
    assert "--for-apply" in step
    values = dict(
        PROJECT="my-project",
        REGION="europe-west1",
        BUCKET="my-project-artifacts",
        MODEL_CLIENTS="203.0.113.0/24",
        TRACKING_CLIENTS="10.10.0.0/20",
    )
    subprocess.run(["bash", "-euc", sed], cwd=tmp_path, env={**os.environ, **values}, check=True, timeout=30)
    assert not find_placeholders(kustomize(gke))
    result = runner.invoke(main, ["k8s", "validate", "--for-apply", "--kubernetes-version", "1.33", str(gke)])
    assert result.exit_code == 0, result.output
    assert "placeholders: none left to fill" in result.output


@needs_kubectl
def test_the_base_is_the_reference_system():
    objects = kustomize(DEPLOY / "base")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {
        ("Deployment", "mlflow-tracking"),
        ("Service", "mlflow-tracking"),
        ("StatefulSet", "mlflow-postgres"),
        ("Deployment", "mlscale-server"),
        ("Service", "mlscale-server"),
        ("HorizontalPodAutoscaler", "mlscale-server"),
        ("PodDisruptionBudget", "mlscale-server"),
        ("Deployment", "locust-master"),
        ("Service", "locust-master"),
        ("Deployment", "locust-worker"),
    } <= kinds
    assert all(o["metadata"].get("namespace") == "mlscale" for o in objects if o["kind"] != "Namespace")

    server = container(objects, "Deployment", "mlscale-server")
    assert server["command"] == ["mlscale", "serve"]
    assert option(server["args"], "-m") == "models:/wine-quality/1"
    assert option(server["args"], "-h") == "0.0.0.0" and option(server["args"], "-p") == "8080"
    env = {v["name"]: v.get("value") for v in server["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow-tracking:5000"
    assert server["readinessProbe"]["httpGet"]["path"] == "/ping"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"
    assert server["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in server["volumeMounts"]} == {"/tmp"}
    pod = find(objects, "Deployment", "mlscale-server")["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == "/metrics"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "8080"

    hpa = find(objects, "HorizontalPodAutoscaler", "mlscale-server")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 12)
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"]

    tracking = container(objects, "Deployment", "mlflow-tracking")
    assert "--serve-artifacts" in tracking["args"]
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in tracking["args"]
    master = find(objects, "Service", "locust-master")
    assert {p["port"] for p in master["spec"]["ports"]} == {8089, 5557}


@needs_kubectl
def test_locust_runs_the_shipped_locustfile_as_master_and_workers():
    # The image's path is the package's own file, inside the image's venv.
    assert LOCUSTFILE_IN_IMAGE.endswith("/site-packages/mlscale/loadtest/locustfile.py")
    assert locustfile_path().endswith("mlscale/loadtest/locustfile.py")
    objects = kustomize(DEPLOY / "base")
    for name, role in (("locust-master", "--master"), ("locust-worker", "--worker")):
        locust = container(objects, "Deployment", name)
        assert locust["command"] == ["locust"]
        assert locust["args"][:2] == ["-f", LOCUSTFILE_IN_IMAGE] and role in locust["args"]
        env = {v["name"]: v.get("value") for v in locust["env"]}
        assert env["TARGET_HOST"] == "http://mlscale-server:8080"
        assert env[CONFIG_ENV] == ""  # the reference scenario's user, no file needed
    worker = container(objects, "Deployment", "locust-worker")
    assert option_value(worker["args"], "--master-host") == "locust-master"


def option_value(args: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"{name}="))


@needs_kubectl
def test_no_credential_is_committed():
    """No Secret manifest, no literal in a secret generator, no password in an example."""
    for path in DEPLOY.rglob("*.y*ml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            assert doc.get("kind") != "Secret", path
            for generator in doc.get("secretGenerator") or []:
                assert "literals" not in generator, path
    for example in DEPLOY.rglob("*.env.example"):
        values = dict(
            line.split("=", 1)
            for line in example.read_text().splitlines()
            if line and not line.startswith("#")
        )
        assert values.get("password") == "", example
    assert "*.env" in (DEPLOY / ".gitignore").read_text()
    for folder in ("base", "overlays/local", "overlays/gke"):
        assert check_secrets_not_plain(kustomize(DEPLOY / folder)) == []


@needs_kubectl
def test_the_components_render_a_generated_secret_and_s3_artifacts(tmp_path):
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    component = tmp_path / "deploy" / "components" / "postgres-secret"
    (component / "postgres.env").write_text("username=mlflow\npassword=not-a-real-one\n")
    overlay = tmp_path / "deploy" / "overlays" / "mine"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../../base]\n"
        "components: [../../components/postgres-secret, ../../components/s3-artifacts]\n"
    )
    objects = kustomize(overlay)
    secret = next(o for o in objects if o["kind"] == "Secret")
    assert secret["metadata"]["name"].startswith("mlflow-postgres-")  # hashed: rolls the pods
    tracking = container(objects, "Deployment", "mlflow-tracking")
    refs = {v["valueFrom"]["secretKeyRef"]["name"] for v in tracking["env"] if "valueFrom" in v}
    assert secret["metadata"]["name"] in refs and "mlflow-s3" in refs
    env = {v["name"]: v.get("value") for v in tracking["env"]}
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert not any(o["kind"] == "PersistentVolumeClaim" for o in objects)
    assert check_variable_references(objects) == []
    # Generated from an untracked file (a hashed name): not a Secret written in YAML.
    assert check_secrets_not_plain(objects) == []


# --- rendering from a plan -------------------------------------------------------------


@pytest.mark.parametrize("overlay", [None, "local", "gke"])
@renders
def test_a_rendered_overlay_has_the_plans_numbers_and_validates(tmp_path, overlay):
    out = render_plan(PLAN, str(tmp_path / "rendered"), overlay=overlay)
    report = validate_dir(out)
    assert report.ok, report.text()
    assert report.against_plan

    objects = kustomize(Path(out))
    server = find(objects, "Deployment", "mlscale-server")
    assert server["spec"]["replicas"] == 3
    main_container = server["spec"]["template"]["spec"]["containers"][0]
    resources = main_container["resources"]
    # No memory in the plan: 256Mi + 300Mi for each of its 2 workers, not a flat 512Mi.
    assert resources["requests"] == resources["limits"] == {"cpu": "500m", "memory": "856Mi"}
    assert option(main_container["args"], "-w") == "2"
    assert option(main_container["args"], "-m") == "models:/wine-quality/1"
    hpa = find(objects, "HorizontalPodAutoscaler", "mlscale-server")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    assert hpa["behavior"]["scaleDown"]  # the base's behaviour survives the patch
    # 1,200 users thinking 1 s: 1,200 requests/s, one worker of one CPU per 500;
    # the local overlay's workers have half a CPU: 250 each.
    worker = find(objects, "Deployment", "locust-worker")
    cpu = "500m" if overlay == "local" else "1000m"
    assert worker["spec"]["replicas"] == (5 if overlay == "local" else 3)
    resources = worker["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"] == cpu
    assert resources["requests"]["memory"]  # the overlay's memory survives the patch
    assert json.loads((Path(out) / "plan.json").read_text()) == {"schema_version": 1, **PLAN_DATA}


@pytest.mark.parametrize("folder", ["rendered"])
@renders
def test_a_rendered_folder_renders_wherever_it_is_moved(tmp_path, folder):
    out = render_plan(
        rps_plan(memory_per_pod_mib=1000),
        str(tmp_path / folder),
        overlay="gke",
        model_uri="models:/wine-quality@champion",
    )
    moved = shutil.move(out, tmp_path / "elsewhere" / "deep")
    objects = kustomize(Path(moved))
    server = container(objects, "Deployment", "mlscale-server")
    assert server["resources"]["limits"] == {"cpu": "500m", "memory": "1000Mi"}
    assert option(server["args"], "-m") == "models:/wine-quality@champion"
    assert server["args"].count("-m") == 1 and server["args"].count("-w") == 1
    # 1,800 requests/s: four workers of 500.
    assert find(objects, "Deployment", "locust-worker")["spec"]["replicas"] == 4
    assert find(objects, "Service", "mlscale-server")["spec"]["type"] == "LoadBalancer"


def test_rendering_again_replaces_an_earlier_render_but_nothing_else(tmp_path):
    out = tmp_path / "out"
    render_plan(PLAN, str(out))
    render_plan(rps_plan(), str(out), overlay="local")
    assert not (out / "overlays" / "gke").exists() and (out / "overlays" / "local").is_dir()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "kustomization.yaml").write_text("resources: [x.yaml]\n")
    with pytest.raises(Exception, match="not written by `mlscale k8s render`"):
        render_plan(PLAN, str(mine))
    assert (mine / "kustomization.yaml").read_text() == "resources: [x.yaml]\n"


def test_the_locust_worker_rule():
    assert [locust_workers_for(rps) for rps in (0, 1, 500, 501, 1200, 12_000)] == [1, 1, 1, 2, 3, 24]
    # Scaled by each worker's CPU; more than one core counts as one (one process).
    assert [locust_workers_for(1200, cpu) for cpu in (0.5, 0.25, 1, 2)] == [5, 10, 3, 3]
    assert [sizing_for_overlay(PLAN, o).locust_workers for o in (None, "local", "gke")] == [3, 5, 3]
    assert sizing_for_overlay(PLAN, "local").locust_worker_cpu == 0.5
    # Users count as one request per think time; with no think time, as the pods' capacity.
    plan = copy.deepcopy(PLAN_DATA)
    plan["load_model"]["think_time_s"] = 2.0
    assert sizing_from_plan(parse_plan(plan)).locust_workers == 2  # 600 requests/s
    plan["load_model"]["think_time_s"] = 0
    assert sizing_from_plan(parse_plan(plan)).target_rps == pytest.approx(3 * 3351.5)


def test_set_option_keeps_the_place_of_the_option():
    args = ["-m", "m", "-w", "1", "--graceful-timeout", "25"]
    assert set_option(args, ("-w", "--workers"), "4") == ["-m", "m", "-w", "4", "--graceful-timeout", "25"]
    assert set_option(["--workers=2", "-w", "3"], ("-w", "--workers"), "4") == ["--workers=4"]
    assert set_option(["-m", "m"], ("-w", "--workers"), "4") == ["-m", "m", "-w", "4"]


def test_quantities():
    assert [cpu_millicores(q) for q in ("500m", "0.5", 1, "2", None, "x")] == [
        500,
        500,
        1000,
        2000,
        None,
        None,
    ]
    assert [memory_mib(q) for q in ("512Mi", "1Gi", "1G", str(2**20), None)] == [512, 1024, 954, 1, None]


# --- bad plans: one clear line each --------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.update(sizing=None), "no sizing: no pod size met the SLA"),
        (lambda p: p.pop("sizing"), "no 'sizing' block"),
        # Types are the schema's to check: the message names the field.
        (lambda p: p["sizing"].pop("pods"), "sizing.pods: Field required"),
        (
            lambda p: p["sizing"].update(cpu_per_pod="half"),
            "sizing.cpu_per_pod: Input should be a valid number",
        ),
        (
            lambda p: p["sizing"].update(workers_per_pod=True),
            "sizing.workers_per_pod: Input should be a valid integer",
        ),
        (lambda p: p["sizing"].update(pods=2.5), "sizing.pods: Input should be a valid integer"),
        (lambda p: p["sizing"].update(pods=9), "outside its HPA bounds 2-5"),
        (lambda p: p["sizing"]["hpa"].update(min_replicas=6), "minimum (6) is above its maximum"),
        (lambda p: p["sizing"]["hpa"].update(target_cpu_utilization=150), "between 1 and 100"),
        (
            lambda p: p["sizing"].update(target_kind="qps"),
            "sizing.target_kind: Input should be 'users' or 'rps'",
        ),
    ],
)
def test_a_bad_plan_is_a_clear_error(change, message):
    plan = copy.deepcopy(PLAN_DATA)
    change(plan)
    # Every problem is a PlanFileError (PlanError is one): a ConfigurationError, one line.
    with pytest.raises(PlanFileError, match=re.escape(message)):
        sizing_from_plan(parse_plan(plan))


def test_memory_defaults_when_the_plan_does_not_size_it():
    assert "memory_per_pod_mib" not in PLAN_DATA["sizing"]
    # From the workers (about 280 MB each, measured), never a flat 512Mi for -w 2.
    assert sizing_from_plan(PLAN).memory_mib == 856 == memory_for_workers(2)
    assert [memory_for_workers(w) for w in (1, 4)] == [556, 1456]
    # The key `mlscale plan` writes (Sizing.to_dict) wins when it holds a number.
    for value, mib in ((700.5, 701), (None, 856)):
        plan = copy.deepcopy(PLAN_DATA)
        plan["sizing"]["memory_per_pod_mib"] = value
        assert sizing_from_plan(parse_plan(plan)).memory_mib == mib


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No plan at"),
        ("{not json", "is not valid JSON (line 1)"),
        ("[1, 2]", "is not a plan"),
    ],
)
def test_render_reports_a_missing_or_invalid_plan_in_one_line(tmp_path, content, message):
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PlanError, match=re.escape(message)):
        read_plan(str(path))
    result = CliRunner().invoke(main, ["k8s", "render", "--plan", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_read_plan_accepts_the_plan_folder(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(PLAN_DATA))
    assert read_plan(str(tmp_path)) == PLAN


# --- validate fails when it should -----------------------------------------------------


def _replace(path: str, value) -> list[dict]:
    return [{"op": "replace", "path": path, "value": value}]


_CONTAINER = "/spec/template/spec/containers/0"
BROKEN = [
    # (check that must fail, target kind, target name, JSON patch)
    ("schema", "Deployment", "mlscale-server", _replace(f"{_CONTAINER}/resource", {"cpu": 1})),
    ("schema", "HorizontalPodAutoscaler", "mlscale-server", _replace("/spec/maxReplicas", "12")),
    ("image-pinned", "Deployment", "mlflow-tracking", _replace(f"{_CONTAINER}/image", "mlflow:latest")),
    (
        "resources",
        "Deployment",
        "locust-worker",
        [{"op": "remove", "path": f"{_CONTAINER}/resources/limits"}],
    ),
    ("probes", "Deployment", "mlscale-server", [{"op": "remove", "path": f"{_CONTAINER}/readinessProbe"}]),
    (
        "non-root",
        "StatefulSet",
        "mlflow-postgres",
        _replace("/spec/template/spec/securityContext/runAsNonRoot", False),
    ),
    (
        "secrets",
        "StatefulSet",
        "mlflow-postgres",
        _replace(f"{_CONTAINER}/env/1", {"name": "POSTGRES_PASSWORD", "value": "hunter2"}),
    ),
    ("hpa", "HorizontalPodAutoscaler", "mlscale-server", _replace("/spec/maxReplicas", 0)),
    ("hpa", "HorizontalPodAutoscaler", "mlscale-server", [{"op": "remove", "path": "/spec/behavior"}]),
    ("locust", "Deployment", "locust-worker", _replace(f"{_CONTAINER}/args/1", "/tmp/other.py")),
    (
        "service-selector",
        "Service",
        "mlflow-tracking",
        _replace("/spec/selector", {"app.kubernetes.io/name": "mlflow"}),
    ),
    (
        "graceful-shutdown",
        "Deployment",
        "mlscale-server",
        _replace("/spec/template/spec/terminationGracePeriodSeconds", 10),
    ),
    (
        "variables",
        "Deployment",
        "mlflow-tracking",
        [{"op": "add", "path": f"{_CONTAINER}/env/0", "value": {"name": "X", "value": "$(HOME)"}}],
    ),
    ("exposure", "Service", "mlscale-server", [{"op": "add", "path": "/spec/type", "value": "LoadBalancer"}]),
    (
        "exposure",
        "NetworkPolicy",
        "mlscale-server",
        [{"op": "add", "path": "/spec/ingress/0/from/-", "value": {"ipBlock": {"cidr": "10.0.0.0/8"}}}],
    ),
    (
        "secrets",
        "Namespace",
        "mlscale",
        [],
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "db"},
                "data": {"password": "aHVudGVyMg=="},
            }
        ],
    ),
    (
        "secrets",
        "Namespace",
        "mlscale",
        [],
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "app"},
                "data": {"app.ini": "[db]\npassword = hunter2\n"},
            }
        ],
    ),
]
BROKEN = [b if len(b) == 5 else (*b, []) for b in BROKEN]  # no extra objects


@pytest.fixture
def broken_overlay(tmp_path):
    """A copy of deploy/ with an overlay that applies one JSON patch to the base."""
    shutil.copytree(DEPLOY, tmp_path / "deploy", ignore=shutil.ignore_patterns("*.env"))
    overlay = tmp_path / "deploy" / "overlays" / "broken"
    overlay.mkdir()

    def write(kind: str, name: str, ops: list[dict], extra: list[dict] = ()) -> Path:
        """``ops`` on the base's ``kind``/``name``; ``extra`` objects added beside it."""
        kustomization = {
            "resources": ["../../base"],
            "patches": [{"target": {"kind": kind, "name": name}, "patch": json.dumps(ops)}] if ops else [],
        }
        if extra:
            (overlay / "extra.yaml").write_text(yaml.safe_dump_all(extra))
            kustomization["resources"].append("extra.yaml")
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return overlay

    return write


@pytest.mark.parametrize(
    "check, kind, name, ops, extra", BROKEN, ids=[f"{b[0]}-{i}" for i, b in enumerate(BROKEN)]
)
@renders
def test_validate_reports_a_broken_overlay(broken_overlay, check, kind, name, ops, extra):
    report = validate_dir(broken_overlay(kind, name, ops, extra))
    assert not report.ok
    assert check in {p.check for p in report.problems}, report.text()
    assert report.text().endswith("problem" if len(report.problems) == 1 else "problems")


@renders
def test_validate_reports_a_folder_that_does_not_render(broken_overlay):
    overlay = broken_overlay("Deployment", "no-such-thing", [])
    (overlay / "kustomization.yaml").write_text("resources: [../../base, missing.yaml]\n")
    result = CliRunner().invoke(main, ["k8s", "validate", str(overlay)])
    assert result.exit_code == 1
    assert "kubectl kustomize failed" in result.output and "missing.yaml" in result.output
    assert "[render]" in result.output and "Traceback" not in result.output


@renders
def test_validate_notices_an_edited_render(tmp_path):
    out = Path(render_plan(PLAN, str(tmp_path / "out")))
    patch = out / "server.yaml"
    patch.write_text(patch.read_text().replace("replicas: 3", "replicas: 4"))
    # Half-CPU Locust workers need twice as many: the count is checked for the CPU rendered.
    locust = out / "locust.yaml"
    locust.write_text(locust.read_text().replace("1000m", "500m"))
    result = CliRunner().invoke(main, ["k8s", "validate", str(out)])
    assert result.exit_code == 1, result.output
    assert "replicas is 4, the plan says 3 [plan]" in result.output
    assert "replicas (workers of 500m CPU) is 3, the plan says 5 [plan]" in result.output


@renders
def test_the_cli_renders_and_validates(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(PLAN_DATA))
    out = tmp_path / "k8s"
    runner = CliRunner()
    result = runner.invoke(
        main, ["k8s", "render", "--plan", str(tmp_path / "plan.json"), "--out", str(out), "--overlay", "gke"]
    )
    assert result.exit_code == 0, result.output
    assert "3 model pods of 500m CPU" in result.output and "3 Locust worker(s)" in result.output
    result = runner.invoke(main, ["k8s", "validate", str(out), "--kubernetes-version", "1.33"])
    assert result.exit_code == 0, result.output
    assert "Kubernetes 1.33" in result.output and result.output.strip().endswith("OK")
    result = runner.invoke(main, ["k8s", "validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "has no kustomization.yaml" in result.output
    for command in (["k8s"], ["k8s", "render"], ["k8s", "validate"]):
        assert runner.invoke(main, [*command, "--help"]).exit_code == 0


# --- policies as pure functions ---------------------------------------------------------


def test_variable_references_must_be_defined_before_use():
    def deployment(env: list[dict], args: list[str]) -> dict:
        return {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "env": env, "args": args}]}}},
        }

    good = deployment([{"name": "A", "value": "a"}, {"name": "B", "value": "x$(A)"}], ["$(B)"])
    assert check_variable_references([good]) == []
    late = deployment([{"name": "B", "value": "$(A)"}, {"name": "A", "value": "a"}], ["$$(C)"])
    assert [p.message for p in check_variable_references([late])] == [
        "B uses $(A), which is defined after it: it stays unexpanded"
    ]
    loose = deployment([{"name": "URL", "value": "postgresql://u:pw@db/x"}], ["$(NOPE)"])
    assert any("$(NOPE)" in p.message for p in check_variable_references([loose]))
    assert [p.check for p in check_secrets_not_plain([loose])] == ["secrets"]
    assert str(Problem("c", "w", "m")) == "w: m [c]"


def test_secrets_in_manifests_and_config_maps():
    def obj(kind: str, name: str, **fields) -> dict:
        return {"kind": kind, "metadata": {"name": name}, **fields}

    flagged = [
        obj("Secret", "db", data={"password": "aHVudGVyMg=="}),  # base64 is not encryption
        obj("Secret", "db", stringData={"password": "hunter2"}),
        obj("ConfigMap", "c", data={"API_TOKEN": "abc"}),
        obj("ConfigMap", "c", data={"tls.key": "-----BEGIN"}),
        obj("ConfigMap", "c", data={"app.yaml": 'db:\n  admin_password: "x"\n'}),
        obj("ConfigMap", "c", data={"url": "postgresql://u:pw@db/x"}),
    ]
    for case in flagged:
        problems = check_secrets_not_plain([case])
        assert [p.check for p in problems] == ["secrets"], case
    fine = [
        obj("Secret", "mlflow-postgres-9m8k2g6f4t", data={"password": "eA=="}),  # generated
        obj("Secret", "empty"),
        obj("ConfigMap", "c", data={"monkey": "banana", "token": "", "key_column": "id"}),
        obj("ConfigMap", "c", data={"app.ini": "# password = x\npassword = ${DB_PASSWORD}\n"}),
        obj("ConfigMap", "c", data={"run.py": 'password = os.environ["PASSWORD"]\n'}),  # code
    ]
    assert check_secrets_not_plain(fine) == []
    assert "only base64-encoded" in check_secrets_not_plain(flagged[:1])[0].message


def test_exposure_of_load_balancers_and_ip_blocks():
    def balancer(**spec) -> dict:
        return {"kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", **spec}}

    def policy(block: dict) -> dict:
        return {
            "kind": "NetworkPolicy",
            "metadata": {"name": "p"},
            "spec": {"ingress": [{"from": [{"ipBlock": block}]}]},
        }

    open_ = [
        balancer(),
        balancer(loadBalancerSourceRanges=["0.0.0.0/0"]),
        policy({"cidr": "10.0.0.0/8"}),
        policy({"cidr": "172.0.0.0/8"}),
        policy({"cidr": "0.0.0.0/0"}),
    ]
    assert [len(check_exposure([o])) for o in open_] == [1, 1, 1, 1, 1]
    assert "where the cluster's pods are" in check_exposure([open_[2]])[0].message
    narrow = [
        balancer(loadBalancerSourceRanges=["203.0.113.0/24"]),
        {"kind": "Service", "metadata": {"name": "c"}, "spec": {}},
        policy({"cidr": "10.10.0.0/20"}),
        policy({"cidr": "YOUR_MODEL_CLIENTS_CIDR"}),
        policy({"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}),
    ]
    assert check_exposure(narrow) == []


def test_placeholders_are_found_where_they_are():
    objects = [
        {
            "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {
                "containers": [
                    {
                        "image": "YOUR_REGION-docker.pkg.dev/YOUR_PROJECT/x:1",
                        "env": [{"value": "YOUR_X and YOUR_X"}],
                    }
                ]
            },
        },
        {"kind": "Service", "metadata": {"name": "YOURS_not"}, "spec": {"note": "your_project"}},
    ]
    assert find_placeholders(objects) == {
        "YOUR_PROJECT": ["Deployment/d spec.containers[0].image"],
        "YOUR_REGION": ["Deployment/d spec.containers[0].image"],
        "YOUR_X": ["Deployment/d spec.containers[0].env[0].value"],
    }


# --- the images -------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _base(instructions, image: str) -> str:
    """A FROM's image with ``${BASE_IMAGE}`` read from its ARG default (the pinned
    official base; a stand-in is only ever passed as a build argument)."""
    defaults = dict(args.split("=", 1) for op, args in instructions if op == "ARG" and "=" in args)
    return re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)


@pytest.mark.parametrize("name", ["server", "locust", "tracking"])
def test_the_dockerfiles_are_pinned_slim_and_non_root(name):
    instructions = dockerfile_instructions(DOCKER / f"{name}.Dockerfile")
    images = [_base(instructions, args.split()[0]) for op, args in instructions if op == "FROM"]
    assert images, "no FROM"
    for image in images:
        # A full version in the tag (python:3.11.7-slim-bookworm), or a digest; never latest.
        assert re.search(r":\d+\.\d+\.\d+[-\w.]*(@sha256:[0-9a-f]{64})?$", image), image
        assert "slim" in image
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final_stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert [op for op, _ in final_stage].index("USER") > max(
        i for i, (op, _) in enumerate(final_stage) if op in ("RUN", "COPY")
    )
    for op, args in instructions:
        assert not (op == "ADD" and re.search(r"https?://", args)), "ADD of a URL"
        if op == "RUN" and "pip install" in args:
            assert "-c constraints.txt" in args  # the versions the tests ran with
        if op in ("ENTRYPOINT", "CMD"):
            assert args.startswith("["), f"{op} in shell form: signals would not reach the process"
    # The uid the manifests run as.
    assert "--uid 10001" in " ".join(args for op, args in instructions if op == "RUN")


def test_the_locust_image_holds_the_locustfile_the_manifests_run():
    instructions = dockerfile_instructions(DOCKER / "locust.Dockerfile")
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert f"test -f {LOCUSTFILE_IN_IMAGE}" in runs
    entry = json.loads(next(args for op, args in instructions if op == "ENTRYPOINT"))
    assert entry == ["locust", "-f", LOCUSTFILE_IN_IMAGE]
    # The path names the image's Python; it must be the FROM line's.
    python = re.search(r"python(\d+\.\d+)/", LOCUSTFILE_IN_IMAGE).group(1)
    assert all(f"python:{python}." in _base(instructions, args) for op, args in instructions if op == "FROM")


def test_the_build_context_is_cut_down():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*")] == "*"  # everything out, then only what the images need
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert {"pyproject.toml", "constraints.txt", "mlscale"} <= allowed
    assert not any(a.startswith((".venv", "tests", ".git")) for a in allowed)
    for name in ("server", "locust", "tracking"):
        for op, args in dockerfile_instructions(DOCKER / f"{name}.Dockerfile"):
            if op == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert source in allowed, f"{name}.Dockerfile copies {source}, ignored"


# --- the locustfile as the manifests run it ---------------------------------------------


@pytest.mark.slow
@needs_kubectl
def test_the_manifests_locust_command_runs_a_distributed_test(tmp_path):
    """Master and worker as the manifests start them, on loopback, for 3 seconds."""

    objects = kustomize(DEPLOY / "base")

    def command(name: str, port: int, target: str) -> tuple[list[str], dict]:
        spec = container(objects, "Deployment", name)
        # The image's path and the in-cluster names, swapped for this machine's.
        args = [locustfile_path() if a == LOCUSTFILE_IN_IMAGE else a for a in spec["args"]]
        args = [re.sub(r"^--master-host=.*", "--master-host=127.0.0.1", a) for a in args]
        args = [
            re.sub(r"^--master-(bind-)?port=.*", lambda m: f"{m.group(0).split('=')[0]}={port}", a)
            for a in args
        ]
        env = {v["name"]: v.get("value", "") for v in spec["env"]}
        env.update(TARGET_HOST=target, HOME=os.environ.get("HOME", "/tmp"))
        return [sys.executable, "-m", *spec["command"], *args], {**os.environ, **env}

    port = free_port()
    with fake_server("fast") as url:
        worker_cmd, worker_env = command("locust-worker", port, url)
        master_cmd, master_env = command("locust-master", port, url)
        master_cmd += [
            "--master-bind-host=127.0.0.1",
            "--headless",
            "-u",
            "20",
            "-r",
            "20",
            "-t",
            "3s",
            "--expect-workers",
            "1",
            "--only-summary",
        ]
        worker = subprocess.Popen(
            worker_cmd, env=worker_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            started = time.monotonic()
            master = subprocess.run(
                master_cmd,
                check=False,
                env=master_env,
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
        finally:
            worker.terminate()
            worker.wait(15)

        answered = httpx.get(f"{url}/count").json()["count"]
    assert master.returncode == 0, master.stderr[-2000:]
    assert "Aggregated" in master.stdout + master.stderr
    # 20 users, one request a second each, for about 3 s.
    assert answered >= 20, (answered, time.monotonic() - started)


# --- the server image: serving dependencies only ---------------------------------------

# What the server image leaves out (docker/server-requirements.txt), made unimportable.
NOT_IN_SERVER_IMAGE = ("locust", "gevent", "plotly", "hdrh", "kubernetes_validate")


def _requirement_names(lines) -> set[str]:
    names = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[<>=;\[ ]", line, maxsplit=1)[0].lower())
    return names


def test_the_server_image_lists_pyprojects_dependencies_but_the_load_test_ones():
    declared = _requirement_names(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    serving = _requirement_names((DOCKER / "server-requirements.txt").read_text().splitlines())
    assert serving <= declared, serving - declared
    # uv builds model environments (serve --env-manager uv); the image serves with local.
    assert declared - serving == {"locust", "hdrhistogram", "plotly", "scipy", "pyyaml", "uv"}


@pytest.mark.slow
def test_the_server_serves_without_what_its_image_leaves_out(model_paths, tmp_path):
    """`mlscale serve` (and the child that resolves the model) with the load-test and
    report libraries unimportable, as in the server image: a model loads and answers."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Absent:\n"
        f"    names = {NOT_IN_SERVER_IMAGE!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ImportError(f'{name} is not in the server image')\n"
        "sys.meta_path.insert(0, _Absent())\n"
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    }
    with ServerProcess("-m", model_paths["xgboost"], env=env) as server:
        server.wait_ready()
        frame = small_frame(2)
        body = {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
        answer = httpx.post(f"{server.url}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 2
    # The blocker is in force in any Python started with this environment (as the
    # server and its model-resolving child are).
    probe = subprocess.run(
        [sys.executable, "-c", "import locust"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode != 0 and "is not in the server image" in probe.stderr, probe.stderr
