"""The generator's HTTP client: prebuilt requests on keep-alive connections.

A load generator's own cost per request is what limits how many users one
core can drive, and every microsecond it spends between the answer's arrival
and its timestamp is latency it reports that the server never added. Locust's
FastHttpUser pays, on every request, for a fresh request head (header merging
and a regular expression per header) and for a connection pool's liveness
check (a ``select`` on the idle socket, with its gevent watcher). Here the head
of each request body is written once, at start-up, and a request is one
``sendall`` and geventhttpclient's C parser reading the answer on the user's
own connection, as FastHttpUser's users each have one: FastHttpUser costs 2.3
(64 users) to 3.6 (10,000 users) times as much per request
(``benchmarks/loadgen_bench.py``).

Run inside Locust's gevent-patched processes only (the locustfile imports it).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlsplit

import gevent.socket
from geventhttpclient.response import HTTPConnectionClosed, HTTPSocketResponse

# FastHttpUser's defaults: a server that takes longer than this is reported as failing.
CONNECT_TIMEOUT_S = 60.0
NETWORK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Target:
    """Where requests go: the address to connect to and the request's target path."""

    host: str
    port: int
    tls: bool
    host_header: str
    base_path: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a target must be an http:// or https:// URL, not {url!r}")
        tls = parts.scheme == "https"
        default = 443 if tls else 80
        port = parts.port or default
        # The Host header keeps IPv6 brackets and a port that is not the scheme's own.
        name = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        host_header = name if port == default else f"{name}:{port}"
        return cls(parts.hostname, port, tls, host_header, parts.path.rstrip("/"))


def build_request(target: Target, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 POST, head and body, ready to send as many times as needed."""
    lines = [f"POST {target.base_path}{path} HTTP/1.1", f"Host: {target.host_header}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@cache
def _tls_context() -> ssl.SSLContext:
    # One for the process: loading the CA bundle for each of 10,000 users would not do.
    return ssl.create_default_context()


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


class Connection:
    """One keep-alive connection to the target, opened on first use and again
    whenever the server closed it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._sock: gevent.socket.socket | None = None

    def _connect(self) -> gevent.socket.socket:
        sock = gevent.socket.create_connection(
            (self.target.host, self.target.port), timeout=CONNECT_TIMEOUT_S
        )
        # Requests are one write each; Nagle would hold a second small one back.
        sock.setsockopt(gevent.socket.IPPROTO_TCP, gevent.socket.TCP_NODELAY, 1)
        if self.target.tls:
            sock = _tls_context().wrap_socket(sock, server_hostname=self.target.host)
        sock.settimeout(NETWORK_TIMEOUT_S)
        return sock

    def send(self, request: bytes) -> Answer:
        """Send ``request`` and read the whole answer.

        A reused connection that the server closed while it sat idle (its
        keep-alive timeout) answers nothing at all; that request never reached
        the server, so it is sent once more on a new connection, as HTTP
        clients do. Any other error is the caller's to count.
        """
        reused = self._sock is not None
        sock = self._sock or self._connect()
        self._sock = None
        try:
            sock.sendall(request)
            response = HTTPSocketResponse(sock, method="POST")
            body = response.read()
        except (HTTPConnectionClosed, ConnectionResetError, BrokenPipeError):
            sock.close()
            if reused:
                return self.send(request)
            raise
        except BaseException:
            sock.close()
            raise
        if response.should_close():
            sock.close()
        else:
            self._sock = sock
        return Answer(response.status_code, body)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ConnectionPool:
    """Idle connections for the open loop, where requests overlap: each request
    takes one (or opens one) and gives it back when its answer is read. The
    dispatcher bounds how many are in flight, so this needs no bound of its own."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._idle: list[Connection] = []

    def send(self, request: bytes) -> Answer:
        connection = self._idle.pop() if self._idle else Connection(self.target)
        try:
            answer = connection.send(request)
        except BaseException:
            connection.close()
            raise
        self._idle.append(connection)
        return answer

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
