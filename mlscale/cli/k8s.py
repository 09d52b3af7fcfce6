"""``mlscale k8s``: Kubernetes manifests sized from a plan, and their checks."""

from __future__ import annotations

import click

_OVERLAY_CHOICES = ("base", "local", "gke")


@click.group(context_settings={"max_content_width": 100})
def k8s() -> None:
    """Kubernetes manifests: render an overlay or KServe objects sized from a plan, validate them.

    The manifests are a kustomize base and overlays in deploy/ (the model server
    with its HPA and PodDisruptionBudget, the MLflow tracking server with
    Postgres, Locust master and workers, NetworkPolicies); deploy/README.md
    gives the commands for a real cluster.
    """


@k8s.command()
@click.option(
    "--plan",
    "plan_path",
    required=True,
    metavar="PATH",
    help="plan.json from `mlscale plan`, or the folder it was written to.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    metavar="DIR",
    help="Folder to write the overlay to: new, empty, or an earlier render.",
)
@click.option(
    "--overlay",
    type=click.Choice(_OVERLAY_CHOICES),
    default="base",
    show_default=True,
    help="Build on the bare base, on deploy/overlays/local (kind, minikube) or on "
    "deploy/overlays/gke (load balancers, artifacts in GCS).",
)
@click.option(
    "--model-uri",
    default=None,
    metavar="URI",
    help="The model to serve (default: the base's models:/wine-quality/1). Kustomize target only.",
)
@click.option(
    "--target",
    type=click.Choice(["kustomize", "kserve"]),
    default="kustomize",
    show_default=True,
    help="kustomize: an overlay of deploy/ (server, HPA, tracking, Locust). kserve: a KServe "
    "ServingRuntime running `mlscale serve` and an InferenceService (raw deployment mode) "
    "sized from the plan.",
)
@click.option(
    "--policy",
    type=click.Choice(["cpu", "inflight"]),
    default="cpu",
    show_default=True,
    help="cpu: an HPA on CPU utilisation at the plan's target. inflight: scale on the server's "
    "in-flight requests gauge, at the plan's in-flight count per pod (its pod at 80 % of its "
    "capacity at the SLA; what `mlscale simulate --plan ... --policy inflight` runs).",
)
@click.option(
    "--inflight-via",
    type=click.Choice(["keda", "prometheus-adapter"]),
    default=None,
    help="With --policy inflight: keda (default) writes a KEDA ScaledObject and removes the HPA; "
    "prometheus-adapter writes an HPA on a Pods metric and the adapter's rule "
    "(prometheus-adapter-values.yaml). The kserve target always uses KServe's KEDA autoscaler.",
)
@click.option(
    "--prometheus-url",
    default=None,
    metavar="URL",
    help="With --policy inflight and KEDA: the Prometheus KEDA queries "
    "[default: http://prometheus-server.monitoring.svc].",
)
@click.option(
    "--storage-uri",
    default=None,
    metavar="URI",
    help="--target kserve: the folder holding the model's MLmodel file, which KServe downloads to "
    "/mnt/models (gs://, s3://, pvc://...; e.g. the artifacts of a registered model version). "
    "Default: the placeholder gs://YOUR_BUCKET/YOUR_MODEL_DIR, which `validate --for-apply` rejects.",
)
@click.option(
    "--name",
    default=None,
    metavar="NAME",
    help="--target kserve: the InferenceService's name, which KServe passes to the server as the "
    "model's name (/v2/models/NAME/infer) [default: wine-quality].",
)
def render(
    plan_path: str,
    out_dir: str,
    overlay: str,
    model_uri: str | None,
    target: str,
    policy: str,
    inflight_via: str | None,
    prometheus_url: str | None,
    storage_uri: str | None,
    name: str | None,
) -> None:
    """Write manifests sized from a plan: a kustomize overlay, or KServe objects.

    From the plan's sizing: the model server's replicas, CPU per pod (request =
    limit), memory, worker processes (-w), the HPA's minimum, maximum and CPU
    target; and Locust workers for the target load, one worker of one CPU per 500
    requests/s (twice as many of the local overlay's half-CPU workers), users
    counting as one request per think time. Memory per pod is the plan's, or,
    for a plan without it, 256Mi + 300Mi per worker process. A kustomize DIR
    holds a copy of the base (and of the overlay), so it renders wherever it is
    moved.

    --target kserve writes a ServingRuntime and an InferenceService with the same
    pods, CPU, memory, workers and autoscaling bounds (deploy/README.md, KServe).
    --policy inflight scales on requests in flight instead of CPU, with KEDA or
    prometheus-adapter (deploy/README.md, scaling on requests in flight).
    """
    # yaml and the renderer (20 ms) load only when the command runs, not at every start.
    from mlscale.errors import ConfigurationError
    from mlscale.k8s.inflight import DEFAULT_PROMETHEUS_URL, KEDA, PROMETHEUS_ADAPTER, InflightScaling
    from mlscale.k8s.plan import read_plan
    from mlscale.k8s.render import render_plan, sizing_for_overlay

    kserve = target == "kserve"
    if inflight_via is not None and policy != "inflight":
        raise ConfigurationError(
            "--inflight-via chooses how to scale on requests in flight: add --policy inflight."
        )
    if prometheus_url is not None and policy != "inflight":
        raise ConfigurationError("--prometheus-url is for --policy inflight, which queries Prometheus.")
    if kserve and overlay != "base":
        raise ConfigurationError(
            f"--target kserve writes KServe objects, not an overlay of deploy/: drop --overlay {overlay}."
        )
    if kserve and model_uri is not None:
        raise ConfigurationError(
            "--target kserve serves the model at --storage-uri; --model-uri is for kustomize."
        )
    if kserve and inflight_via == PROMETHEUS_ADAPTER:
        raise ConfigurationError(
            "--target kserve scales on requests in flight with KServe's KEDA autoscaler; "
            "--inflight-via prometheus-adapter is for the kustomize target."
        )
    if not kserve and (storage_uri is not None or name is not None):
        raise ConfigurationError("--storage-uri and --name are for --target kserve.")

    plan = read_plan(plan_path)
    inflight_target = None
    if policy == "inflight":
        # numpy and scipy, and a fit of the plan's pod: only for this policy.
        from mlscale.simulate.inflight import plan_inflight_target

        inflight_target = plan_inflight_target(plan)
    url = prometheus_url or DEFAULT_PROMETHEUS_URL
    if kserve:
        from mlscale.k8s.kserve import DEFAULT_NAME, DEFAULT_STORAGE_URI, render_kserve
        from mlscale.k8s.plan import sizing_from_plan

        sizing = sizing_from_plan(plan)
        written = render_kserve(
            plan,
            out_dir,
            name=name or DEFAULT_NAME,
            storage_uri=storage_uri or DEFAULT_STORAGE_URI,
            inflight_target=inflight_target,
            prometheus_url=url,
        )
        click.echo(
            f"Wrote {written}: a ServingRuntime and an InferenceService of {sizing.cpu_millicores}m CPU and "
            f"{sizing.memory_mib}Mi per pod, {sizing.workers_per_pod} worker process(es) each, "
            f"{sizing.hpa_min_replicas}-{sizing.hpa_max_replicas} pods at {_scaling(sizing, inflight_target)}."
        )
    else:
        local = None if overlay == "base" else overlay
        sizing = sizing_for_overlay(plan, local)
        inflight = (
            None
            if inflight_target is None
            else InflightScaling(via=inflight_via or KEDA, target=inflight_target, prometheus_url=url)
        )
        written = render_plan(plan, out_dir, overlay=local, model_uri=model_uri, inflight=inflight)
        scaler = "HPA" if inflight is None or inflight.via != KEDA else "KEDA"
        click.echo(
            f"Wrote {written}: {sizing.pods} model pods of {sizing.cpu_millicores}m CPU and "
            f"{sizing.memory_mib}Mi, {sizing.workers_per_pod} worker process(es) each; {scaler} "
            f"{sizing.hpa_min_replicas}-{sizing.hpa_max_replicas} pods at {_scaling(sizing, inflight_target)}; "
            f"{sizing.locust_workers} Locust worker(s) of {round(sizing.locust_worker_cpu * 1000)}m CPU."
        )
    click.echo(f"Check: mlscale k8s validate {written}   Apply: kubectl apply -k {written}")


