"""A rendered file's text: a header of comments that say where its numbers come from,
then the object as YAML, keys in the order written."""

from __future__ import annotations

from typing import Any

import yaml


def document(obj: dict[str, Any], comments: list[str]) -> str:
    header = "".join(f"# {line}\n" for line in comments)
    return header + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)
