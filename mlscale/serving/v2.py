"""The Open Inference Protocol's REST endpoints ("V2", as KServe, Triton and MLServer).

Served by the same app as MLflow's endpoints, over the same batchers: a V2 infer
request becomes a float64 matrix for the native batcher (numeric signatures) or
a parsed DataFrame for the pyfunc one, beside ``/invocations`` requests, and
only its answer is written differently (``mlscale.protocol.v2``).

    GET  /v2                                     server metadata
    GET  /v2/health/live, /v2/health/ready       liveness; readiness as /ping
    GET  /v2/models/<name>[/versions/<v>]        model metadata
    GET  /v2/models/<name>[/versions/<v>]/ready  model readiness
    POST /v2/models/<name>[/versions/<v>]/infer  inference

``<name>`` is ``--model-name``; ``<v>`` exists only for a ``models:/name/N`` URI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from mlscale import __version__
from mlscale.model.loader import LoadedModel
from mlscale.protocol import v2
from mlscale.protocol.errors import JSON, DeadlineExceeded, PayloadTooLarge, ServingError
from mlscale.protocol.pyfunc import ParsedRequest
from mlscale.serving.asgi import CLOSE, ClientDisconnected, Receive, Scope, Send, headers, read_body, respond
from mlscale.serving.batcher import Batcher
from mlscale.serving.metrics import Metrics
from mlscale.serving.predict import Job, batch_key
from mlscale.serving.settings import ServeSettings

logger = logging.getLogger("mlscale.serving")

# Bodies larger than this are decoded in a thread so the event loop keeps serving.
_INLINE_DECODE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class Route:
    """A V2 path resolved: the metrics' endpoint label, its method, and what it names."""

    endpoint: str
    method: bytes
    action: str  # "server", "live", "ready", "model", "model_ready", "infer"
    model: str | None = None
    version: str | None = None


def resolve(path: str) -> Route | None:
    """The route for a path under /v2, or None (404)."""
    parts = path.rstrip("/").split("/")[2:] if path != "/v2/" else []
    if not parts:
        return Route("v2_metadata", b"GET", "server")
    if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
        return Route("v2_health", b"GET", parts[1])
    if parts[0] != "models" or len(parts) < 2 or not parts[1]:
        return None
    name, rest = parts[1], parts[2:]
    version = None
    if rest[:1] == ["versions"]:
        if len(rest) < 2 or not rest[1]:
            return None
        version, rest = rest[1], rest[2:]
    if not rest:
        return Route("v2_metadata", b"GET", "model", name, version)
    if rest == ["ready"]:
        return Route("v2_health", b"GET", "model_ready", name, version)
    if rest == ["infer"]:
        return Route("infer", b"POST", "infer", name, version)
    return None


