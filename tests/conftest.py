"""Shared fixtures: real MLflow models, a real registry, and in-process clients.

In-process clients drive the real ASGI apps (mlscale's and MLflow's own scoring
app) through Starlette's TestClient, which runs the app's lifespan; tests that
need a real socket, real processes or signals start ``mlscale serve`` instead
(see ``tests/support/server_process.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def model_paths(tmp_path_factory) -> dict[str, str]:
    from tests.support.models import build_all

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


# --- the fast tier ---------------------------------------------------------------
#
# `make test-fast` runs the tests not marked `slow`: no server processes, Locust
# runs, containers, kubectl renders or training. A test is slow when it or its
# module (``pytestmark``) is marked, or when it uses one of the fixtures below,
# each of which starts processes or trains the reference model. While an unmarked
# test runs, starting a process is refused, so a test that starts one without the
# mark fails in both tiers instead of slowing the fast one.

SLOW_FIXTURES = frozenset(
    {
        "wine_registry",  # trains and registers the reference model
        "quick_demo",  # runs `mlscale demo --quick`
        "slow_model",  # test_faults, test_server_process: for server processes
        "servers",  # test_hostile_input: server processes
        "server",  # test_security: a server process
        "tracking",  # test_tracking_auth: an MLflow tracking server
        "images",  # test_images: container images
        "local_plan",  # test_stack: `kubectl kustomize`
        "pypi",  # test_env_manager: model environments from the package index
        "models",  # test_build_image: the reference model trained, for images
        "wine_image",  # test_build_image: images
        "sklearn_image",
    }
)
# Events of the audit hook (PEP 578) that start a process.
_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.exec", "os.system"}
)
_running_pure: list[str] = []  # the node id of the unmarked test running, if any

# Libraries' own probes, not processes a test starts: ctypes.util.find_library runs
# ldconfig (mlscale.serving.memory finds libc that way when an app is built).
_PROBES = frozenset({"ldconfig"})


def _refuse_processes_in_pure_tests(event: str, args: tuple) -> None:
    if not _running_pure or event not in _PROCESS_EVENTS:
        return
    if event == "subprocess.Popen":
        command = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        if command and os.path.basename(str(command[0])) in _PROBES:
            return
    raise RuntimeError(f"{_running_pure[0]} starts a process ({event}): mark it `slow`")


sys.addaudithook(_refuse_processes_in_pure_tests)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if item.get_closest_marker("slow") is not None:
        return (yield)
    _running_pure.append(item.nodeid)
    try:
        return (yield)
    finally:
        _running_pure.clear()
