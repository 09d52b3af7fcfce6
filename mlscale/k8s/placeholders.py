"""Placeholders a user fills in before applying: YOUR_PROJECT, YOUR_REGION, ...

The gke overlay is a template: it cannot know your project, region, bucket or
the address ranges allowed to reach the load balancers, so it says
``YOUR_...`` where they go (deploy/README.md, step 4, fills them with `sed`).
A placeholder left in an image name fails only when the pod is pulled; one
left in a ``loadBalancerSourceRanges`` or an ``ipBlock`` is rejected by the
API server half-way through an apply. So ``mlscale k8s validate`` lists them:
as warnings on the committed template (which must keep them, and must still
validate), as problems with ``--for-apply``, the check to run before
``kubectl apply``.
"""

from __future__ import annotations

import re
from typing import Any

from mlscale.k8s.objects import Obj, Problem, name_of

# YOUR_ followed by capitals: the overlays' convention, and nothing a real
# value (a project id, a region, a CIDR) looks like.
PLACEHOLDER = re.compile(r"\bYOUR_[A-Z0-9_]*[A-Z0-9]\b")
CHECK = "placeholder"


def find_placeholders(objects: list[Obj]) -> dict[str, list[str]]:
    """Each placeholder -> where it is ("Kind/name field.path"), in rendering order."""
    found: dict[str, list[str]] = {}
    for obj in objects:
        for path, text in _strings(obj, ""):
            for name in dict.fromkeys(PLACEHOLDER.findall(text)):
                found.setdefault(name, []).append(f"{name_of(obj)} {path}")
    return dict(sorted(found.items()))


def placeholder_problems(found: dict[str, list[str]]) -> list[Problem]:
    """One problem per placeholder and place, for ``--for-apply``."""
    return [
        Problem(CHECK, where, f"{name} is not filled in (deploy/README.md, step 4)")
        for name, places in found.items()
        for where in places
    ]


def _strings(node: Any, path: str):
    """(field path, string) for every string value under ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node