def _scaling(sizing, inflight_target: float | None) -> str:
    if inflight_target is None:
        return f"{sizing.hpa_target_cpu_utilization} % CPU"
    return f"{inflight_target:g} requests in flight per pod"


@k8s.command()
@click.argument("directory", metavar="DIR")
@click.option(
    "--kubernetes-version",
    "versions",
    multiple=True,
    metavar="X.Y",
    help="Validate against this release's schemas (repeatable). Default: 1.30, the "
    "oldest the manifests support, and the newest kubernetes-validate ships.",
)
@click.option(
    "--for-apply",
    is_flag=True,
    help="About to `kubectl apply`: placeholders left to fill (YOUR_PROJECT, "
    "YOUR_MODEL_CLIENTS_CIDR...) are errors, not warnings.",
)
def validate(directory: str, versions: tuple[str, ...], for_apply: bool) -> None:
    """Check a kustomize folder: it renders, every object fits the schemas, policies hold.

    Renders DIR with `kubectl kustomize`; validates every object against the
    Kubernetes OpenAPI schemas with unknown fields as errors (no cluster needed);
    checks policies: requests and limits, probes on serving containers, non-root
    and read-only root file systems, pinned images, no credentials in plain text
    (env, Secrets written in YAML, credential-looking ConfigMap keys),
    $(VAR) references that expand, Services that select pods, load balancers
    open only to named ranges and no ipBlock that lets the cluster's pods in,
    HPAs (autoscaling/v2, explicit scale-down, bounds, a PodDisruptionBudget), the model server's
    graceful shutdown and metrics, Locust on mlscale's locustfile; and, for a
    folder `mlscale k8s render` wrote, that the numbers are its plan's (an HPA's or
    a KEDA ScaledObject's in-flight target, a KServe InferenceService's sizes too).
    KEDA's ScaledObject is checked against KEDA's CRD (cloudcoil-models-keda), KServe's
    ServingRuntime and InferenceService against KServe's API fields.
    Placeholders such as YOUR_PROJECT, which the gke overlay keeps for you to
    fill (deploy/README.md, step 4), are listed as warnings; with --for-apply
    they fail the check. Exit status 1 when anything fails.
    """
    from mlscale.k8s.validate import validate_dir  # yaml and the policies: off start-up

    report = validate_dir(directory, kubernetes_versions=versions or None, for_apply=for_apply)
    click.echo(report.text())
    if not report.ok:
        raise SystemExit(1)
