"""Where the kustomize base and overlays are.

They live in the repository's ``deploy/`` folder, beside the ``mlscale``
package, because that is where a Kubernetes user looks for them. An editable
install (``pip install -e .``, what ``make install`` does) reads them from
there; a wheel does not ship them, and the error says so.
"""

from __future__ import annotations

from pathlib import Path

from mlscale.errors import ConfigurationError

OVERLAYS = ("local", "gke")


def deploy_root() -> Path:
    """The ``deploy/`` folder of the source tree mlscale runs from."""
    root = Path(__file__).resolve().parents[2] / "deploy"
    if not (root / "base" / "kustomization.yaml").is_file():
        raise ConfigurationError(
            f"The Kubernetes manifests are not at {root}: `mlscale k8s` needs mlscale installed "
            "from its source tree (pip install -e .), which holds deploy/base and deploy/overlays."
        )
    return root


def overlay_dir(name: str) -> Path:
    if name not in OVERLAYS:
        raise ConfigurationError(f"Unknown overlay {name!r}; known: {', '.join(OVERLAYS)}.")
    return deploy_root() / "overlays" / name
