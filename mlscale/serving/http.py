"""uvicorn's HTTP/1.1 protocol (httptools), with the limits a server on an open port needs.

As shipped, uvicorn's httptools protocol keeps a request's headers in memory
without any limit (100,000 headers, 1.2 MB each way, cost a worker 180 MB that
it kept after the clients left), waits forever for a request head that never
completes, and closes the connection as soon as the client half-closes it, so a
client that shuts down its sending side after a whole request never gets the
answer. This subclass:

* bounds the request head (URL and headers) to ``MAX_HEAD_BYTES``: past it the
  client gets 431 and the connection is closed;
* closes a connection whose request head is not complete within the keep-alive
  timeout of its opening or of its last answer (a slow-header client holds a
  socket only that long, like an idle keep-alive one);
* after a half-close, answers the requests that arrived whole, then closes.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# nginx reads heads of up to 4 x 8 KB by default, h11 in uvicorn 16 KB: 64 KB leaves
# room for long tokens and cookies while bounding a connection's cost.
MAX_HEAD_BYTES = 64 * 1024

_431_BODY = (
    b'{"error_code": "BAD_REQUEST", "message": "The request head (URL and headers) is larger '
    b'than %d bytes."}' % MAX_HEAD_BYTES
)
_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n" % len(_431_BODY)
) + _431_BODY


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop httptools; uvicorn then answers through
    ``send_400_response``, which answers 431 instead."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The request head being read: its parsed fields, and the bytes read while
        # it is unfinished (httptools accumulates a header that spans several
        # reads before any callback sees it). Either past the limit: 431.
        self._head_fields = 0
        self._head_read = 0
        self._in_head = False
        self._head_too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._client_done = False  # the client half-closed: no more requests will come

    # -- head size ---------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_read += len(data)
            if self._head_read > MAX_HEAD_BYTES:
                self._reject_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_fields = self._head_read = 0
        self._in_head = True
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def _count_head(self, size: int) -> None:
        self._head_fields += size
        if self._head_fields > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise _HeadTooLarge()

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self._reject_head()
        else:
            super().send_400_response(msg)

    def _reject_head(self) -> None:
        self._in_head = False
        self.transport.write(_431)
        self.transport.close()

    # -- head timeout ------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.timeout_keep_alive, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined head waits behind a running request
        elif not self.transport.is_closing():
            self.transport.close()

    # -- half-close --------------------------------------------------------

    # asyncio.Protocol's eof_received may return True (keep the transport open for writing);
    # uvicorn annotates its own as returning None only.
    def eof_received(self) -> bool | None:  # type: ignore[override]
        """Keep the connection open for the answers to requests that arrived whole."""
        self._client_done = True
        self._cancel_head_timer()
        cycle = self.cycle
        waiting = cycle is not None and not cycle.response_complete and not cycle.more_body
        # A true value keeps the transport open for writing; None closes it now,
        # and the app sees the client leave (an unfinished request has no answer).
        return True if waiting or self.pipeline else None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete
        if self._client_done and idle and not self.pipeline and not self.transport.is_closing():
            self.transport.close()
