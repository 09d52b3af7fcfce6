"""Policies a rendered deployment must meet, beyond what the schemas say.

Each check is a pure function from the rendered objects (dicts, as
``kubectl kustomize`` prints them) to a list of :class:`Problem`. They encode
the reliability contract of DESIGN.md ("containers run as non-root with a
read-only root file system", "a rolling update under load loses nothing") and
the mistakes that schemas let through: an unpinned image, a password in plain
text, a Service that selects no pod, a load balancer open to everyone, an HPA
without bounds or behaviour, a variable that Kubernetes will not expand.

The checks live by concept: :mod:`.pods` (containers and what they carry),
:mod:`.cluster` (Services, exposure, autoscaling), :mod:`.workloads` (mlscale's
own server and Locust) and :mod:`.against_plan` (a rendered overlay against its
plan); the objects they read are :mod:`mlscale.k8s.objects`.
"""

from __future__ import annotations

from collections.abc import Callable

from mlscale.k8s.objects import Obj, Problem
from mlscale.k8s.policy.against_plan import check_against_plan
from mlscale.k8s.policy.cluster import check_autoscaling, check_exposure, check_services_select_pods
from mlscale.k8s.policy.pods import (
    check_images,
    check_no_replication_controllers,
    check_probes,
    check_resources,
    check_secrets_not_plain,
    check_security,
    check_variable_references,
)
from mlscale.k8s.policy.workloads import check_locust, check_model_server

POLICIES: tuple[Callable[[list[Obj]], list[Problem]], ...] = (
    check_no_replication_controllers,
    check_resources,
    check_probes,
    check_security,
    check_images,
    check_secrets_not_plain,
    check_variable_references,
    check_services_select_pods,
    check_exposure,
    check_autoscaling,
    check_model_server,
    check_locust,
)


def check_all(objects: list[Obj]) -> list[Problem]:
    """Every policy's problems. A policy that trips over a malformed object (one the
    schemas reject, say) reports that, rather than stopping the others."""
    problems = []
    for policy in POLICIES:
        try:
            problems += policy(objects)
        except (TypeError, KeyError, AttributeError, ValueError, IndexError) as exc:
            name = policy.__name__.removeprefix("check_")
            problems.append(
                Problem(
                    "policy-error",
                    name,
                    f"could not check malformed objects ({exc!r}); see the schema problems",
                )
            )
    return problems


__all__ = [
    "POLICIES",
    "check_against_plan",
    "check_all",
    "check_autoscaling",
    "check_exposure",
    "check_images",
    "check_locust",
    "check_model_server",
    "check_no_replication_controllers",
    "check_probes",
    "check_resources",
    "check_secrets_not_plain",
    "check_security",
    "check_services_select_pods",
    "check_variable_references",
]
