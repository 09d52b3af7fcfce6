"""``mlscale k8s``: Kubernetes manifests sized from a plan, and their checks."""

from __future__ import annotations

import click

_OVERLAY_CHOICES = ("base", "local", "gke")


@click.group(context_settings={"max_content_width": 100})
def k8s() -> None:
    """Kubernetes manifests: render an overlay sized from a plan, validate overlays.

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
    help="The model to serve (default: the base's models:/wine-quality/1).",
)
def render(plan_path: str, out_dir: str, overlay: str, model_uri: str | None) -> None:
    """Write a kustomize overlay sized from a plan, ready for `kubectl apply -k DIR`.

    From the plan's sizing: the model server's replicas, CPU per pod (request =
    limit), memory, worker processes (-w), the HPA's minimum, maximum and CPU
    target; and Locust workers for the target load, one worker of one CPU per 500
    requests/s (twice as many of the local overlay's half-CPU workers), users
    counting as one request per think time. Memory per pod is the plan's, or,
    for a plan without it, 256Mi + 300Mi per worker process. DIR holds a copy
    of the base (and of the overlay), so it renders wherever it is moved.
    """
    # yaml and the renderer (20 ms) load only when the command runs, not at every start.
    from mlscale.k8s.plan import read_plan
    from mlscale.k8s.render import render_plan, sizing_for_overlay

    plan = read_plan(plan_path)
    sizing = sizing_for_overlay(plan, None if overlay == "base" else overlay)
    written = render_plan(plan, out_dir, overlay=None if overlay == "base" else overlay, model_uri=model_uri)
    click.echo(
        f"Wrote {written}: {sizing.pods} model pods of {sizing.cpu_millicores}m CPU and "
        f"{sizing.memory_mib}Mi, {sizing.workers_per_pod} worker process(es) each; HPA "
        f"{sizing.hpa_min_replicas}-{sizing.hpa_max_replicas} pods at "
        f"{sizing.hpa_target_cpu_utilization} % CPU; {sizing.locust_workers} Locust worker(s) of "
        f"{round(sizing.locust_worker_cpu * 1000)}m CPU."
    )
    click.echo(f"Check: mlscale k8s validate {written}   Apply: kubectl apply -k {written}")


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
    folder `mlscale k8s render` wrote, that the numbers are its plan's.
    Placeholders such as YOUR_PROJECT, which the gke overlay keeps for you to
    fill (deploy/README.md, step 4), are listed as warnings; with --for-apply
    they fail the check. Exit status 1 when anything fails.
    """
    from mlscale.k8s.validate import validate_dir  # yaml and the policies: off start-up

    report = validate_dir(directory, kubernetes_versions=versions or None, for_apply=for_apply)
    click.echo(report.text())
    if not report.ok:
        raise SystemExit(1)
