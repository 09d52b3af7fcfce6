"""Errors the scoring server answers with, and their bodies.

Rejections that MLflow also makes are produced by MLflow's own code on the
generic path, so their text is MLflow's. The errors here are the ones where
mlscale is better than MLflow on purpose: a body limit (413), a missing
Content-Type (415 instead of a 500), a full queue (503 with ``Retry-After``),
and a timeout (504 with an error JSON instead of plain text).
"""

from __future__ import annotations

import orjson

from mlscale.errors import MlscaleError

JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"


class ServingError(MlscaleError):
    """An error answered to the client; ``status`` and ``body`` are the response.

    Part of mlscale's one error tree, but it never reaches the command line: the
    server answers it (``status``, ``body``, ``extra_headers``) and carries on.
    """

    status: int = 500
    error_code: str = "INTERNAL_ERROR"
    content_type: bytes = JSON

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def body(self) -> bytes:
        return orjson.dumps({"error_code": self.error_code, "message": self.message})

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        """Headers beyond content-type and content-length."""
        return []


class PayloadTooLarge(ServingError):
    status = 413
    error_code = "MAX_READ_SIZE_EXCEEDED"


class UnsupportedMediaType(ServingError):
    """415 with a plain-text body, like MLflow's own content-type rejections."""

    status = 415
    error_code = "BAD_REQUEST"
    content_type = TEXT

    @property
    def body(self) -> bytes:
        return self.message.encode()


class Overloaded(ServingError):
    """The request queue is full: come back later instead of waiting unboundedly."""

    status = 503
    error_code = "TEMPORARILY_UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def extra_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]


class DeadlineExceeded(ServingError):
    status = 504
    error_code = "DEADLINE_EXCEEDED"


class NotReady(ServingError):
    status = 503
    error_code = "TEMPORARILY_UNAVAILABLE"
