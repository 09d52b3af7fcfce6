"""Micro-batching: concurrent requests become one predict call.

Per-call overhead dominates small predictions (an XGBoost call costs about the
same for one row as for sixteen), so requests that wait while the model is
busy are merged into the next call. With ``max_wait_s = 0`` a lone request is
never held back: batches form only from requests that arrived while the
previous call ran, so batching costs nothing at low load and grows with load.
A positive ``max_wait_s`` holds a batch open that long to gather more.

The queue is bounded (``max_queue`` requests): past it, ``submit`` raises
``Overloaded`` at once rather than letting latency grow without limit. A
request cancelled while queued (its deadline passed, its client left) is
dropped before it reaches the model.

The batch function is pure with respect to the queue: it takes the payloads
and returns one outcome per payload, a value or an exception instance.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

from mlscale.protocol.errors import Overloaded

Payload = TypeVar("Payload")
Outcome = TypeVar("Outcome")
# Payloads in, one outcome per payload out: a value, or the exception its request raises.
BatchFunction = Callable[[Sequence[Payload]], Sequence[Outcome | BaseException]]


@dataclass(frozen=True, kw_only=True)
class BatchSettings:
    max_batch_rows: int = 256
    max_wait_s: float = 0.0
    max_queue: int = 1024


@dataclass(slots=True)
class _Pending(Generic[Payload, Outcome]):
    payload: Payload
    rows: int
    key: Hashable
    future: asyncio.Future[Outcome]
    enqueued: float


class BatchObserver:
    """Hooks for metrics; the default records nothing."""

    def queue_wait(self, seconds: float) -> None: ...

    def batch(self, requests: int, rows: int, seconds: float) -> None: ...


class Batcher(Generic[Payload, Outcome]):
    def __init__(
        self,
        predict_batch: BatchFunction[Payload, Outcome],
        settings: BatchSettings,
        *,
        executor: Executor | None = None,
        inline_max_rows: int = 0,
        observer: BatchObserver | None = None,
    ) -> None:
        self._predict_batch = predict_batch
        self._settings = settings
        # Batches of at most ``inline_max_rows`` rows (all of them without an
        # executor) run on the event loop: cheaper for tiny calls, but the loop
        # waits for them. Larger batches run in the executor.
        self._executor = executor
        self._inline_max_rows = inline_max_rows if executor is not None else None
        self._observer = observer or BatchObserver()
        self._queue: collections.deque[_Pending[Payload, Outcome]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mlscale-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.cancel()
        self._queue.clear()

    async def submit(self, payload: Payload, rows: int, key: Hashable = None) -> Outcome:
        """Queue one request and wait for its outcome; raises what the model raised."""
        if len(self._queue) >= self._settings.max_queue:
            raise Overloaded(
                f"The server is at capacity ({self._settings.max_queue} requests queued). "
                "Retry after the delay in Retry-After, or add replicas."
            )
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(payload, rows, key, future, time.perf_counter()))
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take_batch()
            if not batch:
                continue
            if self._settings.max_wait_s > 0:
                batch = await self._gather_more(batch)
            await self._execute(batch)

    def _take_batch(
        self, batch: list[_Pending[Payload, Outcome]] | None = None
    ) -> list[_Pending[Payload, Outcome]]:
        """Pop requests from the front while they share a key and fit the row budget."""
        batch = batch or []
        rows = sum(p.rows for p in batch)
        queue = self._queue
        while queue:
            pending = queue[0]
            if pending.future.done():  # cancelled while queued: drop its work
                queue.popleft()
                continue
            if batch and (pending.key != batch[0].key or rows + pending.rows > self._settings.max_batch_rows):
                break
            queue.popleft()
            batch.append(pending)
            rows += pending.rows
        return batch

    async def _gather_more(self, batch: list[_Pending[Payload, Outcome]]) -> list[_Pending[Payload, Outcome]]:
        deadline = batch[0].enqueued + self._settings.max_wait_s
        while sum(p.rows for p in batch) < self._settings.max_batch_rows:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            before = len(batch)
            batch = self._take_batch(batch)
            if len(batch) == before and self._queue:
                break  # the next request cannot join this batch
        return batch

    async def _execute(self, batch: list[_Pending[Payload, Outcome]]) -> None:
        live = [p for p in batch if not p.future.done()]
        if not live:
            return
        started = time.perf_counter()
        for pending in live:
            self._observer.queue_wait(started - pending.enqueued)
        payloads = [p.payload for p in live]
        rows = sum(p.rows for p in live)
        outcomes: Sequence[Outcome | BaseException]
        try:
            if self._inline_max_rows is None or rows <= self._inline_max_rows:
                outcomes = self._predict_batch(payloads)
            else:
                loop = asyncio.get_running_loop()
                outcomes = await loop.run_in_executor(self._executor, self._predict_batch, payloads)
        except Exception as exc:  # the batch function itself failed: every request learns why
            outcomes = [exc] * len(live)
        self._observer.batch(len(live), rows, time.perf_counter() - started)
        for pending, outcome in zip(live, outcomes, strict=True):
            if pending.future.done():
                continue  # timed out while the model ran; its answer is dropped
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
