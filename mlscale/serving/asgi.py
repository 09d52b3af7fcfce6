"""The ASGI plumbing both protocols' endpoints share: types, answers, headers, the body.

uvicorn calls the app with a scope and two channels; a scope and messages are
dicts whose keys depend on their "type" (the ASGI specification), read here by
key. Kept apart from the app so that the MLflow endpoints (``app``) and the Open
Inference Protocol's (``v2``) use one body reader, with one size limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mlscale.protocol.errors import PayloadTooLarge

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# On an answer given before the body was read: otherwise the server would go on
# reading, and dropping, whatever the client still sends (up to its Content-Length).
CLOSE = [(b"connection", b"close")]


class ClientDisconnected(Exception):
    """The client went away before its body arrived: there is no one to answer."""


def headers(content_type: bytes, body: bytes, extra: Headers | None = None) -> Headers:
    plain = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    return plain + extra if extra else plain


async def respond(send: Send, status: int, body: bytes, response_headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


def header(scope: Scope, name: bytes) -> bytes | None:
    request_headers: Headers = scope["headers"]
    for key, value in request_headers:
        if key == name:
            return value
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; ``PayloadTooLarge`` past ``limit`` bytes, declared or sent."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(len(body), limit)
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
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body ({size} bytes) is larger than the limit of "
        f"{limit} bytes. Send fewer rows per request, or raise "
        "the limit with --max-body-size."
    )
