"""Shutdown: readiness turns false before the server stops accepting work.

uvicorn stops listening as soon as it receives SIGTERM. Behind a load balancer
that is too early: endpoints are removed asynchronously, so requests still
arrive for a moment and fail. With a drain delay, SIGTERM first makes /ping
answer 503 while requests are still served; uvicorn's graceful shutdown
(finish in-flight requests, then exit) starts only when the delay is over.

uvicorn installs its own SIGTERM handler while it serves; ``on_sigterm`` wraps
it from inside the app's startup, so both the single-process server and every
worker process behave the same way.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import Callable
from types import FrameType


def on_sigterm(begin_drain: Callable[[], None], delay_s: float) -> None:
    """Call ``begin_drain`` on SIGTERM, then hand the signal to the server after ``delay_s``."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals only reach the main thread (tests may run the app elsewhere)
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return
    loop = asyncio.get_running_loop()

    def handle(signum: int, frame: FrameType | None) -> None:
        begin_drain()
        if delay_s > 0:
            loop.call_soon_threadsafe(loop.call_later, delay_s, previous, signum, None)
        else:
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handle)


def exit_quietly_after_signals() -> None:
    """Make SIGTERM and SIGINT no-ops once the server has shut down gracefully.

    uvicorn re-raises the signal that stopped it after its graceful shutdown,
    so that the default action runs: for SIGTERM that kills the process, which
    then exits with status 143 instead of 0. With these handlers the process
    returns from ``run`` and exits 0, as a drained server should.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)


def freeze_heap() -> None:
    """Exclude everything loaded so far (libraries, the model) from garbage collection.

    A loaded MLflow model drags in about a million long-lived Python objects
    (pandas, MLflow, the flavor's library). Each full collection walks all of
    them, which stalls the event loop for tens of milliseconds and shows up as
    the p99 latency. Frozen objects are never freed, and never walked again.
    """
    gc.collect()
    gc.freeze()
