"""server/pump.py: the reader task and the consumer's deadlines (millisecond timeouts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ki2api.server.pump import Pump, PumpTimeout


class Source:
    """An upstream whose items the test releases one by one; notes when it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[int | BaseException | None] = asyncio.Queue()
        self.closed = False
        self.produced = 0

    async def items(self) -> AsyncIterator[int]:
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                self.produced += 1
                yield item
        finally:
            self.closed = True


async def test_silence_past_the_deadline_is_a_timeout_and_the_source_goes_on() -> None:
    source = Source()
    pump: Pump[int] = Pump(source.items())
    with pytest.raises(PumpTimeout):
        await pump.get(0.01)
    source.queue.put_nowait(1)
    assert await pump.get(0.5) == 1  # the item that came after the timeout is not lost
    source.queue.put_nowait(None)
    with pytest.raises(StopAsyncIteration):
        await pump.get(0.5)
    await pump.aclose()


async def test_no_deadline_waits_for_the_next_item() -> None:
    source = Source()
    pump: Pump[int] = Pump(source.items())
    asyncio.get_running_loop().call_later(0.02, source.queue.put_nowait, 7)
    assert await pump.get(None) == 7
    await pump.aclose()


async def test_the_source_s_error_comes_after_the_items_before_it() -> None:
    source = Source()
    for item in (1, 2, RuntimeError("cut")):
        source.queue.put_nowait(item)
    pump: Pump[int] = Pump(source.items())
    assert [await pump.get(0.5), await pump.get(0.5)] == [1, 2]
    with pytest.raises(RuntimeError, match="cut"):
        await pump.get(0.5)
    await pump.aclose()


async def test_drain_takes_what_is_buffered_without_waiting() -> None:
    source = Source()
    for item in (1, 2, 3):
        source.queue.put_nowait(item)
    pump: Pump[int] = Pump(source.items())
    first = await pump.get(0.5)
    await asyncio.sleep(0.01)
    assert [first, *pump.drain()] == [1, 2, 3]
    assert pump.drain() == []
    await pump.aclose()


async def test_a_full_buffer_stops_the_reader() -> None:
    source = Source()
    for item in range(10):
        source.queue.put_nowait(item)
    pump: Pump[int] = Pump(source.items(), max_buffered=3)
    await asyncio.sleep(0.01)
    assert source.produced == 3
    assert await pump.get(0.5) == 0
    await asyncio.sleep(0.01)
    assert source.produced == 4
    await pump.aclose()


async def test_closing_the_pump_closes_the_source() -> None:
    source = Source()
    pump: Pump[int] = Pump(source.items())
    await asyncio.sleep(0)
    await pump.aclose()
    assert source.closed
