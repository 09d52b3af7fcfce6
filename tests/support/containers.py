"""Helpers for the tests that build and run real containers.

They skip, saying why, only where no engine can run a container; an engine that
runs containers but fails to build the project's images fails the tests.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence

import pytest

from mlscale.containers.engine import Engine, find_engine
from mlscale.errors import ContainerError

_engine: Engine | None = None
_why_not: str | None = None


def engine_or_skip() -> Engine:
    """The machine's engine, once it has shown that it runs a container."""
    global _engine, _why_not
    if _engine is None and _why_not is None:
        try:
            engine = find_engine()
        except ContainerError as exc:
            _why_not = str(exc)
        else:
            from mlscale.containers.base import DEFAULT_BASE, resolve_base

            try:
                base = resolve_base(engine, DEFAULT_BASE, say=lambda line: None)
                engine.run("run", "--rm", "--network", "none", base, "true", timeout=120)
                _engine = engine
            except ContainerError as exc:
                _why_not = f"{engine.name} cannot run a container here: {exc}"
    if _engine is None:
        pytest.skip(f"no container engine can run a container: {_why_not}")
    return _engine


@contextlib.contextmanager
def container(engine: Engine, image: str, *args: str, options: Sequence[str] = ()) -> Iterator[str]:
    """``engine run -d`` a uniquely named container; removed on the way out."""
    name = f"mlscale-test-{uuid.uuid4().hex[:10]}"
    engine.run("run", "-d", "--name", name, *options, image, *args, timeout=120)
    try:
        yield name
    finally:
        engine.run("rm", "-f", "-t", "2", name, check=False, timeout=60)


def published_port(engine: Engine, name: str, container_port: int) -> int:
    """The host port that ``-p 127.0.0.1::PORT`` picked."""
    out = engine.run("port", name, f"{container_port}/tcp").stdout.strip().splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def wait_http(url: str, *, engine: Engine, name: str, timeout_s: float = 90) -> float:
    """Poll ``url`` until it answers 200; returns the seconds it took. Fails with
    the container's log when it exits or the time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        state = engine.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        if state.stdout.strip() == "false":
            break
        time.sleep(0.1)
    logs = engine.run("logs", name, check=False)
    pytest.fail(
        f"{url} did not answer 200 within {timeout_s} s; container log:\n"
        f"{(logs.stdout + logs.stderr)[-3000:]}"
    )


def post_json(url: str, body: object, timeout_s: float = 30) -> tuple[int, object]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
