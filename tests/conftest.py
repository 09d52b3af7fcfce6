"""Shared fixtures: real MLflow models, a real registry, and in-process clients.

In-process clients drive the real ASGI apps (mlscale's and MLflow's own scoring
app) through Starlette's TestClient, which runs the app's lifespan; tests that
need a real socket, real processes or signals start ``mlscale serve`` instead
(see ``tests/server_process.py``).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import pytest

warnings.filterwarnings("ignore", message=".*valid feature names.*")


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory) -> dict[str, str]:
    from tests.models import build_all

    return build_all(str(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def wine_registry(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The reference model trained and registered in a fresh SQLite store."""
    from mlscale.examples.wine import TrainSettings, train

    root = tmp_path_factory.mktemp("registry")
    tracking_uri = f"sqlite:///{root}/mlflow.db"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    cwd = os.getcwd()
    os.chdir(root)  # the default artifact root is relative to the working folder
    try:
        result = train(TrainSettings(tracking_uri=tracking_uri))
    finally:
        os.chdir(cwd)
    yield {"tracking_uri": tracking_uri, "model_uri": result.model_uri, "root": str(root)}
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@contextlib.contextmanager
def mlscale_client(model_uri: str, **settings):
    """A TestClient on mlscale's app for ``model_uri``; keyword args go to ServeSettings."""
    from starlette.testclient import TestClient

    from mlscale.serving.server import build_app
    from mlscale.serving.settings import ServeSettings

    app = build_app(ServeSettings(model_uri=model_uri, **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        client.app_instance = app
        yield client


_mlflow_apps: dict[str, object] = {}


@contextlib.contextmanager
def mlflow_client(model_uri: str):
    """A TestClient on MLflow's own scoring app (what `mlflow models serve` runs)."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server
    from starlette.testclient import TestClient

    if model_uri not in _mlflow_apps:
        _mlflow_apps[model_uri] = scoring_server.init(mlflow.pyfunc.load_model(model_uri))
    with TestClient(_mlflow_apps[model_uri], raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="session")
def clients(model_paths):
    """Both servers for every test model, opened once: {name: (mlscale, mlflow)}."""
    with contextlib.ExitStack() as stack:
        pairs = {
            name: (
                stack.enter_context(mlscale_client(path)),
                stack.enter_context(mlflow_client(path)),
            )
            for name, path in model_paths.items()
        }
        yield pairs
