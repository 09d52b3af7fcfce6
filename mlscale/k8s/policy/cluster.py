"""Policies across objects: Services select pods, load balancers and network
policies admit only named ranges, and HPAs are bounded, explicit and backed by a
PodDisruptionBudget."""

from __future__ import annotations

import ipaddress

from mlscale.k8s.objects import Obj, Problem, containers, name_of, namespace, pod_labels, pod_spec


def check_services_select_pods(objects: list[Obj]) -> list[Problem]:
    """A Service whose selector matches no pod template answers nothing."""
    templates = [(namespace(o), pod_labels(o)) for o in objects if pod_spec(o) is not None]
    problems = []
    for service in (o for o in objects if o.get("kind") == "Service"):
        selector = (service.get("spec") or {}).get("selector")
        if not selector:
            continue  # selector-less Services point at manual Endpoints
        if not any(
            ns == namespace(service) and selector.items() <= labels.items() for ns, labels in templates
        ):
            problems.append(
                Problem("service-selector", name_of(service), f"selector {selector} matches no pod template")
            )
    return problems


# The private IPv4 ranges (RFC 1918), where clusters put their pods and Services.
_PRIVATE_RANGES = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_EVERYONE = ("0.0.0.0/0", "::/0")


def check_exposure(objects: list[Obj]) -> list[Problem]:
    """Load balancers admit named ranges, and no ipBlock lets the cluster's own pods in.

    A LoadBalancer without loadBalancerSourceRanges is open to the internet (or
    the whole VPC). An ipBlock that holds a whole private range holds the pod
    range too, and NetworkPolicies match pods by address as well as by label:
    every pod would get in past the label rules, unless `except` cuts it out.
    """
    problems = []
    for service in (o for o in objects if o.get("kind") == "Service"):
        spec = service.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        ranges = [str(r) for r in spec.get("loadBalancerSourceRanges") or []]
        if not ranges:
            problems.append(
                Problem(
                    "exposure",
                    name_of(service),
                    "a LoadBalancer without loadBalancerSourceRanges is open to every address",
                )
            )
        elif set(ranges) & set(_EVERYONE):
            problems.append(
                Problem("exposure", name_of(service), "loadBalancerSourceRanges admits every address")
            )
    for policy in (o for o in objects if o.get("kind") == "NetworkPolicy"):
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            for peer in rule.get("from") or []:
                block = peer.get("ipBlock") or {}
                try:
                    network = ipaddress.ip_network(str(block.get("cidr")), strict=False)
                except ValueError:
                    continue  # a placeholder, or for the API server to reject
                held = [
                    str(p)
                    for p in _PRIVATE_RANGES
                    # The same IP version, checked just before: typeshed cannot tell.
                    if p.version == network.version and network.supernet_of(p)  # type: ignore[arg-type]
                ]
                if held and not block.get("except"):
                    problems.append(
                        Problem(
                            "exposure",
                            name_of(policy),
                            f"ipBlock {network} holds "
                            f"all of {held[0]}, where the cluster's pods are: "
                            "they would match it whatever their labels; name "
                            "a narrower range or add `except`",
                        )
                    )
    return problems


def check_autoscaling(objects: list[Obj]) -> list[Problem]:
    """Each HPA: autoscaling/v2, explicit scale-down behaviour, a real target within its bounds."""
    problems = []
    workloads = {
        (o.get("kind"), namespace(o), o["metadata"]["name"]): o for o in objects if pod_spec(o) is not None
    }
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    for hpa in (o for o in objects if o.get("kind") == "HorizontalPodAutoscaler"):
        where, spec = name_of(hpa), hpa.get("spec") or {}
        if hpa.get("apiVersion") != "autoscaling/v2":
            problems.append(Problem("hpa", where, f"{hpa.get('apiVersion')}: use autoscaling/v2"))
        if not (spec.get("behavior") or {}).get("scaleDown"):
            problems.append(
                Problem(
                    "hpa",
                    where,
                    "no behavior.scaleDown: write the scale-down policy out rather than rely on defaults",
                )
            )
        low, high = spec.get("minReplicas", 1), spec.get("maxReplicas", 0)
        if not all(isinstance(bound, int) for bound in (low, high)):
            continue  # the schema check reports it
        if low > high:
            problems.append(Problem("hpa", where, f"minReplicas {low} > maxReplicas {high}"))
        ref = spec.get("scaleTargetRef") or {}
        target = workloads.get((ref.get("kind"), namespace(hpa), ref.get("name")))
        if target is None:
            problems.append(
                Problem(
                    "hpa", where, f"its target {ref.get('kind')}/{ref.get('name')} is not among the objects"
                )
            )
            continue
        replicas = (target.get("spec") or {}).get("replicas", 1)
        if not low <= replicas <= high:
            problems.append(
                Problem(
                    "hpa", where, f"{name_of(target)} has {replicas} replicas, outside the HPA's {low}-{high}"
                )
            )
        for _spec, container, container_where in containers(target):
            if "cpu" not in ((container.get("resources") or {}).get("requests") or {}):
                problems.append(
                    Problem(
                        "hpa", container_where, "no CPU request: the HPA's CPU utilisation is relative to it"
                    )
                )
        labels = pod_labels(target)
        if not any(
            namespace(b) == namespace(target)
            and ((b.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items() <= labels.items()
            for b in budgets
        ):
            problems.append(
                Problem(
                    "disruption-budget",
                    name_of(target),
                    "autoscaled but no PodDisruptionBudget selects its pods",
                )
            )
    return problems
