"""The local overlay in containers: the translation for podman, and the stack for real.

The pure parts (what each kind of object becomes, $(VAR) expansion, the secrets,
probes, podman's stats) are tables of inputs and outputs. One end-to-end test
brings the stack up under podman, registers the wine model in its tracking
server, serves it, load-tests it from the Locust containers, restarts the
tracking server and Postgres, takes the stack down with its data kept and up
again, and finally down with nothing left behind.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from mlscale.containers.expand import SecretPart, expand_parts, fill
from mlscale.containers.probes import Probe, parse_probe_spec, probe_command, probe_spec
from mlscale.containers.stack import default_source, generated_value, render, secret_content, state
from mlscale.containers.stack_loadtest import RESULTS_DIR, locust_pods, pods_behind
from mlscale.containers.stats import busiest_share, cores_used, go_duration_s, parse_stats, size_bytes
from mlscale.containers.translate import (
    CONFIGMAPS_LABEL,
    PROBE_ANNOTATION,
    STACK_LABEL,
    TIER_LABEL,
    Publish,
    StackSettings,
    image_repository,
    start_tiers,
    translate,
)
from mlscale.errors import ConfigurationError
from mlscale.examples.wine import FEATURES
from mlscale.k8s.kubectl import find_kubectl
from mlscale.k8s.render import render_plan
from mlscale.k8s.validate import validate_dir
from mlscale.loadtest import shapes
from mlscale.loadtest.runner import LoadTestSettings, locust_config, settings_from_config
from mlscale.loadtest.sla import parse_sla
from tests.support.containers import engine_or_skip

ROOT = Path(__file__).resolve().parents[2]
_without_kubectl = pytest.mark.skipif(
    find_kubectl() is None,
    reason="kubectl (which bundles kustomize) is not installed: the "
    "stack renders the overlay with `kubectl kustomize`",
)


def needs_kubectl(test):
    """For tests that run kubectl: skipped without it, and slow (a process each)."""
    return pytest.mark.slow(_without_kubectl(test))


IMAGES = {
    "mlscale/server": "localhost/mlscale/server:0.1.0",
    "mlscale/tracking": "localhost/mlscale/tracking:0.1.0",
    "mlscale/locust": "localhost/mlscale/locust:0.1.0",
    "postgres": "localhost/mlscale/postgres:0.1.0",
}
PUBLISH = (
    Publish("mlscale-server", "http", 18080, "model-server"),
    Publish("mlflow-tracking", "http", 15000, "tracking-ui"),
    Publish("locust-master", "web", 18089, "locust-ui"),
)


# --- the translation of the local overlay ----------------------------------------------


@pytest.fixture(scope="module")
def local_plan():
    if find_kubectl() is None:
        pytest.skip("kubectl (which bundles kustomize) is not installed")
    objects = render(default_source())
    return objects, translate(objects, StackSettings("st", IMAGES, PUBLISH))


def _pod_doc(pod):
    return next(d for d in pod.documents if d["kind"] == "Pod")


def _containers(pod):
    return _pod_doc(pod)["spec"]["containers"]


@needs_kubectl
def test_each_workload_becomes_pods_named_for_the_stack(local_plan):
    _, plan = local_plan
    assert sorted(p.name for p in plan.pods) == [
        "st-locust-master",
        "st-locust-worker-0",
        "st-locust-worker-1",
        "st-mlflow-postgres-0",
        "st-mlflow-tracking",
        "st-mlscale-server",
    ]
    workloads = {p.name: p.workload for p in plan.pods}
    assert workloads["st-mlflow-postgres-0"] == "StatefulSet/mlflow-postgres"
    assert workloads["st-locust-worker-1"] == "Deployment/locust-worker"
    # Services are DNS names of the pods they select.
    aliases = {p.name: p.aliases for p in plan.pods}
    assert aliases["st-mlflow-postgres-0"] == ("mlflow-postgres",)
    assert aliases["st-mlflow-tracking"] == ("mlflow-tracking",)
    assert aliases["st-mlscale-server"] == ("mlscale-server",)
    assert aliases["st-locust-master"] == ("locust-master",)
    assert aliases["st-locust-worker-0"] == ()
    for pod in plan.pods:
        labels = _pod_doc(pod)["metadata"]["labels"]
        assert labels[STACK_LABEL] == "st"
        assert _pod_doc(pod)["spec"]["restartPolicy"] == "Always"


@needs_kubectl
def test_what_podman_cannot_apply_is_reported_not_dropped_in_silence(local_plan):
    _, plan = local_plan
    kinds = [line.split("/")[0] for line in plan.not_applied]
    assert kinds.count("NetworkPolicy") == 5
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Namespace", "ServiceAccount"} <= set(kinds)


@needs_kubectl
def test_pods_start_after_the_services_they_connect_to(local_plan):
    _, plan = local_plan
    tiers = [[p.name for p in tier] for tier in plan.tiers()]
    assert tiers == [
        ["st-mlflow-postgres-0"],
        ["st-mlflow-tracking"],
        ["st-mlscale-server"],
        ["st-locust-master"],
        ["st-locust-worker-0", "st-locust-worker-1"],
    ]
    labels = {p.name: _pod_doc(p)["metadata"]["labels"][TIER_LABEL] for p in plan.pods}
    assert labels["st-mlflow-postgres-0"] == "0" and labels["st-locust-worker-1"] == "4"


@needs_kubectl
def test_only_the_three_ui_ports_are_published_and_only_on_loopback(local_plan):
    _, plan = local_plan
    published = {}
    for pod in plan.pods:
        for container in _containers(pod):
            for port in container.get("ports") or []:
                # podman 4 publishes any declared containerPort on 0.0.0.0: none is left
                # without a host port, and every host port is on 127.0.0.1.
                assert port["hostIP"] == "127.0.0.1" and port["hostPort"], (pod.name, port)
                published[pod.name] = (port["hostPort"], port["containerPort"])
    assert published == {
        "st-mlscale-server": (18080, 8080),
        "st-mlflow-tracking": (15000, 5000),
        "st-locust-master": (18089, 8089),
    }
    assert plan.pod("st-mlscale-server").published[0].url == "http://127.0.0.1:18080"


@needs_kubectl
def test_the_manifests_container_settings_are_kept(local_plan):
    objects, plan = local_plan
    server = _containers(plan.pod("st-mlscale-server"))[0]
    source = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "mlscale-server"
    )
    original = source["spec"]["template"]["spec"]["containers"][0]
    for key in ("command", "args", "resources", "securityContext", "volumeMounts"):
        assert server[key] == original[key], key
    assert server["image"] == IMAGES["mlscale/server"] and server["imagePullPolicy"] == "Never"
    # Probes are the stack's to poll; preStop.sleep is not podman's.
    assert not {"livenessProbe", "readinessProbe", "startupProbe", "lifecycle"} & set(server)
    probe = plan.pod("st-mlscale-server").containers[0].probe
    assert (probe.kind, probe.port, probe.path) == ("http", 8080, "/ping")
    assert probe.allowed_s == 5 * 60 + 60  # the startup probe's five minutes, and a margin
    assert plan.pod("st-mlscale-server").containers[0].cpu_limit == 0.5
    pod = _pod_doc(plan.pod("st-mlscale-server"))
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert pod["metadata"]["annotations"][PROBE_ANNOTATION + "server"] == "http:8080:/ping"
    postgres = plan.pod("st-mlflow-postgres-0")
    assert postgres.containers[0].probe.command == ("pg_isready", "-h", "127.0.0.1", "-p", "5432")
    assert _containers(postgres)[0]["image"] == IMAGES["postgres"]
    assert postgres.stop_timeout_s == 60


@needs_kubectl
def test_volumes_claims_are_kept_and_empty_dirs_are_each_pods_own(local_plan):
    _, plan = local_plan
    volumes = {v.name: v.persistent for pod in plan.pods for v in pod.volumes}
    assert volumes["st-data-mlflow-postgres-0"] is True  # the StatefulSet's claim template
    assert volumes["st-mlflow-artifacts"] is True  # the PersistentVolumeClaim
    scratch = sorted(name for name, persistent in volumes.items() if not persistent)
    assert "st-mlscale-server-tmp" in scratch and "st-locust-worker-1-tmp" in scratch
    assert "st-mlflow-postgres-0-run" in scratch
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in _pod_doc(plan.pod("st-mlflow-postgres-0"))["spec"]["volumes"]
    }
    assert claims == {
        "data": "st-data-mlflow-postgres-0",
        "run": "st-mlflow-postgres-0-run",
        "tmp": "st-mlflow-postgres-0-tmp",
    }


@needs_kubectl
def test_secret_variables_stay_in_the_secret_even_once_expanded(local_plan):
    _, plan = local_plan
    (secret,) = plan.secrets
    assert (secret.name, secret.source, secret.keys) == (
        "st-mlflow-postgres",
        "mlflow-postgres",
        ("password", "username"),
    )
    tracking = _containers(plan.pod("st-mlflow-tracking"))[0]
    env = {v["name"]: v for v in tracking["env"]}
    # The URL Kubernetes would expand from $(POSTGRES_USER) and $(POSTGRES_PASSWORD)
    # is a key of the secret, not a literal in the pod.
    ref = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "st-mlflow-postgres"
    content = secret_content(secret, {"username": "mlflow", "password": "s3cret"})
    decoded = {k: base64.b64decode(v).decode() for k, v in content.items()}
    assert decoded[ref["key"]] == "postgresql+psycopg2://mlflow:s3cret@mlflow-postgres:5432/mlflow"
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "st-mlflow-postgres",
        "key": "password",
    }
    # Literal references are expanded here (podman does not); none is left anywhere.
    assert "--artifacts-destination=/mlartifacts" in tracking["args"]
    text = yaml.safe_dump_all([d for pod in plan.pods for d in pod.documents])
    assert "$(" not in text and "s3cret" not in text


@needs_kubectl
def test_the_locust_pods_carry_the_load_test_configuration(local_plan):
    _objects, plan = local_plan
    locust = locust_pods(plan)
    assert locust.master.name == "st-locust-master" and len(locust.workers) == 2
    assert locust.target == "http://mlscale-server:8080"
    assert [p.name for p in pods_behind(plan, locust.target)] == ["st-mlscale-server"]
    for pod in (locust.master, *locust.workers):
        configmap = next(d for d in pod.documents if d["kind"] == "ConfigMap")
        config = json.loads(configmap["data"]["locust_config.json"])
        assert config["out"] == "/tmp/mlscale-loadtest"
        env = {v["name"]: v.get("value") for v in _containers(pod)[0]["env"]}
        assert env["MLSCALE_LOADTEST_CONFIG"] == "/etc/mlscale/loadtest/locust_config.json"
        # podman makes a volume named after it, which `down` must find again.
        assert _pod_doc(pod)["metadata"]["labels"][CONFIGMAPS_LABEL] == configmap["metadata"]["name"]


@needs_kubectl
def test_a_run_configuration_replaces_the_components(tmp_path):
    objects = render(default_source(), {"mode": "open", "out": "/tmp/x"})
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    assert json.loads(configmap["data"]["locust_config.json"]) == {"mode": "open", "out": "/tmp/x"}
    # The repository's component is untouched.
    committed = json.loads((ROOT / "deploy/components/loadtest-config/locust_config.json").read_text())
    assert committed["mode"] == "closed"


@needs_kubectl
def test_a_folder_rendered_from_a_plan_runs_as_sized(tmp_path):
    """`mlscale stack up --from` a `mlscale k8s render --overlay local` folder: the
    plan's replicas behind one Service name, its Locust workers."""
    # heavy: test_k8s imports the model fixtures (mlflow, 0.6 s); one test uses its plan
    from tests.k8s.test_k8s import PLAN

    out = render_plan(PLAN, str(tmp_path / "rendered"), overlay="local")
    plan = translate(render(Path(out)), StackSettings("st", IMAGES, PUBLISH))
    servers = [p for p in plan.pods if p.workload == "Deployment/mlscale-server"]
    assert [(p.name, p.aliases) for p in servers] == [
        (f"st-mlscale-server-{i}", ("mlscale-server",)) for i in range(3)
    ]
    assert [len(p.published) for p in servers] == [1, 0, 0]
    assert _containers(servers[0])[0]["resources"]["limits"]["cpu"] == "500m"
    assert len(locust_pods(plan).workers) == 5


