"""The name a model has in the Open Inference Protocol's paths when none is given.

Its own small module: the server, the load tester and the planner all derive it
(the client must build the path the server routes), and none of them should pay
for the V2 codec's imports to do so.
"""

from __future__ import annotations

import os
import re

# models:/name/version, models:/name@alias, models:/name/stage (the name may hold slashes
# in a Unity Catalog three-part name, but never "@").
_REGISTERED = re.compile(r"^models:/+([^@]+?)(?:/([^/@]+)|@[^/]+)/*$")


def default_model_name(uri: str) -> str:
    """The V2 model name for a URI: the registered model's name for ``models:/name/...``,
    else the last component of the path (a local folder, ``runs:/id/model``, ``s3://...``)."""
    match = _REGISTERED.match(uri)
    if match:
        return match.group(1)
    tail = uri.rstrip("/")
    name = os.path.basename(tail.split(":", 1)[1] if re.match(r"^[a-z][a-z0-9+.-]*:", tail) else tail)
    return name or "model"


def registered_version(uri: str) -> str | None:
    """The registry version of a ``models:/name/N`` URI; None for any other URI."""
    match = _REGISTERED.match(uri)
    version = match.group(2) if match else None
    return version if version is not None and version.isdigit() else None
