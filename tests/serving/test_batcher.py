"""The batcher's queue mechanics, with a recording batch function."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlscale.protocol.errors import Overloaded
from mlscale.serving.batcher import Batcher, BatchSettings


class Recorder:
    """A batch function that doubles its inputs and records every call."""

    def __init__(self, fail_on=None):
        self.calls: list[list] = []
        self.fail_on = fail_on

    def __call__(self, payloads):
        self.calls.append(list(payloads))
        return [ValueError(p) if p == self.fail_on else p * 2 for p in payloads]


def run(coroutine):
    return asyncio.run(coroutine)


async def with_batcher(recorder, settings=BatchSettings(), **kwargs):
    batcher = Batcher(recorder, settings, **kwargs)
    batcher.start()
    return batcher


def test_concurrent_requests_share_one_call():
    async def main():
        recorder = Recorder()
        batcher = await with_batcher(recorder)
        results = await asyncio.gather(*(batcher.submit(i, rows=1) for i in range(5)))
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert results == [0, 2, 4, 6, 8]
    assert recorder.calls == [[0, 1, 2, 3, 4]]


def test_row_budget_splits_batches_in_order():
    async def main():
        recorder = Recorder()
        batcher = await with_batcher(recorder, BatchSettings(max_batch_rows=7))
        results = await asyncio.gather(*(batcher.submit(i, rows=3) for i in range(5)))
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert results == [0, 2, 4, 6, 8]
    assert recorder.calls == [[0, 1], [2, 3], [4]]


def test_a_request_larger_than_the_budget_still_runs_alone():
    async def main():
        recorder = Recorder()
        batcher = await with_batcher(recorder, BatchSettings(max_batch_rows=2))
        results = await asyncio.gather(batcher.submit(1, rows=10), batcher.submit(2, rows=1))
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert results == [2, 4]
    assert recorder.calls == [[1], [2]]


def test_different_keys_are_never_merged():
    async def main():
        recorder = Recorder()
        batcher = await with_batcher(recorder)
        keys = ["a", "a", "b", "a"]
        await asyncio.gather(*(batcher.submit(i, 1, key) for i, key in enumerate(keys)))
        await batcher.stop()
        return recorder

    assert run(main()).calls == [[0, 1], [2], [3]]


def test_each_request_gets_its_own_error():
    async def main():
        recorder = Recorder(fail_on=1)
        batcher = await with_batcher(recorder)
        outcomes = await asyncio.gather(
            *(batcher.submit(i, rows=1) for i in range(3)), return_exceptions=True
        )
        await batcher.stop()
        return outcomes

    first, second, third = run(main())
    assert (first, third) == (0, 4)
    assert isinstance(second, ValueError)


def test_a_failing_batch_function_fails_every_request_in_the_batch():
    def broken(payloads):
        raise RuntimeError("model crashed")

    async def main():
        batcher = await with_batcher(broken)
        outcomes = await asyncio.gather(
            *(batcher.submit(i, rows=1) for i in range(2)), return_exceptions=True
        )
        await batcher.stop()
        return outcomes

    assert [str(o) for o in run(main())] == ["model crashed", "model crashed"]


def test_full_queue_is_refused_at_once():
    async def main():
        recorder = Recorder()
        # Not started: nothing leaves the queue.
        batcher = Batcher(recorder, BatchSettings(max_queue=2))
        queued = [asyncio.ensure_future(batcher.submit(i, rows=1)) for i in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await batcher.submit(99, rows=1)
        batcher.start()
        results = await asyncio.gather(*queued)
        await batcher.stop()
        return refused.value, results

    refused, results = run(main())
    assert refused.status == 503
    assert refused.extra_headers == [(b"retry-after", b"1")]
    assert results == [0, 2]


def test_cancelled_requests_never_reach_the_model():
    async def main():
        recorder = Recorder()
        batcher = Batcher(recorder, BatchSettings())
        keep = asyncio.ensure_future(batcher.submit(1, rows=1))
        drop = asyncio.ensure_future(batcher.submit(2, rows=1))
        await asyncio.sleep(0)
        drop.cancel()
        batcher.start()
        result = await keep
        await batcher.stop()
        return recorder, result, drop

    recorder, result, drop = run(main())
    assert result == 2 and drop.cancelled()
    assert recorder.calls == [[1]]


def test_max_wait_gathers_requests_that_arrive_later():
    async def main():
        recorder = Recorder()
        batcher = await with_batcher(recorder, BatchSettings(max_wait_s=5.0, max_batch_rows=3))
        first = asyncio.ensure_future(batcher.submit(1, rows=1))
        for _ in range(3):  # let the batcher take the first request and start waiting
            await asyncio.sleep(0)
        assert recorder.calls == []
        rest = [asyncio.ensure_future(batcher.submit(i, rows=1)) for i in (2, 3)]
        # The batch is full (3 rows) long before the 5 s wait: it runs at once.
        results = await asyncio.wait_for(asyncio.gather(first, *rest), timeout=2)
        await batcher.stop()
        return recorder, results

    recorder, results = run(main())
    assert results == [2, 4, 6]
    assert recorder.calls == [[1, 2, 3]]


def test_large_batches_run_in_the_executor_small_ones_inline():
    import threading

    seen = []

    def where(payloads):
        seen.append((len(payloads), threading.current_thread().name))
        return payloads

    async def main():
        with ThreadPoolExecutor(1, thread_name_prefix="model") as pool:
            batcher = await with_batcher(where, executor=pool, inline_max_rows=4)
            await batcher.submit("small", rows=4)
            await batcher.submit("large", rows=5)
            await batcher.stop()

    run(main())
    assert seen[0] == (1, threading.main_thread().name)
    assert seen[1][1].startswith("model")
