"""A virtual environment with Seldon MLServer and its MLflow runtime, for the V2 tests.

MLServer 1.7.1 pins fastapi below 0.116 and protobuf below 7, and mlscale's pins
are newer, so it cannot share mlscale's venv. Installing it with its own MLflow,
XGBoost and scikit-learn would download about a gigabyte; instead this venv
holds only MLServer and the packages whose versions must differ, and reads
everything else (MLflow, the model libraries, numpy, pandas) from mlscale's
venv through a ``.pth`` file. Its own site-packages come first on ``sys.path``,
so its older fastapi, starlette and protobuf shadow mlscale's. The model is then
loaded by the same MLflow and the same library versions in both servers, which
is what a differential test needs.

Run as a script (``python tests/support/mlserver_env.py``) or through ``ensure``;
the venv is reused while its stamp matches the versions below. ``write_repository``
lays out the folder ``mlserver start`` serves: one MLflow model, on loopback ports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

from mlscale.processes import free_port

MLSERVER_VERSION = "1.7.1"
REQUIREMENTS = [f"mlserver=={MLSERVER_VERSION}", f"mlserver-mlflow=={MLSERVER_VERSION}"]
ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-mlserver"
_STAMP = VENV / ".installed"


class PackageIndexUnreachable(RuntimeError):
    """pip could not reach the package index: the differential tests skip, saying so."""


def python() -> Path:
    return VENV / "bin" / "python"


def mlserver() -> Path:
    return VENV / "bin" / "mlserver"


def ensure() -> Path:
    """The venv's ``mlserver`` command, installing the venv first if needed."""
    wanted = " ".join(REQUIREMENTS) + f" on {sys.executable}\n"
    if _STAMP.is_file() and _STAMP.read_text() == wanted and mlserver().is_file():
        _STAMP.touch()  # newer than .venv's stamp: make sees it up to date
        return mlserver()
    if not python().is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    _link_parent_site_packages()
    result = subprocess.run(
        [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        text = result.stdout + result.stderr
        if any(
            marker in text
            for marker in (
                "NewConnectionError",
                "Temporary failure in name resolution",
                "No matching distribution",
            )
        ):
            raise PackageIndexUnreachable(f"pip could not install {' '.join(REQUIREMENTS)}: {text[-500:]}")
        raise RuntimeError(f"pip install {' '.join(REQUIREMENTS)} failed:\n{text[-3000:]}")
    _STAMP.write_text(wanted)
    return mlserver()


def _link_parent_site_packages() -> None:
    """Make the running interpreter's venv (mlscale's) importable after the venv's own packages."""
    ours = subprocess.run(
        [str(python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    parent = sysconfig.get_paths()["purelib"]
    # A name that sorts last: .pth files are read in order, and this path goes after the venv's own.
    Path(ours, "zz_mlscale_venv.pth").write_text(parent + "\n")


def write_repository(
    folder: Path,
    *,
    name: str,
    model_path: str,
    version: str | None = None,
    max_batch_size: int = 0,
    max_batch_time: float = 0.0,
) -> int:
    """Settings for ``mlserver start folder`` serving one MLflow model; returns its HTTP port.

    Inference runs in the server's own process (``parallel_workers: 0``), like
    ``mlscale serve -w 1``; gRPC gets a free port too (MLServer always starts it);
    the metrics server is off. ``platform`` and ``versions`` are set to what
    mlscale's metadata says of the same model, so that metadata compares whole.
    Adaptive batching is on when ``max_batch_size`` > 1.
    """
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    settings = {
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_endpoint": None,
        "parallel_workers": 0,
        "debug": False,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model: dict[str, object] = {
        "name": name,
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "platform": "mlflow",
        "versions": [version] if version else [],
        "parameters": {"uri": model_path, **({"version": version} if version else {})},
    }
    if max_batch_size > 1:
        model.update(max_batch_size=max_batch_size, max_batch_time=max_batch_time)
    (folder / name).mkdir(exist_ok=True)
    (folder / name / "model-settings.json").write_text(json.dumps(model))
    return port


if __name__ == "__main__":
    try:
        print(ensure())
    except PackageIndexUnreachable as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
