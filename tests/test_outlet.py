"""The pieces that bound what a stalled viewer costs, in isolation: writes of bounded size made of whole frames, pages
sized by bytes, and the wait for a connection to take more that ends a viewer who stopped reading (and only such a
viewer). Real processes: tests/test_stalled_viewers.py."""

from __future__ import annotations

import asyncio

import pytest

from runcast.gateway.hub.pages import ENTRY_OVERHEAD, page_count
from runcast.gateway.wire.frames import sse_batch, sse_parts
from runcast.gateway.wire.outlet import ViewerStalled, wait_writable
from runcast.shared.streamlog import Entry


def entry(i: int, size: int) -> Entry:
    return Entry(f"{1000 + i}-0", "chunk", '{"type":"chunk","data":"' + "x" * size + '"}')


def test_sse_parts_are_whole_frames_within_the_limit_and_join_to_the_batch():
    entries = [entry(i, size) for i, size in enumerate([10, 3000, 200, 9000, 50, 40_000, 5])]
    parts = list(sse_parts(entries, 8 * 1024))
    assert b"".join(b"".join(part) for part in parts) == sse_batch(entries)
    for part in parts:
        assert len(part) == 1 or sum(map(len, part)) <= 8 * 1024  # only a single frame may exceed the limit
    assert [len(part) for part in parts] == [3, 1, 1, 1, 1]  # 40 KB alone; what precedes and follows it too


def test_page_count_fills_about_the_page_bytes_and_stays_within_one_and_the_page_size():
    assert page_count([], 64 * 1024, 500) == 500  # nothing known: the count limit
    assert page_count([50] * 8, 64 * 1024, 500) == 500  # small events: the count limit
    assert page_count([4096 - ENTRY_OVERHEAD] * 8, 64 * 1024, 500) == 16
    assert page_count([1 << 20], 64 * 1024, 500) == 1  # one huge event: one per page


class Connection:
    """An outlet whose client drains `rate` bytes per tick of 10 ms (0: it does not read)."""

    def __init__(self, buffered: int, rate: int = 0, limit: int = 64 * 1024) -> None:
        self.size, self.rate, self.limit, self.aborted = buffered, rate, limit, False
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.size = max(0, self.size - self.rate)

    def closed(self) -> bool:
        return self.aborted

    def buffered(self) -> int:
        return self.size

    def backed_up(self) -> bool:
        return self.size > self.limit

    async def drained(self) -> None:
        await asyncio.sleep(0.01)

    def abort(self) -> None:
        self.aborted = True

    def stop(self) -> None:
        self._task.cancel()


async def test_a_connection_that_takes_nothing_for_stall_s_is_a_stalled_viewer():
    connection = Connection(buffered=100_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ViewerStalled):
        await wait_writable(connection, 0.3)
    assert loop.time() - started >= 0.3
    connection.stop()


async def test_a_slow_reader_is_waited_for_however_long_it_takes_while_it_makes_progress():
    connection = Connection(buffered=100_000, rate=300)  # ~120 ticks = ~1.2 s to get under 64 KiB
    await wait_writable(connection, 0.3)  # no stall: every stall period sees the buffer shrink
    assert not connection.backed_up()
    connection.stop()


async def test_waiting_for_a_flush_ends_when_the_connection_holds_nothing_and_a_closed_one_is_not_waited_for():
    connection = Connection(buffered=5_000, rate=1_000)
    await wait_writable(connection, 5.0, below=0)
    assert connection.buffered() == 0
    connection.stop()
    closed = Connection(buffered=100_000)
    closed.abort()
    await asyncio.wait_for(wait_writable(closed, 60.0), 1.0)
    closed.stop()
