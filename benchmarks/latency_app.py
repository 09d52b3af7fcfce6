"""A server whose latency is known: each request waits a uniform draw between
LATENCY_LOW_MS and LATENCY_HIGH_MS (default 35-185 ms, so p50 110, p99 183.5,
p99.9 184.85 ms) and answers a one-row prediction. ``GET /truth`` returns the
percentiles of the waits it actually made (the event loop's timers round each
up by up to a millisecond), ``POST /truth/reset`` forgets them.

    python -m uvicorn latency_app:app --app-dir benchmarks --port 8000
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import numpy as np

LOW_S = float(os.environ.get("LATENCY_LOW_MS", "35")) / 1000
HIGH_S = float(os.environ.get("LATENCY_HIGH_MS", "185")) / 1000
BODY = b'{"predictions": [5.999086856842041]}'
_waits: list[float] = []


async def _reply(send, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    if scope["path"] == "/truth":
        if scope["method"] == "POST":
            _waits.clear()
            await _reply(send, b"{}")
            return
        waits = np.array(_waits) * 1000
        quantiles = {"p50": 50, "p95": 95, "p99": 99, "p999": 99.9}
        truth = {name: float(np.percentile(waits, q)) for name, q in quantiles.items()} if len(waits) else {}
        await _reply(send, json.dumps({**truth, "count": len(waits)}).encode())
        return
    started = time.perf_counter()
    await asyncio.sleep(random.uniform(LOW_S, HIGH_S))
    _waits.append(time.perf_counter() - started)
    await _reply(send, BODY)
