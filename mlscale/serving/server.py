"""Run the scoring server: one process, or N workers under uvicorn's supervisor.

The model URI is resolved and downloaded once, into a temporary folder, by a
short-lived child process. With ``workers == 1`` the model then loads in this
process and uvicorn serves it here. With more, uvicorn's supervisor starts N
worker processes that share one listening socket (the kernel spreads
connections over them), each loading the local copy, and replaces any worker
that dies.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import replace
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from mlscale.errors import ModelLoadError
from mlscale.logs import configure_logging
from mlscale.serving.http import BoundedHttpToolsProtocol
from mlscale.serving.lifecycle import exit_quietly_after_signals
from mlscale.serving.memory import fix_mmap_threshold
from mlscale.serving.settings import SETTINGS_ENV, ServeSettings

if TYPE_CHECKING:  # the app module imports mlflow (about 1 s): build_app imports it when it is needed
    from mlscale.serving.app import ScoringApp

logger = logging.getLogger("mlscale.serving")


def _uvicorn_config(
    settings: ServeSettings, app: ScoringApp | str, *, factory: bool = False, workers: int | None = None
) -> uvicorn.Config:
    """``app`` is the app itself, or with ``factory`` the import path of the function making it."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        # httptools, with bounded request heads and answers after a half-close.
        http=BoundedHttpToolsProtocol,
        # Access logs cost more per request than the prediction itself; the
        # /metrics counters say what they would.
        access_log=False,
        log_level=settings.log_level,
        # uvicorn annotates int but waits with asyncio, which takes fractions of a second too.
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
        timeout_keep_alive=75,
        factory=factory,
        workers=workers,
    )


def build_app(settings: ServeSettings) -> ScoringApp:
    """Load the model and build the app (used in-process and by each worker)."""
    # Here, not at the top: the app and the loader import mlflow (about 1 s), the metrics
    # prometheus_client; neither the supervisor of N workers nor `mlscale serve --env-manager`
    # (which hands over to the model's own Python) needs them.
    from mlscale.serving.app import ScoringApp
    from mlscale.serving.loading import load_model
    from mlscale.serving.metrics import Metrics

    fix_mmap_threshold()  # before the model's own buffers are allocated
    model = load_model(settings.model_path or settings.model_uri, native=settings.native)
    batching = (
        "on"
        if (model.native_batchable if model.native else model.pyfunc_batchable)
        else ("off (merged calls did not answer exactly as single ones on sample rows, or no sample)")
    )
    logger.info(
        "Model %s loaded in %.2f s; path: %s; batching: %s",
        settings.model_uri,
        model.load_seconds,
        model.path_description,
        batching,
    )
    return ScoringApp(settings, model, Metrics())


def worker_app() -> ScoringApp:
    """uvicorn's app factory in each worker process; settings come in the environment."""
    settings = ServeSettings.from_json(os.environ[SETTINGS_ENV])
    configure_logging(settings.log_level)
    try:
        return build_app(settings)
    except ModelLoadError as exc:
        logger.error("%s", exc)
        # uvicorn's supervisor stops, instead of restarting, on this exit status.
        sys.exit(STARTUP_FAILURE)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, remembering whether a signal (not a failure) stopped it."""

    stopped_by_signal = False

    def handle_int(self) -> None:
        self.stopped_by_signal = True
        super().handle_int()

    def handle_term(self) -> None:
        self.stopped_by_signal = True
        super().handle_term()


def serve(settings: ServeSettings) -> int:
    """Serve until stopped; returns the process exit status."""
    from mlscale.model.fetch import fetch_model  # mlscale.model brings numpy, which only workers need

    with tempfile.TemporaryDirectory(prefix="mlscale-serve-") as workdir:
        local = fetch_model(settings.model_uri, os.path.join(workdir, "model"))
        settings = replace(settings, model_path=local)
        if settings.workers == 1:
            app = build_app(settings)
            server = uvicorn.Server(_uvicorn_config(settings, app))
            exit_quietly_after_signals()
            server.run()
            return 0 if server.started else 1
        return _serve_workers(settings, workdir)


def _serve_workers(settings: ServeSettings, workdir: str) -> int:
    # Not at the top: the metrics module imports prometheus_client (about 40 ms), which the
    # supervisor needs only for this name.
    from mlscale.serving.metrics import MULTIPROC_ENV

    metrics_dir = os.path.join(workdir, "metrics")
    os.makedirs(metrics_dir)
    # Inherited by the workers, which are spawned after this point.
    os.environ[MULTIPROC_ENV] = metrics_dir
    os.environ[SETTINGS_ENV] = settings.to_json()
    config = _uvicorn_config(
        settings, "mlscale.serving.server:worker_app", factory=True, workers=settings.workers
    )
    socket = config.bind_socket()
    supervisor = _Supervisor(config, sockets=[socket])
    supervisor.run()
    socket.close()
    if not supervisor.stopped_by_signal:
        logger.error("The workers could not start; see the error above.")
        return 1
    return 0