def test_the_committed_load_test_configuration_is_the_reference_scenarios():
    """120 users posting one wine row and thinking 1 s for 10 minutes, as
    `mlscale loadtest` would configure it: the file cannot drift from the code."""

    settings = LoadTestSettings(
        host="http://mlscale-server:8080",
        out_dir="unused",
        workers=2,
        shape=shapes.constant(shapes.USERS, 120, 600),
    )
    committed = json.loads((ROOT / "deploy/components/loadtest-config/locust_config.json").read_text())
    assert committed == json.loads(json.dumps(locust_config(settings, out=RESULTS_DIR, summarize=True)))


def test_the_master_summarizes_from_the_settings_its_configuration_was_written_from():
    settings = LoadTestSettings(
        host="http://s:8080",
        out_dir="/o",
        workers=3,
        think="random",
        shape=shapes.steps(shapes.RPS, "10:5,10:20"),
        arrival="constant",
        think_time_s=0.5,
        max_in_flight=50,
        sla=parse_sla("p95<200ms"),
    )
    config = json.loads(json.dumps(locust_config(settings, out="/o", summarize=True)))
    assert settings_from_config(config, host="http://s:8080", out_dir="/o") == settings
    assert "summarize" not in locust_config(settings, out="/o")  # `mlscale loadtest` summarizes itself


