"""The protocol's error answers: a 4xx with ``{"error": "..."}``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from mlscale.protocol.errors import ServingError

if TYPE_CHECKING:  # mlflow is heavy to import; the schema comes from an already loaded model
    pass


class V2Error(ServingError):
    """An error answered with the protocol's body, ``{"error": "..."}``."""

    status = 400
    error_code = "BAD_REQUEST"

    @property
    def body(self) -> bytes:
        return error_body(self.message)


class ModelNotFound(V2Error):
    status = 404
    error_code = "NOT_FOUND"


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