class OpenInference:
    """One worker's V2 endpoints for its one model."""

    def __init__(
        self,
        *,
        settings: ServeSettings,
        model: LoadedModel,
        metrics: Metrics,
        native: Batcher[Job[np.ndarray], bytes] | None,
        pyfunc: Batcher[Job[ParsedRequest], bytes],
        not_ready: Callable[[], str | None],
        decode_executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self._native = native
        self._pyfunc = pyfunc
        self._not_ready = not_ready
        self._executor = decode_executor
        self.name = settings.v2_model_name
        self.version = settings.v2_model_version
        signature = model.pyfunc.metadata.signature
        self.metadata = v2.ModelMetadata.from_signature(
            name=self.name,
            versions=(self.version,) if self.version else (),
            platform="mlflow",
            signature=signature,
        )
        self._metadata_body = self.metadata.to_json()
        self._server_body = v2.server_metadata("mlscale", __version__)
        self._column_types = v2.column_types(model.input_schema)
        self._fp64_columns = v2.fp64_columns(self._column_types)
        # The fast path's signature; load_model picks a native path only with one.
        self._signature = model.signature if native is not None else None

    async def handle(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a resolved route whose method the app has checked."""
        if route.action == "infer":
            await self._infer(route, scope, receive, send)
            return
        status, body = self._answer(route)
        self.metrics.count(route.endpoint, status)
        await respond(send, status, body, headers(JSON, body))

    def _answer(self, route: Route) -> tuple[int, bytes]:
        if route.action == "server":
            return 200, self._server_body
        if route.action == "live":
            return 200, b""
        if route.action == "ready":
            return self._readiness()
        try:
            self._check_model(route)
        except v2.ModelNotFound as error:
            return error.status, error.body
        if route.action == "model_ready":
            return self._readiness()
        return 200, self._metadata_body

    def _readiness(self) -> tuple[int, bytes]:
        reason = self._not_ready()
        if reason is None:
            return 200, b""
        # The protocol's "false" for a health endpoint is a 4xx (MLServer: 400).
        return 400, v2.error_body(f"Not ready ({reason}).")

    def _check_model(self, route: Route) -> None:
        if route.model != self.name:
            raise v2.ModelNotFound(
                f"Model {route.model} not found; this server serves {self.name!r} (set with --model-name)."
            )
        if route.version is not None and route.version != self.version:
            served = f"version {self.version}" if self.version else "no numbered version"
            raise v2.ModelNotFound(
                f"Model {route.model} with version {route.version} not found; it is served as {served}."
            )

    # -- inference ---------------------------------------------------------

    async def _infer(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight.inc()
        status = 500
        try:
            extra: list[tuple[bytes, bytes]] = []
            try:
                self._check_model(route)
                async with asyncio.timeout(self.settings.timeout_s):
                    body = await self._score(scope, receive)
                status = 200
            except ServingError as error:
                status, body = error.status, v2.error_body(error.message)
                extra = error.extra_headers
                if isinstance(error, (PayloadTooLarge, v2.ModelNotFound)):
                    extra = extra + CLOSE  # answered before the body was read
            except MlflowException as error:
                status, body = error.get_http_status_code(), v2.error_body(error.message)
            except TimeoutError:
                deadline = DeadlineExceeded(
                    "Request processing time exceeded limit "
                    f"({self.settings.timeout_s:g} s; raise it with -t/--timeout)."
                )
                status, body = deadline.status, v2.error_body(deadline.message)
            except ClientDisconnected:
                status = 499  # nginx's code for it, in the metrics only
                return
            except Exception:
                logger.exception("Unexpected error while scoring a V2 request")
                status, body = 500, v2.error_body("Internal error")
            await respond(send, status, body, headers(JSON, body, extra))
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)
            metrics.count("infer", status)

    async def _score(self, scope: Scope, receive: Receive) -> bytes:
        body = await read_body(scope, receive, self.settings.max_body_bytes)
        if len(body) <= _INLINE_DECODE_BYTES:
            request_id, outputs, request, matrix = self._decode(body)
        else:
            loop = asyncio.get_running_loop()
            request_id, outputs, request, matrix = await loop.run_in_executor(
                self._executor, self._decode, body
            )
        encode = partial(
            v2.encode_response,
            model_name=self.name,
            model_version=self.version,
            request_id=request_id,
            outputs=outputs,
        )
        if matrix is not None and self._native is not None:
            return await self._native.submit(Job(matrix, encode), len(matrix))
        assert request is not None  # _decode parses whatever has no matrix
        # MLServer's codecs and pandas: in a thread, as MLflow's parser is for /invocations.
        data = await asyncio.get_running_loop().run_in_executor(
            self._executor, v2.decode, request, self.metadata
        )
        parsed = ParsedRequest(data, request.params, False)
        rows = len(data) if isinstance(data, (list, np.ndarray, pd.DataFrame)) else 1
        return await self._pyfunc.submit(Job(parsed, encode), max(rows, 1), batch_key(parsed))

    def _decode(
        self, body: bytes
    ) -> tuple[str | None, tuple[str, ...] | None, v2.InferRequest | None, np.ndarray | None]:
        """(id, outputs asked for, the parsed request or None, the native path's matrix or None)."""
        document = v2.load_document(body)
        if self._signature is not None:
            matrix = v2.fp64_matrix(document, self._signature, self._fp64_columns)
            if matrix is not None:
                return (*v2.request_head(document), None, matrix)
        request = v2.parse_document(document)
        if self._signature is None:
            return request.id, request.outputs, request, None
        return (
            request.id,
            request.outputs,
            request,
            v2.decode_matrix(request, self._signature, self._column_types),
        )
