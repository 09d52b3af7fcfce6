"""The ASGI application: MLflow's scoring endpoints, thin, over the batchers.

A plain ASGI callable rather than a framework: every microsecond of routing
and request wrapping is paid on each of thousands of requests per second per
core, and the server has five fixed routes plus the ``/v2`` tree. Handlers only
read the request, pick the path (native fast path or MLflow's generic one) and
write the answer.

Endpoints (as ``mlflow models serve``): ``POST /invocations``, ``GET /ping``,
``GET /health``, ``GET /version``; plus ``GET /metrics`` (Prometheus) and the
Open Inference Protocol's ``/v2/...`` (``mlscale.serving.v2``), over the same
batchers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import orjson
from mlflow.exceptions import MlflowException
from mlflow.utils.proto_json_utils import MlflowInvalidInputException
from mlflow.version import VERSION as MLFLOW_VERSION

from mlscale.model.loader import LoadedModel
from mlscale.model.signature import NumericSignature
from mlscale.protocol import pyfunc as generic
from mlscale.protocol.errors import (
    JSON,
    DeadlineExceeded,
    NotReady,
    PayloadTooLarge,
    ServingError,
)
from mlscale.protocol.fast import decode_matrix
from mlscale.protocol.v2 import error_body
from mlscale.serving import lifecycle, v2
from mlscale.serving.asgi import (
    CLOSE,
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    header,
    headers,
    read_body,
    respond,
)
from mlscale.serving.auth import PROTECTED, BearerToken
from mlscale.serving.batcher import Batcher, BatchSettings
from mlscale.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mlscale.serving.metrics import Metrics
from mlscale.serving.predict import MLFLOW, MLFLOW_UNWRAPPED, Job, batch_key, native_batch, pyfunc_batch
from mlscale.serving.settings import ServeSettings

logger = logging.getLogger("mlscale.serving")

# Bodies larger than this are decoded in a thread so the event loop keeps serving.
_INLINE_DECODE_BYTES = 256 * 1024
# Native predict calls with at most this many rows run on the event loop.
_INLINE_PREDICT_ROWS = 64

_ROUTES = {
    b"/invocations": ("invocations", b"POST"),
    b"/ping": ("ping", b"GET"),
    b"/health": ("health", b"GET"),
    b"/version": ("version", b"GET"),
    b"/metrics": ("metrics", b"GET"),
}
_NOT_FOUND = b'{"detail":"Not Found"}'
_NOT_ALLOWED = b'{"detail":"Method Not Allowed"}'


def _batch_settings(settings: ServeSettings, mergeable: bool) -> BatchSettings:
    """One request per predict call when merging could change an answer's last bit."""
    return settings.batch if mergeable else replace(settings.batch, max_batch_rows=1)


def _row_count(data: object) -> int:
    """Rows in a parsed input, for the batch budget; a scalar or 0-d array is one."""
    try:
        # Scalars have no len(): the TypeError is the test, cheaper than an isinstance per request.
        return max(len(data), 1)  # type: ignore[arg-type]
    except TypeError:
        return 1


