"""Small HTTP servers with known behaviour, for the load tester's tests.

``FAKE_MODE`` picks the behaviour: ``uniform`` sleeps a uniform 20-120 ms and
remembers each draw (``GET /truth`` gives their percentiles); ``stall`` holds
every request that arrives in the last second of each four-second cycle until
the cycle ends; ``error`` answers 500. Every mode counts what it answers
(``GET /count``). Run with ``python -m uvicorn tests.support.fake_servers:app``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import numpy as np

MODE = os.environ.get("FAKE_MODE", "uniform")
_draws: list[float] = []
_count = [0]


async def _reply(send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    if scope["path"] == "/count":
        await _reply(send, 200, json.dumps({"count": _count[0]}).encode())
        return
    if scope["path"] == "/truth":
        draws = np.array(_draws) * 1000
        truth = {f"p{q}": float(np.percentile(draws, q)) for q in (50, 95, 99)} if len(draws) else {}
        await _reply(send, 200, json.dumps(truth).encode())
        return
    if MODE == "uniform":
        delay = random.uniform(0.020, 0.120)
        _draws.append(delay)
        await asyncio.sleep(delay)
    elif MODE == "stall":
        phase = time.time() % 4
        if phase >= 3:
            await asyncio.sleep(4 - phase)
    _count[0] += 1
    if MODE == "error":
        await _reply(send, 500, b'{"error_code": "INTERNAL_ERROR"}')
    else:
        await _reply(send, 200, b'{"predictions": [1.0]}')
