"""Typed settings of the scoring server, built once at the edge and passed down."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from mlscale.protocol.names import default_model_name, registered_version
from mlscale.serving.batcher import BatchSettings

# The environment variable that carries the settings to worker processes.
SETTINGS_ENV = "MLSCALE_SERVE_SETTINGS"


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    model_uri: str
    # A local copy of the model, once fetched; loaded instead of ``model_uri``.
    model_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1
    # Per request, from its arrival to its answer (MLflow's -t); past it: 504.
    timeout_s: float = 60.0
    # Larger bodies get 413 (MLflow's container caps them at 100 MB too).
    max_body_bytes: int = 100 * 1024 * 1024
    batch: BatchSettings = field(default_factory=BatchSettings)
    # The native fast path for XGBoost, LightGBM and scikit-learn models.
    native: bool = True
    # Accept MLflow 1.x bare ``{"columns", "data"}`` bodies.
    accept_legacy_split: bool = False
    # After SIGTERM: answer /ping with 503 for this long, still serving, then drain.
    drain_delay_s: float = 0.0
    # How long in-flight requests may take to finish once draining starts.
    graceful_timeout_s: float = 30.0
    log_level: str = "info"
    # Bearer token required on /invocations and /version (see serving/auth.py);
    # None: no authentication. Kept out of repr so that it never reaches a log.
    auth_token: str | None = field(default=None, repr=False)
    # The model's name in the Open Inference Protocol's paths (/v2/models/<name>/...);
    # None: derived from the URI (``default_model_name``).
    model_name: str | None = None

    @property
    def v2_model_name(self) -> str:
        return self.model_name or default_model_name(self.model_uri)

    @property
    def v2_model_version(self) -> str | None:
        """The registry version of a ``models:/name/N`` URI; None for any other URI."""
        return registered_version(self.model_uri)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        values = json.loads(text)
        values["batch"] = BatchSettings(**values["batch"])
        return cls(**values)