class ScoringApp:
    """One worker's scoring server for one loaded model."""

    # The signature the fast path decodes against; set when there is a native path.
    _signature: NumericSignature

    def __init__(self, settings: ServeSettings, model: LoadedModel, metrics: Metrics) -> None:
        self.settings = settings
        self.model = model
        self.metrics = metrics
        self.ready = False
        self.draining = False
        self._token = BearerToken(settings.auth_token) if settings.auth_token else None
        # One thread runs the model: batching relies on calls not overlapping.
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="mlscale-predict")
        self._native: Batcher[Job[np.ndarray], bytes] | None = None
        # load_model picks a native path only for a numeric signature.
        if model.native is not None and model.signature is not None:
            self._signature = model.signature
            self._native = Batcher(
                native_batch(model.native),
                _batch_settings(settings, model.native_batchable),
                executor=self._model_thread,
                # A small native call (~0.2 ms) costs less than the hop to a thread
                # and back; larger ones leave the event loop free meanwhile.
                inline_max_rows=_INLINE_PREDICT_ROWS,
                observer=metrics.observer("native"),
            )
        self._pyfunc = Batcher(
            pyfunc_batch(generic.Predictor(model.pyfunc)),
            _batch_settings(settings, model.pyfunc_batchable),
            executor=self._model_thread,
            observer=metrics.observer("pyfunc"),
        )
        metrics.model_load.set(model.load_seconds)
        self._v2 = v2.OpenInference(
            settings=settings,
            model=model,
            metrics=metrics,
            native=self._native,
            pyfunc=self._pyfunc,
            not_ready=self._not_ready,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifecycle ---------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if self._native is not None:
            self._native.start()
        self._pyfunc.start()
        lifecycle.on_sigterm(self._begin_drain, self.settings.drain_delay_s)
        lifecycle.freeze_heap()
        self.ready = True

    async def shutdown(self) -> None:
        self.ready = False
        if self._native is not None:
            await self._native.stop()
        await self._pyfunc.stop()
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    def _begin_drain(self) -> None:
        if not self.draining:
            logger.info("SIGTERM: readiness is now false; finishing in-flight requests")
        self.draining = True

    # -- routing -----------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith("/v2") and scope["path"][3:4] in ("", "/"):
            await self._v2_http(scope, receive, send)
            return
        path = scope["path"].encode()
        route = _ROUTES.get(path)
        if route is None and path.endswith(b"/") and path.rstrip(b"/") in _ROUTES:
            # FastAPI (MLflow's server) redirects "/ping/" to "/ping" with a 307,
            # which keeps the method and body; clients that rely on it keep working.
            await self._redirect(scope, send, path.rstrip(b"/"))
            return
        if route is None:
            self.metrics.count("other", 404)
            await respond(send, 404, _NOT_FOUND, headers(JSON, _NOT_FOUND))
            return
        endpoint, method = route
        if scope["method"].encode() != method:
            self.metrics.count(endpoint, 405)
            await respond(send, 405, _NOT_ALLOWED, headers(JSON, _NOT_ALLOWED, [(b"allow", method)]))
            return
        if not await self._authorized(scope, send, endpoint, v2_body=False):
            return
        if endpoint == "invocations":
            await self._invocations(scope, receive, send)
            return
        if endpoint in ("ping", "health"):
            status, content_type, body = self._ping()
        elif endpoint == "version":
            status, content_type, body = 200, JSON, MLFLOW_VERSION.encode()
        else:
            status, content_type, body = 200, METRICS_CONTENT_TYPE, self.metrics.exposition()
        self.metrics.count(endpoint, status)
        await respond(send, status, body, headers(content_type, body))

    async def _v2_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = v2.resolve(scope["path"])
        if route is None:
            self.metrics.count("other", 404)
            body = error_body(
                f"Not found: {scope['path']} is not an endpoint of the Open Inference Protocol."
            )
            await respond(send, 404, body, headers(JSON, body))
            return
        if scope["method"].encode() != route.method:
            self.metrics.count(route.endpoint, 405)
            body = error_body(f"Method not allowed: {scope['path']} takes {route.method.decode()}.")
            await respond(send, 405, body, headers(JSON, body, [(b"allow", route.method)]))
            return
        if await self._authorized(scope, send, route.endpoint, v2_body=True):
            await self._v2.handle(route, scope, receive, send)

    async def _authorized(self, scope: Scope, send: Send, endpoint: str, *, v2_body: bool) -> bool:
        """Whether the request may go on; if not, it has been answered 401."""
        if self._token is None or endpoint not in PROTECTED:
            return True
        authorization = header(scope, b"authorization")
        if self._token.allows(authorization):
            return True
        # Refused before the body is read: an unauthenticated client costs no work.
        error = self._token.refusal(authorization)
        self.metrics.count(endpoint, error.status)
        content_type, body = (
            (JSON, error_body(error.message)) if v2_body else (error.content_type, error.body)
        )
        await respond(send, error.status, body, headers(content_type, body, error.extra_headers + CLOSE))
        return False

    async def _redirect(self, scope: Scope, send: Send, path: bytes) -> None:
        host = header(scope, b"host")
        scheme = scope.get("scheme", "http").encode()
        location = (scheme + b"://" + host + path) if host else path
        if scope.get("query_string"):
            location += b"?" + scope["query_string"]
        self.metrics.count("other", 307)
        await respond(send, 307, b"", [(b"location", location), (b"content-length", b"0")])

    def _not_ready(self) -> str | None:
        """Why the server is not ready, or None when it is (/ping and /v2/health/ready)."""
        if self.ready and not self.draining:
            return None
        return "draining: the server is shutting down" if self.draining else "starting"

    def _ping(self) -> tuple[int, bytes, bytes]:
        reason = self._not_ready()
        if reason is None:
            return 200, JSON, b"\n"
        error = NotReady(f"Not ready ({reason}).")
        return error.status, JSON, error.body

    # -- scoring -----------------------------------------------------------

    async def _invocations(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight.inc()
        status = 500
        try:
            try:
                async with asyncio.timeout(self.settings.timeout_s):
                    body = await self._score(scope, receive)
                status, response_headers = 200, headers(JSON, body)
            except ServingError as error:
                status, body = error.status, error.body
                close = CLOSE if isinstance(error, PayloadTooLarge) else []
                response_headers = headers(error.content_type, body, error.extra_headers + close)
            except MlflowException as error:
                status, body = error.get_http_status_code(), error.serialize_as_json().encode()
                response_headers = headers(JSON, body)
            except TimeoutError:
                deadline = DeadlineExceeded(
                    "Request processing time exceeded limit "
                    f"({self.settings.timeout_s:g} s; raise it with -t/--timeout)."
                )
                status, body, response_headers = deadline.status, deadline.body, headers(JSON, deadline.body)
            except ClientDisconnected:
                status = 499  # nginx's code for it, in the metrics only
                return
            except Exception:
                logger.exception("Unexpected error while scoring a request")
                status, body = 500, b'{"error_code": "INTERNAL_ERROR", "message": "Internal error"}'
                response_headers = headers(JSON, body)
            await respond(send, status, body, response_headers)
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)
            metrics.count("invocations", status)

    async def _score(self, scope: Scope, receive: Receive) -> bytes:
        content_type = header(scope, b"content-type")
        if content_type == b"application/json":
            mime = generic.JSON
        else:
            mime = generic.media_type(None if content_type is None else content_type.decode("latin-1"))
        body = await read_body(scope, receive, self.settings.max_body_bytes)

        if mime is generic.JSON and self._native is not None:
            if len(body) <= _INLINE_DECODE_BYTES:
                matrix = self._decode(body)
            else:
                matrix = await asyncio.get_running_loop().run_in_executor(None, self._decode, body)
            if matrix is not None:
                return await self._native.submit(Job(matrix), len(matrix))

        parsed = await asyncio.get_running_loop().run_in_executor(None, self._parse, body, mime)
        job = Job(parsed, MLFLOW_UNWRAPPED if parsed.unwrapped else MLFLOW)
        return await self._pyfunc.submit(job, _row_count(parsed.data), batch_key(parsed))

    def _parse(self, body: bytes, mime: str) -> generic.ParsedRequest:
        model = self.model
        try:
            return generic.parse(
                body,
                mime,
                model.pyfunc,
                model.input_schema,
                accept_legacy_split=self.settings.accept_legacy_split,
            )
        # MLflow's parser lets these escape, and its server answers 500: a client's
        # body nested thousands deep (Python's json recurses) or an integer of
        # more than 4,300 digits (Python's limit on converting one) is bad input.
        except RecursionError as exc:
            raise MlflowInvalidInputException("The JSON document is nested too deeply to be parsed.") from exc
        except ValueError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise MlflowInvalidInputException(
                f"The body could not be parsed: {type(exc).__name__}: {first_line}"
            ) from exc

    def _decode(self, body: bytes) -> np.ndarray | None:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None  # MLflow's parser words the error
        return decode_matrix(document, self._signature, accept_legacy_split=self.settings.accept_legacy_split)
