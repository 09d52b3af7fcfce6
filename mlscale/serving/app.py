"""The ASGI application: MLflow's scoring endpoints, thin, over the batchers.

A plain ASGI callable rather than a framework: every microsecond of routing
and request wrapping is paid on each of thousands of requests per second per
core, and the server has five fixed routes. Handlers only read the request,
pick the path (native fast path or MLflow's generic one) and write the answer.

Endpoints (as ``mlflow models serve``): ``POST /invocations``, ``GET /ping``,
``GET /health``, ``GET /version``; plus ``GET /metrics`` (Prometheus).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

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
from mlscale.serving import lifecycle
from mlscale.serving.auth import PROTECTED, BearerToken
from mlscale.serving.batcher import Batcher, BatchSettings
from mlscale.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mlscale.serving.metrics import Metrics
from mlscale.serving.predict import batch_key, native_batch, pyfunc_batch
from mlscale.serving.settings import ServeSettings

logger = logging.getLogger("mlscale.serving")

# ASGI's callables, as uvicorn calls the app: a scope and messages are dicts whose keys
# depend on their "type" (the ASGI specification), read here by key.
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

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
# On an answer given before the body was read: otherwise the server would go on
# reading, and dropping, whatever the client still sends (up to its Content-Length).
_CLOSE = [(b"connection", b"close")]
_NOT_ALLOWED = b'{"detail":"Method Not Allowed"}'


def _headers(content_type: bytes, body: bytes, extra: Headers | None = None) -> Headers:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    return headers + extra if extra else headers


async def _respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    headers: Headers = scope["headers"]
    for key, value in headers:
        if key == name:
            return value
    return None


def _batch_settings(settings: ServeSettings, mergeable: bool) -> BatchSettings:
    """One request per predict call when merging could change an answer's last bit."""
    return settings.batch if mergeable else replace(settings.batch, max_batch_rows=1)


class ClientDisconnected(Exception):
    """The client went away before its body arrived: there is no one to answer."""


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
        self._native: Batcher[np.ndarray, bytes] | None = None
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
        path = scope["path"].encode()
        route = _ROUTES.get(path)
        if route is None and path.endswith(b"/") and path.rstrip(b"/") in _ROUTES:
            # FastAPI (MLflow's server) redirects "/ping/" to "/ping" with a 307,
            # which keeps the method and body; clients that rely on it keep working.
            await self._redirect(scope, send, path.rstrip(b"/"))
            return
        if route is None:
            self.metrics.count("other", 404)
            await _respond(send, 404, _NOT_FOUND, _headers(JSON, _NOT_FOUND))
            return
        endpoint, method = route
        if scope["method"].encode() != method:
            self.metrics.count(endpoint, 405)
            headers = _headers(JSON, _NOT_ALLOWED, [(b"allow", method)])
            await _respond(send, 405, _NOT_ALLOWED, headers)
            return
        if self._token is not None and endpoint in PROTECTED:
            authorization = _header(scope, b"authorization")
            if not self._token.allows(authorization):
                # Refused before the body is read: an unauthenticated client costs no work.
                error = self._token.refusal(authorization)
                self.metrics.count(endpoint, error.status)
                headers = _headers(error.content_type, error.body, error.extra_headers + _CLOSE)
                await _respond(send, error.status, error.body, headers)
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
        await _respond(send, status, body, _headers(content_type, body))

    async def _redirect(self, scope: Scope, send: Send, path: bytes) -> None:
        host = _header(scope, b"host")
        scheme = scope.get("scheme", "http").encode()
        location = (scheme + b"://" + host + path) if host else path
        if scope.get("query_string"):
            location += b"?" + scope["query_string"]
        self.metrics.count("other", 307)
        await _respond(send, 307, b"", [(b"location", location), (b"content-length", b"0")])

    def _ping(self) -> tuple[int, bytes, bytes]:
        if self.ready and not self.draining:
            return 200, JSON, b"\n"
        reason = "draining: the server is shutting down" if self.draining else "starting"
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
                status, headers = 200, _headers(JSON, body)
            except ServingError as error:
                status, body = error.status, error.body
                close = _CLOSE if isinstance(error, PayloadTooLarge) else []
                headers = _headers(error.content_type, body, error.extra_headers + close)
            except MlflowException as error:
                status, body = error.get_http_status_code(), error.serialize_as_json().encode()
                headers = _headers(JSON, body)
            except TimeoutError:
                deadline = DeadlineExceeded(
                    "Request processing time exceeded limit "
                    f"({self.settings.timeout_s:g} s; raise it with -t/--timeout)."
                )
                status, body, headers = deadline.status, deadline.body, _headers(JSON, deadline.body)
            except ClientDisconnected:
                status = 499  # nginx's code for it, in the metrics only
                return
            except Exception:
                logger.exception("Unexpected error while scoring a request")
                status, body = 500, b'{"error_code": "INTERNAL_ERROR", "message": "Internal error"}'
                headers = _headers(JSON, body)
            await _respond(send, status, body, headers)
        finally:
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - started)
            metrics.count("invocations", status)

    async def _score(self, scope: Scope, receive: Receive) -> bytes:
        content_type = _header(scope, b"content-type")
        if content_type == b"application/json":
            mime = generic.JSON
        else:
            mime = generic.media_type(None if content_type is None else content_type.decode("latin-1"))
        body = await self._read_body(scope, receive)

        if mime is generic.JSON and self._native is not None:
            if len(body) <= _INLINE_DECODE_BYTES:
                matrix = self._decode(body)
            else:
                matrix = await asyncio.get_running_loop().run_in_executor(None, self._decode, body)
            if matrix is not None:
                return await self._native.submit(matrix, len(matrix))

        parsed = await asyncio.get_running_loop().run_in_executor(None, self._parse, body, mime)
        return await self._pyfunc.submit(parsed, _row_count(parsed.data), batch_key(parsed))

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

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(int(declared))
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise self._too_large(len(body))
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self._too_large(size)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The request body ({size} bytes) is larger than the limit of "
            f"{self.settings.max_body_bytes} bytes. Send fewer rows per request, or raise "
            "the limit with --max-body-size."
        )
