"""The gateway's fan-out hub: one live reader per process (per shard on a cluster) feeds every local viewer.

How a subscriber is served (the splice; the same for a first join and for a catch-up after lagging):
1. attach to the run's live feed first, so whatever the hub publishes from now on is buffered in the inbox;
2. then read the backlog after the resume id: from the run's in-memory tail when it reaches back that far
   (no Redis read), else from Redis by XRANGE pages (after a `check_gap`, which may yield a Reset first);
3. then deliver the inbox, dropping ids <= the last delivered one, and continue live: with a sink (an SSE viewer
   on uvicorn) the run's pass writes to the viewer's connection itself from then on; else the inbox, batch by batch.
A subscriber whose inbox fills up, or whose connection is backed up, is detached (the hub never waits for anyone),
drains what it holds, and goes back to step 1 from its last delivered id: the log in Redis is the buffer, so it loses
nothing and costs no one else.

How a run is followed: its first viewer makes it join. The run's live channel is subscribed first (`reader.py`), then
one XREVRANGE loads its last `history_size` entries; announcements that came meanwhile are checked against that tail.
From then on the run costs no read: the append script announces every entry. The log is read again only to fill a gap
(`gaps.py`). A run leaves when its terminal entry is published or its last viewer goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from functools import partial
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

from runcast.gateway import metrics
from runcast.gateway.hub.gaps import GapFiller, QuietRuns
from runcast.gateway.hub.pages import PAGE_BYTES, entry_sizes, page_count
from runcast.gateway.hub.reader import PING_S, LiveReader
from runcast.gateway.hub.routing import routing_for
from runcast.gateway.hub.run import RunFeed
from runcast.gateway.hub.subscriber import Sink, Subscriber
from runcast.shared.ids import START_ID, entry_key
from runcast.shared.resilience import Backoff, retry_transient
from runcast.shared.streamlog import Entry, Reset, StreamLog, to_entries

log = logging.getLogger("runcast.hub")

Batch = list[Entry] | Reset
T = TypeVar("T")


RETRY_S = 15.0
"""How long a join, backlog or catch-up read retries a lost Redis before the viewer's stream fails (and the client
resumes, possibly on another gateway)."""


def retrying(call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """An idempotent Redis read, retried through transient errors with backoff for up to RETRY_S."""
    return retry_transient(call, Backoff(RETRY_S, cap_s=2.0))


class Hub:
    """`EventFeed` over one live reader per group; Redis connections: one per reader + at most `max_connections`
    pooled (joins, backlog reads, gap fills, catch-ups), whatever the number of viewers and runs."""

    def __init__(
        self,
        stream_log: StreamLog,
        *,
        queue_size: int = 1024,
        history_size: int = 2048,
        page_size: int = 500,
        page_bytes: int = PAGE_BYTES,
        max_connections: int = 8,
        idle_check_s: float = 30.0,
        ping_s: float = PING_S,
    ) -> None:
        self.routing = routing_for(stream_log.redis)
        if isinstance(stream_log.redis, RedisCluster):
            self.redis = stream_log.redis  # single-slot commands only; the app owns (and closes) this client
            self.log = stream_log
        else:
            base = stream_log.redis.connection_pool
            pool = BlockingConnectionPool(
                max_connections=max_connections,
                timeout=None,
                connection_class=base.connection_class,
                **{**base.connection_kwargs, "client_name": "runcast-hub"},
            )
            self.redis = Redis(connection_pool=pool)
            self.log = StreamLog(self.redis, maxlen=stream_log.maxlen, retention_s=stream_log.retention_s)
        self.queue_size = queue_size
        self.history_size = history_size
        self.page_size = page_size
        self.page_bytes = page_bytes
        self.idle_check_s = idle_check_s
        self.ping_s = ping_s
        self.runs: dict[str, RunFeed] = {}
        self.readers: dict[Hashable, LiveReader] = {}
        self.gaps = GapFiller(
            self.log, page_size=page_size, flush=self.flush, followed=self._followed, concurrency=max_connections
        )
        self._quiet = QuietRuns(self.log, self.gaps)
        self._retired: set[LiveReader] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._closed = False

    # -- EventFeed -------------------------------------------------------------------------------------------------

    async def subscribe(self, run_id: str, after_id: str, sink: Sink | None = None) -> AsyncIterator[Batch]:
        """Batches after `after_id`; with a `sink`, the live part is written to it by the hub instead (see the
        module docstring), and the iterator only yields what the viewer's own task must send (backlog, catch-up)."""
        run = await self._join(run_id)
        subscriber = Subscriber(self.queue_size, sink)
        run.subscribers.add(subscriber)
        metrics.SUBSCRIBERS.inc()
        try:
            async for batch in self._serve(run, subscriber, after_id):
                yield batch
        finally:
            metrics.SUBSCRIBERS.dec()
            subscriber.direct = False
            run.subscribers.discard(subscriber)
            self._leave(run)

    async def close(self) -> None:
        self._closed = True
        readers = [*self.readers.values(), *self._retired]
        self.readers.clear()
        await asyncio.gather(*(reader.stop() for reader in readers), return_exceptions=True)
        await self.gaps.close()
        for task in [*self._tasks, *([self._janitor] if self._janitor else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.routing.aclose()
        if not isinstance(self.redis, RedisCluster):
            await self.redis.aclose(close_connection_pool=True)

    # -- serving one subscriber ------------------------------------------------------------------------------------

    async def _serve(self, run: RunFeed, sub: Subscriber, after_id: str) -> AsyncIterator[Batch]:
        last = after_id
        joining = True  # the first backlog is history, not lag
        while True:
            sub.attach()  # 1. buffer live entries from now on
            if run.covers(last):  # 2a. backlog from memory (no await since attach: nothing can slip between)
                backlog = run.history_after(last)
                if backlog:
                    metrics.delivered(backlog, observe_lag=not joining)
                    yield backlog
                    last = backlog[-1].id
                    if backlog[-1].is_terminal:
                        return
            else:  # 2b. backlog from Redis, in pages
                async for batch in self._backlog_from_redis(run, last):
                    if isinstance(batch, Reset):
                        yield batch
                        continue
                    metrics.delivered(batch, observe_lag=not joining)
                    yield batch
                    last = batch[-1].id
                    if batch[-1].is_terminal:
                        return
            joining = False
            while True:  # 3. live: the inbox minus the overlap, several waiting entries as one batch
                batch = sub.take_after(last)
                if batch:
                    metrics.delivered(batch, observe_lag=True)
                    yield batch
                    last = batch[-1].id
                    if batch[-1].is_terminal:
                        return
                    continue
                if sub.lagging or run.ended_at(last):
                    break
                if self._can_go_direct(run, sub, last):
                    sub.go_direct(last)  # the run's pass writes to the connection from now on
                    await sub.wait()  # until it hands back: lagging, closed, terminal, gap or expiry
                    last = sub.last_id
                    if sub.closed:
                        return
                    continue
                await sub.wait()
            if run.ended_at(last) and not sub.lagging:
                return
            metrics.CATCHUPS.inc()

    @staticmethod
    def _can_go_direct(run: RunFeed, sub: Subscriber, last: str) -> bool:
        """Level with the run (nothing published after `last` that the viewer lacks) and a sink that can write."""
        sink = sub.sink
        return sink is not None and sink.ready and sub.attached and entry_key(last) >= run.cursor_key

    async def _backlog_from_redis(self, run: RunFeed, last: str) -> AsyncIterator[Batch]:
        """Reset (when `last` was trimmed), then every entry after `last` up to the stream's end, in pages of about
        `page_bytes` (sized from the run's recent entries, then from the last page read; at most `page_size`)."""
        metrics.count_read("xrange")
        reset = await retrying(partial(self.log.check_gap, run.run_id, last))
        if reset is not None:
            yield reset
        count = page_count(entry_sizes(run.history), self.page_bytes, self.page_size)
        while True:
            metrics.count_read("xrange")
            page = await retrying(partial(self.log.read_after, run.run_id, last, count=count))
            if page:
                yield page
                last = page[-1].id
            if len(page) < count or page[-1].is_terminal:
                return
            count = page_count(entry_sizes(page), self.page_bytes, self.page_size)
            if run.covers(last):  # the rest is in memory: the caller's inbox/history splice takes it from here
                tail = run.history_after(last)
                if tail:
                    yield tail
                return

    # -- runs joining and leaving ----------------------------------------------------------------------------------

    async def _join(self, run_id: str) -> RunFeed:
        if self._closed:
            raise RuntimeError("hub is closed")
        run = self.runs.get(run_id)
        if run is not None:
            run.refs += 1
            try:
                await run.ready.wait()
            except BaseException:
                self._leave(run)
                raise
            if run.join_error is None:
                return run
            run.refs -= 1
            if isinstance(run.join_error, asyncio.CancelledError):
                return await self._join(run_id)  # the viewer doing the join went away, not Redis: join afresh
            raise run.join_error
        run = RunFeed(run_id, self.routing.group_of(run_id), self.history_size)
        run.refs = 1
        self.runs[run_id] = run
        try:
            self._reader_for(run.group).add(run)  # subscribe first: whatever is appended from now on is announced
            async with asyncio.timeout(RETRY_S):
                await run.subscribed.wait()
            if run.subscribe_error is not None:
                raise run.subscribe_error
            floor, tail = await retrying(partial(self._stream_tail, run))
        except BaseException as exc:
            run.join_error = exc
            run.ready.set()
            run.refs -= 1
            if self.runs.get(run_id) is run:
                del self.runs[run_id]
            self._unfollow(run)
            raise
        if run.start_with(floor, tail):
            self.gaps.request(run)  # an announcement during the join skipped ahead of the tail
        self.gaps.resume(run)  # a resubscribe during the join asked for a read
        self.flush(run)
        if run.ended:
            self._unfollow(run)
        run.ready.set()
        self._ensure_janitor()
        return run

    async def _stream_tail(self, run: RunFeed) -> tuple[str, list[Entry]]:
        """The last `history_size` entries of a run joining the hub, and the id they follow (the history's floor).

        One XREVRANGE per run joining, not per viewer: whoever resumes within this tail costs no Redis read."""
        metrics.count_read("xrevrange")
        tail = to_entries(await self.redis.xrevrange(run.key, count=max(self.history_size, 1)))[::-1]
        if not tail:
            return START_ID, tail
        if len(tail) < self.history_size and not await self.log.was_trimmed(run.run_id):
            return START_ID, tail  # the whole stream is in memory
        return tail[0].id, tail[1:]

    def _leave(self, run: RunFeed) -> None:
        run.refs -= 1
        if run.refs > 0:
            return
        if self.runs.get(run.run_id) is run:
            del self.runs[run.run_id]
        self._unfollow(run)

    def _followed(self, run: RunFeed) -> bool:
        reader = self.readers.get(run.group)
        return reader is not None and reader.runs.get(run.channel) is run

    def _unfollow(self, run: RunFeed) -> None:
        reader = self.readers.get(run.group)
        if reader is None:
            return
        reader.remove(run)
        if not reader.runs:
            del self.readers[run.group]
            self._retire(reader)

    def _reader_for(self, group: Hashable) -> LiveReader:
        reader = self.readers.get(group)
        if reader is None:
            connect = partial(self.routing.connection, group)
            reader = LiveReader(group, connect, self, sharded=self.routing.sharded, ping_s=self.ping_s)
            self.readers[group] = reader
            reader.start()
        return reader

    def _retire(self, reader: LiveReader) -> None:
        reader.retire()
        self._retired.add(reader)
        if reader.task is not None:
            reader.task.add_done_callback(lambda _task: self._retired.discard(reader))

    # -- what the readers tell the hub (reader.ReaderHost) ---------------------------------------------------------

    def flush(self, run: RunFeed) -> None:
        """Publish what `run` accepted; a run whose terminal entry is published leaves its reader."""
        if run.flush() and run.ended:
            self._unfollow(run)

    def gap(self, run: RunFeed, *, check_trim: bool) -> None:
        self.gaps.request(run, check_trim=check_trim)

    def refused(self, run: RunFeed, error: Exception | None) -> None:
        """The subscription failed or was dropped: on a cluster the slot moved, so re-route the run; elsewhere (an
        ACL refusing the channel...) its join fails, or, once joined, the quiet-run check keeps it going slowly."""
        if not self.routing.sharded:
            log.error("hub: the live channel of run %s was refused: %r", run.run_id, error)
            if error is not None and not run.ready.is_set():  # fail the join now rather than at its timeout
                run.subscribe_error = error
                run.subscribed.set()
            return
        self._spawn(self._reroute([run]), f"runcast-hub-reroute-{run.run_id}")

    def reader_failed(self, reader: LiveReader) -> None:
        if self.routing.sharded and reader.runs:  # the node may have failed over: re-route what moved
            self._spawn(self._reroute(list(reader.runs.values())), f"runcast-hub-reroute-{reader.group}")

    async def _reroute(self, runs: list[RunFeed]) -> None:
        try:
            await self.routing.refresh()
        except Exception as exc:  # the reader retries; the next failure asks again
            log.warning("hub: could not refresh the cluster's slot map (%r)", exc)
            return
        for run in runs:
            group = self.routing.group_of(run.run_id)
            if not self._followed(run) or group == run.group:
                continue
            self._unfollow(run)
            run.group = group
            run.subscribed.clear()
            self._reader_for(group).add(run)  # confirmed there: a gap fill (with the trim check) follows

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- quiet runs: expiry, and the safety net for lost announcements ---------------------------------------------

    def _ensure_janitor(self) -> None:
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.create_task(self._sweep_quiet(), name="runcast-hub-janitor")

    async def _sweep_quiet(self) -> None:
        """A run that goes quiet may have expired (retention) without a terminal entry: then end its viewers. And
        its meta may show an entry the hub never heard of: then read the log."""
        loop = asyncio.get_running_loop()
        while self.runs:
            await asyncio.sleep(self.idle_check_s)
            quiet = [
                run
                for run in self.runs.values()
                if run.started and not run.ended and not run.expired
                if loop.time() - run.last_activity >= self.idle_check_s
            ]
            try:
                expired = await self._quiet.check(quiet)
            except Exception as exc:
                log.warning("hub: quiet-run check failed: %r", exc)
                continue
            now = loop.time()
            for run in quiet:
                run.last_activity = now
            for run in expired:
                run.expire()
                self._unfollow(run)
