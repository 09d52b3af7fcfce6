"""Resolve and download a model URI in a process of its own.

``python -m mlscale.model.fetch URI DEST`` prints one JSON line, ``{"path": …}``
or ``{"error": …}``. The server runs it as a child process so that the tracking
and registry clients that resolution imports (about 50 MB) never load into the
process that serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlscale.errors import ModelLoadError

# Loaded with the mlscale.model package anyway; mlflow itself only loads inside download_model.
from mlscale.model.loader import download_model


def fetch_model(uri: str, dst_path: str) -> str:
    """A local folder holding the model; remote URIs are downloaded by a child process."""
    if os.path.isdir(uri):
        return download_model(uri)
    child = subprocess.run(
        [sys.executable, "-m", "mlscale.model.fetch", uri, dst_path],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    try:
        answer = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise ModelLoadError(
            f"Resolving {uri!r} failed (exit status {child.returncode}); see the messages above."
        ) from None
    if "error" in answer:
        raise ModelLoadError(answer["error"])
    path: str = answer["path"]
    return path


def main(argv: list[str]) -> int:
    uri, dst_path = argv
    os.makedirs(dst_path, exist_ok=True)
    try:
        print(json.dumps({"path": download_model(uri, dst_path)}))
    except ModelLoadError as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
