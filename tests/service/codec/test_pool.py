"""The codec threads run encoding before decoding and deliver errors to the caller."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.codec.pool import DECODE, ENCODE, CodecPool


def test_encode_jobs_overtake_queued_decode_jobs():
    async def scenario() -> list[str]:
        pool = CodecPool(1)
        order: list[str] = []
        gate = threading.Event()
        blocker = asyncio.ensure_future(pool.run(DECODE, gate.wait, 10))
        await asyncio.sleep(0.05)
        jobs = [
            asyncio.ensure_future(pool.run(DECODE, order.append, "decode-1")),
            asyncio.ensure_future(pool.run(DECODE, order.append, "decode-2")),
            asyncio.ensure_future(pool.run(ENCODE, order.append, "encode")),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.gather(blocker, *jobs)
        pool.shutdown()
        return order

    assert asyncio.run(scenario()) == ["encode", "decode-1", "decode-2"]


def test_errors_reach_the_caller():
    async def scenario() -> None:
        pool = CodecPool(2)
        try:
            with pytest.raises(ZeroDivisionError):
                await pool.run(DECODE, lambda: 1 / 0)
            assert await pool.run(ENCODE, sum, [1, 2]) == 3
        finally:
            pool.shutdown()

    asyncio.run(scenario())
