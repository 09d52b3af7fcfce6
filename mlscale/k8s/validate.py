"""Validate a kustomize folder: render it, check every object's schema and the policies.

Three layers, each catching what the one before lets through:

1. ``kubectl kustomize DIR`` must render (a broken patch, a missing file).
2. Every object must validate against the Kubernetes OpenAPI schemas of the
   oldest and the newest release checked, with unknown fields as errors (a
   misspelt field would otherwise be dropped by the API server in silence).
   The schemas ship in the ``kubernetes-validate`` package: no cluster and no
   network needed. KEDA's and KServe's kinds are checked against their own
   schemas (:mod:`mlscale.k8s.crds`).
3. The policies of :mod:`mlscale.k8s.policy`; and, for a folder that
   ``mlscale k8s render`` wrote, that the numbers are the plan's.

Placeholders left to fill (:mod:`mlscale.k8s.placeholders`) are warnings, or
problems when the folder is about to be applied (``for_apply``).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mlscale.errors import ConfigurationError, MlscaleError
from mlscale.k8s.crds import custom_problems, is_custom
from mlscale.k8s.kubectl import find_kubectl
from mlscale.k8s.objects import Problem, name_of
from mlscale.k8s.placeholders import find_placeholders, placeholder_problems
from mlscale.k8s.plan import read_plan, sizing_from_plan
from mlscale.k8s.policy import POLICIES, check_against_plan, check_all
from mlscale.k8s.policy.against_plan import scales_on_inflight
from mlscale.k8s.render import MARKER, PLAN_FILE

# preStop.sleep, which the model server uses, is on by default from 1.30
# (https://kubernetes.io/docs/concepts/containers/container-lifecycle-hooks/).
OLDEST_KUBERNETES = "1.30"
_KUSTOMIZE_TIMEOUT_S = 60


@dataclass
class ValidationReport:
    directory: str
    kubernetes_versions: tuple[str, ...] = ()
    objects: list[str] = field(default_factory=list)  # "Kind/name", in rendering order
    problems: list[Problem] = field(default_factory=list)
    against_plan: bool = False  # the folder holds the plan it was rendered from
    # Placeholder -> where; warnings unless for_apply, when they are also problems.
    placeholders: dict[str, list[str]] = field(default_factory=dict)
    for_apply: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def _placeholder_lines(self) -> list[str]:
        if not self.placeholders:
            return ["  placeholders: none left to fill"]
        names = ", ".join(self.placeholders)
        if self.for_apply:
            return [f"  placeholders: {len(self.placeholders)} not filled in ({names})"]
        heading = (
            "  placeholders to fill before applying (deploy/README.md, step 4; "
            f"--for-apply makes them errors): {names}"
        )
        lines = [heading]
        for name, places in self.placeholders.items():
            more = f" and {len(places) - 2} more" if len(places) > 2 else ""
            lines.append(f"  - warning: {name} in {'; '.join(places[:2])}{more}")
        return lines

    def text(self) -> str:
        """The report for a person at a terminal."""
        lines = [f"{self.directory}: {len(self.objects)} objects rendered by kubectl kustomize"]
        if self.objects:
            versions = " and ".join(self.kubernetes_versions)
            schema = [p for p in self.problems if p.check == "schema"]
            lines.append(
                f"  schemas (Kubernetes {versions}, unknown fields are errors): "
                f"{'ok' if not schema else f'{len(schema)} problems'}"
            )
            policy = [p for p in self.problems if p.check not in ("schema", "render", "plan", "placeholder")]
            lines.append(
                f"  policies ({len(POLICIES)} checks): {'ok' if not policy else f'{len(policy)} problems'}"
            )
            if self.against_plan:
                plan = [p for p in self.problems if p.check == "plan"]
                lines.append(f"  sizing against {PLAN_FILE}: {'ok' if not plan else f'{len(plan)} problems'}")
            lines += self._placeholder_lines()
        lines += [f"  - {problem}" for problem in self.problems]
        count = len(self.problems)
        lines.append("OK" if self.ok else f"FAILED: {count} problem{'s' if count > 1 else ''}")
        return "\n".join(lines)


def validate_dir(
    directory: str | os.PathLike[str],
    *,
    kubernetes_versions: tuple[str, ...] | None = None,
    for_apply: bool = False,
) -> ValidationReport:
    """Render ``directory`` with kubectl kustomize and check everything rendered.

    ``for_apply``: placeholders such as YOUR_PROJECT are problems, not warnings.
    """
    path = Path(directory)
    if not any(
        (path / name).is_file() for name in ("kustomization.yaml", "kustomization.yml", "Kustomization")
    ):
        raise ConfigurationError(
            f"{path} has no kustomization.yaml: give a kustomize folder, "
            "e.g. deploy/overlays/local or one `mlscale k8s render` wrote."
        )
    versions = kubernetes_versions or default_versions()
    report = ValidationReport(str(directory), kubernetes_versions=versions, for_apply=for_apply)
    try:
        objects = kustomize(path)
    except RenderError as exc:
        report.problems.append(Problem("render", str(directory), str(exc)))
        return report
    report.objects = [name_of(obj) for obj in objects]
    report.problems += schema_problems(objects, versions)
    report.problems += check_all(objects)
    report.placeholders = find_placeholders(objects)
    if for_apply:
        report.problems += placeholder_problems(report.placeholders)
    plan_path = path / PLAN_FILE
    if plan_path.is_file() and _written_by_render(path):
        report.against_plan = True
        try:
            plan = read_plan(str(plan_path))
            inflight = None
            if scales_on_inflight(objects):
                # The number render wrote, computed again: numpy, scipy and a fit, only here.
                from mlscale.simulate.inflight import plan_inflight_target

                inflight = plan_inflight_target(plan)
            report.problems += check_against_plan(objects, sizing_from_plan(plan), inflight)
        except ConfigurationError as exc:  # PlanError, or a plan whose pod cannot be fitted
            report.problems.append(Problem("plan", str(plan_path), str(exc)))
    return report


class RenderError(MlscaleError):
    """kubectl kustomize failed; the message is its own."""


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` renders."""
    kubectl = find_kubectl()
    if kubectl is None:
        raise ConfigurationError(
            "kubectl is not on PATH: install it (https://kubernetes.io/docs/tasks/tools/); "
            "`mlscale k8s validate` renders with `kubectl kustomize`."
        )
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=_KUSTOMIZE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RenderError(f"kubectl kustomize did not finish in {_KUSTOMIZE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise RenderError(f"kubectl kustomize failed: {message}")
    try:
        documents = list(yaml.safe_load_all(done.stdout))
    except yaml.YAMLError as exc:
        raise RenderError(f"kubectl kustomize printed YAML that does not parse: {exc}") from exc
    return [doc for doc in documents if isinstance(doc, dict)]


def default_versions() -> tuple[str, ...]:
    """The oldest Kubernetes the manifests support and the newest with schemas at hand."""
    newest = ".".join(_kubernetes_validate().latest_version().split(".")[:2])
    return (OLDEST_KUBERNETES, newest) if newest != OLDEST_KUBERNETES else (newest,)


def schema_problems(objects: list[dict[str, Any]], versions: tuple[str, ...]) -> list[Problem]:
    """One problem per object and version whose schema rejects it (strict: no unknown fields)."""
    kv = _kubernetes_validate()
    problems = []
    for obj in objects:
        for version in versions:
            if is_custom(obj):
                problems += custom_problems(obj, version)
                continue
            try:
                kv.validate(obj, version, strict=True)
            except kv.ValidationError as exc:
                at = ".".join(str(part) for part in exc.path) or "(top)"
                problems.append(Problem("schema", name_of(obj), f"Kubernetes {version}: {at}: {exc.message}"))
            except kv.SchemaNotFoundError:
                problems.append(
                    Problem(
                        "schema",
                        name_of(obj),
                        f"Kubernetes {version} has no {obj.get('apiVersion')} {obj.get('kind')}",
                    )
                )
            except Exception as exc:  # its VersionNotSupportedError is not exported
                message = getattr(exc, "message", None) or repr(exc)
                if type(exc).__name__ == "VersionNotSupportedError":
                    raise ConfigurationError(
                        f"No schemas for Kubernetes {version} in kubernetes-validate: {message}"
                    ) from exc
                problems.append(
                    Problem("schema", name_of(obj), f"Kubernetes {version}: cannot be validated: {message}")
                )
    return problems


def _kubernetes_validate():
    try:
        # Here, not at the top: optional (the message below says how to install it), and
        # heavy (its schema index: 70 ms) for the render-only paths that import this module.
        import kubernetes_validate
    except ImportError as exc:
        raise ConfigurationError(
            "Schema checks need the kubernetes-validate package: pip install kubernetes-validate"
        ) from exc
    return kubernetes_validate


def _written_by_render(directory: Path) -> bool:
    try:
        first = (directory / "kustomization.yaml").read_text(encoding="utf-8").split("\n", 1)[0]
    except OSError:
        return False
    return first.startswith(MARKER)
