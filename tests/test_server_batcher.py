"""The server's batcher waits for requests only while some are on their way: a lone request starts at
once, however long ``max_wait_ms`` is, and a request submitted while another is still being
prepared waits for it, so the two share one engine call."""

from __future__ import annotations

import asyncio

import pytest

from adapters.server.batcher import Batcher

pytestmark = pytest.mark.timeout(60)
FOREVER_MS = 3_600_000  # an hour: a batch that waited for it would time the test out


def _batcher(calls: list) -> Batcher:
    def run(kind, rows):
        calls.append(list(rows))
        return [row * 10 for row in rows]

    return Batcher(run, max_batch_size=8, max_wait_ms=FOREVER_MS)


def test_a_lone_request_does_not_wait_for_company():
    async def main():
        calls: list = []
        batcher = _batcher(calls)
        await batcher.start()
        try:
            for i in range(3):  # a sequential client: each request alone
                assert await asyncio.wait_for(batcher.submit("generate", "a", [i]), 10) == [i * 10]
        finally:
            await batcher.stop()
        return calls

    assert asyncio.run(main()) == [[0], [1], [2]]


def test_a_request_being_prepared_is_waited_for_and_joins_the_batch():
    async def main():
        calls: list = []
        batcher = _batcher(calls)
        await batcher.start()
        arrived = asyncio.Event()

        async def second():
            with batcher.preparing():  # parsing, tokenizing ... while the first is queued
                await arrived.wait()
            return await batcher.submit("generate", "b", [2])

        try:
            later = asyncio.create_task(second())
            await asyncio.sleep(0)  # the second request is now being prepared
            first = asyncio.create_task(batcher.submit("generate", "a", [1]))
            await asyncio.sleep(0.05)
            assert calls == [], "the batch must wait while another request is on its way"
            arrived.set()
            assert await asyncio.wait_for(asyncio.gather(first, later), 10) == [[10], [20]]
            # A preparation that ends without a submit (refused, streamed) releases the wait too.
            with batcher.preparing():
                waiting = asyncio.create_task(batcher.submit("generate", "a", [3]))
                await asyncio.sleep(0.05)
                assert len(calls) == 1
            assert await asyncio.wait_for(waiting, 10) == [30]
        finally:
            await batcher.stop()
        return calls

    calls = asyncio.run(main())
    assert calls == [[1, 2], [3]]
