"""The generator's HTTP client against a real HTTP/1.1 server on loopback: one
keep-alive connection per user, reopened when the server closes it, and errors
raised for the caller to count."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from geventhttpclient.response import HTTPConnectionClosed

from mlscale.loadtest.client import Connection, ConnectionPool, Target, build_request


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless told otherwise

    def do_POST(self) -> None:
        server = self.server
        mode = server.mode  # read once: the test may change it as soon as the answer is out
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.seen.append((self.client_address[1], self.path, self.headers["Host"], body))
        if mode == "hang-up":
            self.close_connection = True
            return  # no answer at all
        answer = b'{"predictions": [1.0]}'
        self.send_response(200 if mode != "error" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        if mode == "close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(answer)
        if mode == "drop-idle":
            # Answered as keep-alive, then closed, as a server's keep-alive timeout does.
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.seen, server.mode = [], "ok"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _target(server, path: str = "") -> Target:
    return Target.from_url(f"http://127.0.0.1:{server.server_address[1]}{path}")


def test_a_user_keeps_one_connection_and_the_request_arrives_whole(http_server):
    target = _target(http_server, "/prefix/")
    request = build_request(target, "/invocations", b'{"a": 1}', {"Content-Type": "application/json"})
    connection = Connection(target)
    answers = [connection.send(request) for _ in range(5)]
    connection.close()
    assert [a.status for a in answers] == [200] * 5
    assert answers[0].body == b'{"predictions": [1.0]}'
    ports = {port for port, *_ in http_server.seen}
    assert len(ports) == 1, "a keep-alive connection is reused"
    _, path, host, body = http_server.seen[0]
    assert (path, host, body) == ("/prefix/invocations", f"127.0.0.1:{target.port}", b'{"a": 1}')


def test_a_connection_the_server_closes_is_reopened_without_a_failure(http_server):
    target = _target(http_server)
    request = build_request(target, "/invocations", b"{}", {})
    connection = Connection(target)
    http_server.mode = "close"
    assert connection.send(request).status == 200
    http_server.mode = "ok"
    assert connection.send(request).status == 200
    assert len({port for port, *_ in http_server.seen}) == 2
    connection.close()


def test_a_kept_connection_that_went_stale_is_retried_once_on_a_new_one(http_server):
    target = _target(http_server)
    request = build_request(target, "/invocations", b"{}", {})
    connection = Connection(target)
    http_server.mode = "drop-idle"
    assert connection.send(request).status == 200
    http_server.mode = "ok"
    assert connection.send(request).status == 200  # not a failure: sent again on a new connection
    assert len(http_server.seen) == 2, "the stale connection never delivered the request"
    assert len({port for port, *_ in http_server.seen}) == 2
    connection.close()


def test_an_error_status_is_an_answer_and_a_hang_up_is_raised(http_server):
    target = _target(http_server)
    request = build_request(target, "/invocations", b"{}", {})
    http_server.mode = "error"
    connection = Connection(target)
    assert connection.send(request).status == 503
    connection.close()
    # A fresh connection that the server drops without a byte: an error to count,
    # not retried (only a reused connection that went stale is retried).
    http_server.mode = "hang-up"
    with pytest.raises(HTTPConnectionClosed):
        Connection(target).send(request)
    assert len(http_server.seen) == 2


def test_the_open_loop_pool_opens_what_overlapping_requests_need(http_server):
    import gevent

    target = _target(http_server)
    request = build_request(target, "/invocations", b"{}", {})
    pool = ConnectionPool(target)
    answers = [g.value for g in gevent.joinall([gevent.spawn(pool.send, request) for _ in range(4)])]
    assert [a.status for a in answers] == [200] * 4
    assert pool.send(request).status == 200  # an idle connection is reused
    assert 1 <= len({port for port, *_ in http_server.seen}) <= 4
    pool.close()


@pytest.mark.parametrize(
    ("url", "host_header", "port", "base"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", 8080, ""),
        ("http://[::1]:8080/api/", "[::1]:8080", 8080, "/api"),
        ("https://models.example.com", "models.example.com", 443, ""),
    ],
)
def test_targets_from_urls(url, host_header, port, base):
    target = Target.from_url(url)
    assert (target.host_header, target.port, target.base_path) == (host_header, port, base)
    head = build_request(target, "/invocations", b"xy", {}).split(b"\r\n")
    assert head[0] == f"POST {base}/invocations HTTP/1.1".encode()
    assert f"Host: {host_header}".encode() in head and b"Content-Length: 2" in head


def test_a_url_without_scheme_is_refused():
    with pytest.raises(ValueError, match="http:// or https://"):
        Target.from_url("127.0.0.1:8080")