@needs_kubectl
def test_the_overlay_with_the_load_test_component_validates(tmp_path):
    """The local overlay plus the component, as a cluster would apply it, passes
    `mlscale k8s validate` (schemas, policies, no credential in the ConfigMap)."""

    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("*.env"))
    overlay = tmp_path / "deploy" / "overlays" / "with-loadtest"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../local"], "components": ["../../components/loadtest-config"]})
    )
    try:
        report = validate_dir(overlay)
    except ConfigurationError as exc:  # no schemas package
        pytest.skip(str(exc))
    assert report.ok, report.text()
    assert "ConfigMap/locust-loadtest" in " ".join(report.objects)


# --- the translation's rules, on small objects ------------------------------------------


def _deployment(
    name, *, env=(), args=(), ports=(), replicas=1, image="mlscale/server:0.1.0", labels=None, volumes=()
):
    labels = labels or {"app": name}
    container = {"name": "main", "image": image, "env": list(env), "args": list(args), "ports": list(ports)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "volumes": list(volumes)},
            },
        },
    }


def _service(name, selector, port, target):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "p", "port": port, "targetPort": target}]},
    }


SETTINGS = StackSettings("t", {"mlscale/server": "localhost/mlscale/server:0.1.0"})


def test_kubernetes_expansion_of_variables():
    values = {"A": "a", "EMPTY": ""}
    secret = {"PW": ("db", "password")}

    def literal(text):
        return "".join(p.literal for p in expand_parts(text, values, secret))

    assert literal("x-$(A)-$(EMPTY)-y") == "x-a--y"
    assert literal("$$(A) costs $$5") == "$(A) costs $5"  # $$ escapes
    assert literal("$(NOPE) and $(A") == "$(NOPE) and $(A"  # unknown or unclosed: as written
    parts = expand_parts("u:$(PW)@h/$(A)", values, secret)
    assert parts == [SecretPart("u:"), SecretPart(key="PW"), SecretPart("@h/a")]
    assert (
        fill((SecretPart("u:"), SecretPart(key="password"), SecretPart("@h")), {"password": "x"}) == "u:x@h"
    )


