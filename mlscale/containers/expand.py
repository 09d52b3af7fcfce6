"""Kubernetes' ``$(VAR)`` expansion, which podman 4 does not do: pure functions.

Kubernetes expands ``$(VAR)`` in a container's env values (from the variables
defined before it) and in its command and args (from all of them); ``$$`` is a
literal ``$``; a reference to an unknown variable stays as written. Under
podman the stack expands them itself, except that a variable from a secret is
never written out: the parts of the expanded value say where its keys go, and
the value is made into a key of that secret (``fill``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


@dataclass(frozen=True)
class SecretPart:
    literal: str = ""
    key: str | None = None  # a key of the same secret, in place of the literal


def expand_parts(
    text: str, values: Mapping[str, str], secret_vars: Mapping[str, tuple[str, str]]
) -> list[SecretPart]:
    """Kubernetes' ``$(VAR)`` expansion of ``text``: a literal variable's value, a
    secret variable as a part naming it (``SecretPart.key`` is the variable), ``$$``
    as ``$``; an unknown variable stays as written, as Kubernetes leaves it."""
    parts: list[SecretPart] = []
    position = 0
    for match in _REFERENCE.finditer(text):
        literal = text[position : match.start()]
        variable = match.group(1)
        if match.group(0) == "$$":
            literal += "$"
        elif variable in values:
            literal += values[variable]
        elif variable in secret_vars:
            parts.append(SecretPart(literal))
            parts.append(SecretPart(key=variable))
            literal = ""
        else:
            literal += match.group(0)
        parts.append(SecretPart(literal))
        position = match.end()
    parts.append(SecretPart(text[position:]))
    merged: list[SecretPart] = []
    for part in parts:
        if part.key is None and merged and merged[-1].key is None:
            merged[-1] = SecretPart(merged[-1].literal + part.literal)
        elif part.key is not None or part.literal:
            merged.append(part)
    return merged


def fill(parts: tuple[SecretPart, ...], values: Mapping[str, str]) -> str:
    """A derived secret value: the parts with the secret's own keys filled in."""
    return "".join(part.literal if part.key is None else values[part.key] for part in parts)
