"""Where a subscriber's entries come from: its backlog, then the live tail, as batches ending at the terminal event.

`EventFeed` is the seam between the HTTP layer and Redis. `DirectFeed` gives every subscriber its own XREAD loop
(simple, and the benchmark's `naive` mode: `RUNCAST_FEED=direct`); the default is the fan-out hub
(`runcast.gateway.hub.fanout.Hub`), which implements the same protocol and follows all the runs of a process on one
subscription connection (one per shard on a Redis Cluster), reading the streams only to fill gaps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Protocol, TypeVar

from runcast.gateway.hub.subscriber import Sink
from runcast.shared.resilience import Backoff, retry_transient
from runcast.shared.streamlog import TERMINAL_STATUSES, Entry, Reset, StreamLog

Batch = list[Entry] | Reset
T = TypeVar("T")


class EventFeed(Protocol):
    def subscribe(self, run_id: str, after_id: str, sink: Sink | None = None) -> AsyncIterator[Batch]:
        """Yield a Reset (at most once, first) when `after_id` was trimmed, then batches of entries after
        `after_id` in order, with no gap and no duplicate; stop after the batch holding the terminal entry.

        A feed may write live batches to `sink` itself instead of yielding them (the hub does; see
        `hub/subscriber.py`): the caller sends what is yielded, and the sink's connection gets the rest."""
        ...

    async def close(self) -> None: ...


class DirectFeed:
    """One XRANGE for the backlog, then one blocking XREAD loop per subscriber.

    Every read is by id after the last delivered entry, so it is idempotent: when Redis drops the connection or
    restarts, the read is retried with backoff from the same id (no gap, no duplicate) for up to `retry_s` of
    continuous outage; after that the error ends the stream and the client resumes with its Last-Event-ID.
    """

    def __init__(
        self, stream_log: StreamLog, block_ms: int = 5_000, backlog_count: int = 1_000, retry_s: float = 30.0
    ) -> None:
        self.stream_log = stream_log
        self.block_ms = block_ms
        self.backlog_count = backlog_count
        self.retry_s = retry_s

    async def subscribe(self, run_id: str, after_id: str, sink: Sink | None = None) -> AsyncIterator[Batch]:
        """`sink` is ignored: the naive baseline sends every batch through its viewer's own task."""
        backoff = Backoff(self.retry_s)
        log = self.stream_log

        def retried(call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
            return retry_transient(call, backoff)

        reset = await retried(partial(log.check_gap, run_id, after_id))
        if reset is not None:
            yield reset
        last_id = after_id
        while True:  # backlog, in pages
            entries = await retried(partial(log.read_after, run_id, last_id, count=self.backlog_count))
            if not entries:
                break
            yield entries
            if entries[-1].is_terminal:
                return
            last_id = entries[-1].id
        if await retried(partial(self._ended_at, run_id, last_id)):
            return
        while True:  # live
            entries = await retried(partial(log.tail, run_id, last_id, self.block_ms))
            if not entries:
                if await retried(partial(log.get_meta, run_id)) is None:
                    return  # the run expired under us
                continue
            yield entries
            if entries[-1].is_terminal:
                return
            last_id = entries[-1].id

    async def _ended_at(self, run_id: str, last_id: str) -> bool:
        """True when the run has ended and nothing after `last_id` is left to read. The status turns terminal
        in the same atomic step that appends the terminal entry, so one read after seeing it is enough."""
        meta = await self.stream_log.get_meta(run_id)
        if meta is None or meta.get("status") in TERMINAL_STATUSES:
            return not await self.stream_log.read_after(run_id, last_id, count=1)
        return False

    async def close(self) -> None:
        return None