def test_variables_expand_in_env_and_args_as_kubernetes_would():
    env = [
        {"name": "A", "value": "one"},
        {"name": "B", "value": "$(A)-two"},
        {"name": "C", "value": "$(D)"},
        {"name": "D", "value": "late"},
    ]
    plan = translate([_deployment("x", env=env, args=["--a=$(A)", "--d=$(D)"])], SETTINGS)
    container = _containers(plan.pods[0])[0]
    assert {v["name"]: v["value"] for v in container["env"]} == {
        "A": "one",
        "B": "one-two",
        "C": "$(D)",
        "D": "late",
    }  # an env value sees earlier ones only
    assert container["args"] == ["--a=one", "--d=late"]  # args see them all


def test_secrets_never_reach_arguments_or_mix():
    secret = {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}
    with pytest.raises(ConfigurationError, match="process list"):
        translate([_deployment("x", env=[secret], args=["--password=$(PW)"])], SETTINGS)
    other = {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}}
    mixed = {"name": "URL", "value": "$(PW)$(TOKEN)"}
    with pytest.raises(ConfigurationError, match="combines secrets api, db"):
        translate([_deployment("x", env=[secret, other, mixed])], SETTINGS)


def test_what_cannot_run_under_a_container_engine_is_refused_by_name():
    job = {"kind": "Job", "metadata": {"name": "migrate"}, "spec": {}}
    with pytest.raises(ConfigurationError, match="Job/migrate cannot run in the stack"):
        translate([job], SETTINGS)
    written = {"kind": "Secret", "metadata": {"name": "mlflow-postgres"}, "data": {}}
    with pytest.raises(ConfigurationError, match="makes its own secrets"):
        translate([written], SETTINGS)
    with pytest.raises(ConfigurationError, match=r"image nginx:1\.27 is none of the project's"):
        translate([_deployment("x", image="nginx:1.27")], SETTINGS)
    field_ref = {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    with pytest.raises(ConfigurationError, match="env NODE comes from fieldRef"):
        translate([_deployment("x", env=[field_ref])], SETTINGS)
    host_path = {"name": "h", "hostPath": {"path": "/etc"}}
    with pytest.raises(ConfigurationError, match="volume h of x is a hostPath"):
        translate([_deployment("x", volumes=[host_path])], SETTINGS)
    with pytest.raises(ConfigurationError, match="stack name 'Bad_Name'"):
        translate([], StackSettings("Bad_Name", {}))


def test_a_service_must_reach_the_port_it_names():
    ports = [{"name": "http", "containerPort": 8080}]
    ok = [_deployment("web", ports=ports), _service("web", {"app": "web"}, 8080, "http")]
    assert translate(ok, SETTINGS).pods[0].aliases == ("web",)
    remapped = [_deployment("web", ports=ports), _service("web", {"app": "web"}, 80, "http")]
    with pytest.raises(ConfigurationError, match="maps port 80 to 8080"):
        translate(remapped, SETTINGS)


def test_replicas_behind_a_service_share_its_name():
    objects = [
        _deployment("web", replicas=3, ports=[{"name": "http", "containerPort": 8080}]),
        _service("web", {"app": "web"}, 8080, "http"),
    ]
    plan = translate(
        objects, StackSettings("t", SETTINGS.images, (Publish("web", "p", 9000, "model-server"),))
    )
    assert [(p.name, p.aliases) for p in plan.pods] == [
        ("t-web-0", ("web",)),
        ("t-web-1", ("web",)),
        ("t-web-2", ("web",)),
    ]
    # One host port: the first replica has it.
    assert [len(p.published) for p in plan.pods] == [1, 0, 0]


def test_start_order_follows_the_names_pods_connect_to():
    objects = [
        _deployment("client", env=[{"name": "URL", "value": "http://api:80/x"}]),
        _deployment(
            "api",
            env=[{"name": "DB", "value": "db:5432"}, {"name": "SELF", "value": "api"}],
            ports=[{"name": "p", "containerPort": 80}],
        ),
        _deployment("db", ports=[{"name": "p", "containerPort": 5432}]),
        _deployment("apiary"),  # a name that merely starts like a Service's is not one
        _service("api", {"app": "api"}, 80, "p"),
        _service("db", {"app": "db"}, 5432, "p"),
    ]
    plan = translate(objects, SETTINGS)
    assert [[p.name for p in tier] for tier in plan.tiers()] == [
        ["t-db", "t-apiary"],
        ["t-api"],
        ["t-client"],
    ]
    assert plan.pod("t-api").needs == ("db",)
    cyclic = [
        _deployment("a", env=[{"name": "X", "value": "b"}]),
        _deployment("b", env=[{"name": "X", "value": "a"}]),
        _service("a", {"app": "a"}, 1, 1),
        _service("b", {"app": "b"}, 1, 1),
    ]
    assert len(start_tiers(translate(cyclic, SETTINGS).pods)) == 1  # a cycle starts together


def test_probes_as_commands_in_the_container_and_in_a_few_characters():
    http = Probe("http", port=8080, path="/ping", timeout_s=2)
    assert probe_command(http)[:2] == ["python3", "-c"] and probe_command(http)[3:] == [
        "http://127.0.0.1:8080/ping",
        "2",
    ]
    assert probe_command(Probe("exec", command=("pg_isready", "-q"))) == ["pg_isready", "-q"]
    assert probe_command(Probe("tcp", port=5557, timeout_s=1))[3:] == ["5557", "1"]
    for probe in (http, Probe("tcp", port=5557), Probe("exec", command=("pg_isready", "-h", "127.0.0.1"))):
        spec = probe_spec(probe)
        assert len(spec) <= 63  # podman's limit on an annotation's value
        back = parse_probe_spec(spec)
        assert (back.kind, back.port, back.path if probe.kind == "http" else "/", back.command) == (
            probe.kind,
            probe.port,
            probe.path,
            probe.command,
        )
    assert parse_probe_spec("nonsense") is None and parse_probe_spec("http:x") is None


def test_images_and_secrets():
    assert [
        image_repository(i)
        for i in (
            "mlscale/server:0.1.0",
            "postgres:16.4-bookworm",
            "localhost:5000/a/b:1",
            "x/y@sha256:" + "0" * 64,
            "plain",
        )
    ] == ["mlscale/server", "postgres", "localhost:5000/a/b", "x/y", "plain"]
    assert generated_value("username") == "mlflow"
    password = generated_value("password")
    assert len(password) == 48 and password.isalnum() and password != generated_value("password")


def test_podman_stats_read():
    assert go_duration_s("4.75238663s") == pytest.approx(4.75238663)
    assert go_duration_s("1h2m3.5s") == 3723.5 and go_duration_s("950ms") == pytest.approx(0.95)
    assert go_duration_s("12µs") == pytest.approx(12e-6)
    with pytest.raises(ValueError):
        go_duration_s("4 s")
    assert size_bytes("330.8MB") == 330.8e6 and size_bytes("1.5GiB") == 1.5 * 2**30 and size_bytes("0B") == 0
    text = json.dumps(
        [
            {"name": "s", "cpu_time": "2s", "mem_usage": "100MB / 512MB"},
            {"name": "w", "cpu_time": "1.5s", "mem_usage": "50MB / 384MB"},
            {"name": "broken", "cpu_time": "?", "mem_usage": "?"},
        ]
    )
    before = parse_stats(text)
    assert [(r.name, r.cpu_s, r.memory_bytes) for r in before] == [("s", 2.0, 100e6), ("w", 1.5, 50e6)]
    after = parse_stats(
        json.dumps(
            [
                {"name": "s", "cpu_time": "2.5s", "mem_usage": "1MB"},
                {"name": "w", "cpu_time": "0.2s", "mem_usage": "1MB"},
            ]
        )
    )
    # s used half a second of CPU in 1 s; w restarted (its time went back): counted from zero.
    assert cores_used(before, after, 1.0, ["s", "w"]) == {"s": 0.5, "w": pytest.approx(0.2)}
    per_second = [(100, {"w1": 0.45, "w2": 0.2}), (101, {"w1": 0.3, "w2": 0.49}), (200, {"w1": 5.0})]
    assert busiest_share(per_second, {"w1": 0.5, "w2": 0.5}, start=99.0, end=150.0) == ("w2", 0.98)
    assert busiest_share([], {}, start=0, end=1) is None


# --- the stack for real ----------------------------------------------------------------

_MODEL_URI = "models:/wine-quality/1"
_ROW = {
    "dataframe_split": {
        "columns": list(FEATURES),
        "data": [[7, 0.27, 0.36, 20.7, 0.045, 45, 170, 1.001, 3, 0.45, 8.8]],
    }
}


def _mlscale(*args: str, timeout: float, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-m", "mlscale", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )
    return done


def _poll(check, *, timeout_s: float, what: str, every_s: float = 0.5):
    """``check()`` until it returns something true; fail saying ``what`` after
    ``timeout_s`` (each check is itself bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every_s)
    pytest.fail(f"{what} not within {timeout_s:.0f} s")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _everything(engine) -> set[str]:
    """Every container, pod, network, volume and secret on the machine."""

    def lines(*args):
        return engine.run(*args).stdout.split()

    return (
        {f"container {c}" for c in lines("ps", "-a", "--format", "{{.Names}}")}
        | {f"pod {p}" for p in lines("pod", "ps", "--format", "{{.Name}}")}
        | {f"network {n}" for n in lines("network", "ls", "--format", "{{.Name}}")}
        | {f"volume {v}" for v in lines("volume", "ls", "--format", "{{.Name}}")}
        | {f"secret {s}" for s in lines("secret", "ls", "--format", "{{.Name}}")}
    )


def _leftovers(engine, name: str) -> list[str]:
    """Anything of stack ``name`` still on the machine."""
    found = []

    def lines(*args):
        return engine.run(*args).stdout.split()

    found += [
        f"container {c}" for c in lines("ps", "-a", "--format", "{{.Names}}") if c.startswith(f"{name}-")
    ]
    found += [f"pod {p}" for p in lines("pod", "ps", "--format", "{{.Name}}") if p.startswith(f"{name}-")]
    found += [f"network {n}" for n in lines("network", "ls", "--format", "{{.Name}}") if n == name]
    found += [
        f"volume {v}" for v in lines("volume", "ls", "--format", "{{.Name}}") if v.startswith(f"{name}-")
    ]
    found += [
        f"secret {s}" for s in lines("secret", "ls", "--format", "{{.Name}}") if s.startswith(f"{name}-")
    ]
    return found


@pytest.mark.slow
@needs_kubectl
@pytest.mark.timeout(3000)  # image builds, when `make images` has not run, take minutes each
def test_the_stack_end_to_end(tmp_path):
    engine = engine_or_skip()
    if engine.name != "podman":
        pytest.skip(f"the stack runs under podman (`podman kube play`); the engine here is {engine.name}")

    name = f"st{uuid.uuid4().hex[:8]}"
    figures = {}
    before = _everything(engine)
    try:
        started = time.monotonic()
        done = _mlscale("stack", "up", "--name", name, timeout=2400)
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        figures["up"] = time.monotonic() - started
        assert "not applied: HorizontalPodAutoscaler/mlscale-server" in done.stderr
        assert "not applied: NetworkPolicy/default-deny-ingress, locust-master, " in done.stderr
        assert f"waiting for {_MODEL_URI}, not registered yet" in done.stderr
        current = state(engine, name)
        server, tracking, locust = (current.url(w) for w in ("model-server", "tracking-ui", "locust-ui"))
        assert server and tracking and locust, done.stdout
        ready = {p.name: p.ready for p in current.pods}
        assert ready.pop(f"{name}-mlscale-server") is not True  # no model yet
        assert all(ready.values()) and len(ready) == 5, ready

        # Published on loopback only, nothing else published; non-root, read-only root.
        ports = json.loads(
            engine.run("ps", "--filter", f"label={STACK_LABEL}={name}", "--format", "json").stdout
        )
        bindings = [(b["host_ip"], b["container_port"]) for c in ports for b in c.get("Ports") or []]
        assert bindings and {ip for ip, _ in bindings} == {"127.0.0.1"}
        assert {port for _, port in bindings} == {8080, 5000, 8089}
        # The images of this checkout by their content tags, which no other build moves.
        images = [c["Image"] for c in ports]
        assert all(re.search(r":0\.1\.0-[0-9a-f]{12}$", i) for i in images if "mlscale/" in i), images
        assert engine.run("exec", f"{name}-mlflow-postgres-0-postgres", "id", "-u").stdout.strip() == "999"
        assert engine.run("exec", f"{name}-mlflow-tracking-tracking", "id", "-u").stdout.strip() == "10001"
        refused = engine.run("exec", f"{name}-mlflow-tracking-tracking", "touch", "/opt/x", check=False)
        assert "Read-only file system" in refused.stderr

        # No load test against a server without its model: a clear error first.
        done = _mlscale(
            "stack",
            "loadtest",
            "--name",
            name,
            "--users",
            "1",
            "--duration",
            "1",
            "--out",
            str(tmp_path / "early"),
            timeout=300,
        )
        assert done.returncode == 1 and "is not ready: register its model first" in done.stderr
        assert "Traceback" not in done.stderr

        # Train and register into the containerized tracking server; the server,
        # restarting until then, comes ready by itself.
        done = _mlscale("train", "--tracking-uri", tracking, timeout=600, cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == _MODEL_URI, done.stderr
        registered = time.monotonic()
        _poll(lambda: _answers(f"{server}/ping"), timeout_s=300, what="the model server's /ping")
        figures["server ready after training"] = time.monotonic() - registered
        request = urllib.request.Request(
            f"{server}/invocations",
            data=json.dumps(_ROW).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            prediction = json.loads(answer.read())["predictions"][0]
        assert 3 < prediction < 9

        # A load test from the Locust containers: mlscale's summary and report, with
        # the server container's CPU and memory.
        out = tmp_path / "loadtest"
        started = time.monotonic()
        done = _mlscale(
            "stack",
            "loadtest",
            "--name",
            name,
            "--users",
            "20",
            "--duration",
            "20",
            "--out",
            str(out),
            timeout=600,
        )
        figures["loadtest"] = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        summary = json.loads((out / "summary.json").read_text())
        assert summary["valid"], summary["problems"]
        assert summary["failures"] == 0 and summary["requests"] > 200  # 20 users, 1 s think, 20 s
        assert summary["config"]["host"] == "http://mlscale-server:8080" and summary["config"]["workers"] == 2
        assert all(summary["latency_ms"][k] for k in ("p50", "p95", "p99", "p999", "max"))
        assert any("podman stats" in note for note in summary["notes"])
        rows = list(_csv(out / "timeseries.csv"))
        measured = [r for r in rows if r["server_cpu"] and r["server_rss_mb"]]
        assert len(measured) >= 15, rows
        assert all(100 < float(r["server_rss_mb"]) < 512 for r in measured)  # its 512Mi limit
        assert 0 < max(float(r["server_cpu"]) for r in measured) <= 0.6  # its 0.5 CPU limit
        report = (out / "report.html").read_text()
        assert "CPU" in report and "memory" in report.lower()
        figures["loadtest rps, p50, p95, p99 (ms)"] = (
            round(summary["rps"], 1),
            summary["latency_ms"]["p50"],
            summary["latency_ms"]["p95"],
            summary["latency_ms"]["p99"],
        )
        # The master wrote mlscale's summary and report itself too, as it does in a cluster.
        master = f"{name}-locust-master-locust"
        _poll(
            lambda: (
                engine.run(
                    "exec", master, "test", "-s", "/tmp/mlscale-loadtest/report.html", check=False
                ).returncode
                == 0
            ),
            timeout_s=60,
            what="the master's report",
        )
        in_master = json.loads(engine.run("exec", master, "cat", "/tmp/mlscale-loadtest/summary.json").stdout)
        assert in_master["requests"] == summary["requests"]
        assert in_master["latency_ms"] == summary["latency_ms"]  # the same merged histograms
        figures["server cpu max, rss (MiB)"] = (
            round(max(float(r["server_cpu"]) for r in measured), 3),
            round(float(measured[-1]["server_rss_mb"])),
        )

        # Restart Postgres and the tracking server: the model is still registered.
        # Their pods, stopped then started: podman 4.3 stops a kube pod's infra
        # container with its last container (a lone container cannot restart in
        # place), and its `pod restart` races the restart policy (Postgres was
        # restarted by it mid-stop, then killed).
        restarted = {
            f"{name}-mlflow-postgres-0": f"{name}-mlflow-postgres-0-postgres",
            f"{name}-mlflow-tracking": f"{name}-mlflow-tracking-tracking",
        }

        def started_at(c):
            return engine.run("inspect", "--format", "{{.State.StartedAt}}", c).stdout

        first_start = {c: started_at(c) for c in restarted.values()}
        # Stopped client first, started database first, as `up` orders them: a
        # tracking server that starts before its database answers exits, and
        # comes back only as fast as the restart back-off allows.
        postgres, tracking_pod = list(restarted)
        for pod in (tracking_pod, postgres):
            engine.run("pod", "stop", "--time", "30", pod, timeout=180)
        engine.run("pod", "start", postgres, timeout=180)
        last_check: list[str] = []

        def postgres_ready() -> bool:
            container = restarted[postgres]
            status = engine.run("inspect", "--format", "{{.State.Status}}", container, check=False)
            if status.stdout.strip() in ("exited", "stopped", "created"):
                # podman 4.3's restart policy races `pod stop` (podman issue 18259): the
                # container it restarted mid-stop is killed, and `pod start` can then
                # leave it down. Started again here, as the kubelet would.
                engine.run("start", container, check=False, timeout=120)
            ready = engine.run("exec", container, "pg_isready", "-q", check=False, timeout=30)
            last_check[:] = [status.stdout.strip(), str(ready.returncode), ready.stderr.strip()]
            return ready.returncode == 0

        try:
            # Crash recovery after a stop that outlived its grace period can take a while
            # on a busy 2-core machine; the timeout is what it needs there, not a target.
            _poll(postgres_ready, timeout_s=240, what="Postgres after its restart", every_s=1)
        except BaseException:
            logs = engine.run("logs", "--tail", "40", restarted[postgres], check=False)
            pods = engine.run("pod", "ps", "--filter", f"name={name}", check=False)
            print(f"Postgres container (status, pg_isready exit, its stderr): {last_check}")
            print(pods.stdout + logs.stdout + logs.stderr)
            raise
        engine.run("pod", "start", tracking_pod, timeout=180)
        assert all(started_at(c) != first_start[c] for c in restarted.values())
        version = f"{tracking}/api/2.0/mlflow/model-versions/get?name=wine-quality&version=1"
        try:
            _poll(lambda: _answers(version), timeout_s=180, what="the model in the restarted tracking server")
        except BaseException:
            logs = engine.run("logs", "--tail", "30", restarted[tracking_pod], check=False)
            print("tracking server's log:\n" + logs.stdout + logs.stderr)
            raise

        # Down with the data kept, and up again: the model is served without training.
        done = _mlscale("stack", "down", "--name", name, "--keep-data", timeout=600)
        assert done.returncode == 0, done.stderr
        assert sorted(_leftovers(engine, name)) == [  # the data and its password; no scratch volume
            f"secret {name}-mlflow-postgres",
            f"volume {name}-data-mlflow-postgres-0",
            f"volume {name}-mlflow-artifacts",
        ]
        started = time.monotonic()
        done = _mlscale("stack", "up", "--name", name, "--no-build", timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr[-4000:]
        figures["up again, data kept"] = time.monotonic() - started
        assert "kept with the data" in done.stderr and "not registered yet" not in done.stderr
        again = state(engine, name)
        assert all(p.ready for p in again.pods), again
        assert _answers(f"{again.url('model-server')}/ping")
        done = _mlscale("stack", "status", "--name", name, timeout=120)
        assert done.returncode == 0 and again.url("locust-ui") in done.stdout
    finally:
        started = time.monotonic()
        done = _mlscale("stack", "down", "--name", name, timeout=600)
        figures["down"] = time.monotonic() - started
        print("figures:", figures)
    assert done.returncode == 0, done.stderr
    assert _leftovers(engine, name) == []
    # Nor anything podman made for it under other names (ConfigMap volumes, the
    # default kube network); other engineers' containers may have come and gone.
    assert not {t for t in _everything(engine) - before if t.startswith(("volume", "network"))}
    done = _mlscale("stack", "status", "--name", name, timeout=120)
    assert done.returncode == 1 and "is not up" in done.stdout


def _csv(path: Path):
    with open(path, newline="") as handle:
        yield from csv.DictReader(handle)


@pytest.mark.slow
@needs_kubectl
@pytest.mark.timeout(3000)
def test_a_container_that_keeps_failing_stops_up_with_its_log(tmp_path):
    """The tracking server given a port it cannot parse: `up` stops, names it, quotes
    its last log lines, and `down` still removes everything."""

    engine = engine_or_skip()
    if engine.name != "podman":
        pytest.skip(f"the stack runs under podman (`podman kube play`); the engine here is {engine.name}")
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", ignore=shutil.ignore_patterns("*.env"))
    tracking = tmp_path / "deploy" / "base" / "tracking.yaml"
    tracking.write_text(tracking.read_text().replace("--port=5000", "--port=five-thousand"))
    name = f"sf{uuid.uuid4().hex[:8]}"
    try:
        done = _mlscale(
            "stack",
            "up",
            "--name",
            name,
            "--from",
            str(tmp_path / "deploy" / "overlays" / "local"),
            "--timeout",
            "300",
            timeout=2400,
        )
        assert done.returncode == 1, done.stdout + done.stderr[-3000:]
        assert f"{name}-mlflow-postgres-0: ready" in done.stderr
        assert f"{name}-mlflow-tracking-tracking restarted" in done.stderr
        assert "Its last log lines" in done.stderr and "five-thousand" in done.stderr
        assert "Traceback" not in done.stderr.split("Its last log lines")[0]
        assert f"mlscale stack down --name {name}` removes it" in done.stderr
    finally:
        done = _mlscale("stack", "down", "--name", name, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _leftovers(engine, name) == []
