"""The gateway's fan-out hub: one multiplexed XREAD reader per process (per reader group) feeds every local viewer.

How a subscriber is served (the splice; the same for a first join and for a catch-up after lagging):
1. attach to the run's live feed first, so whatever the reader gets from now on is buffered in the inbox;
2. then read the backlog after the resume id: from the run's in-memory tail when it reaches back that far
   (no Redis read), else from Redis by XRANGE pages (after a `check_gap`, which may yield a Reset first);
3. then deliver the inbox, dropping ids <= the last delivered one, and continue live.
A subscriber whose inbox fills up is detached (the reader never waits for anyone), drains what it holds, and goes back
to step 1 from its last delivered id: the log in Redis is the buffer, so it loses nothing and costs no one else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from functools import partial
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection

from runcast.gateway import metrics
from runcast.gateway.hub.reader import StreamReader
from runcast.gateway.hub.run import RunFeed
from runcast.gateway.hub.subscriber import Subscriber
from runcast.shared.cluster import ClusterReaders, run_slot
from runcast.shared.ids import START_ID
from runcast.shared.keys import meta_key
from runcast.shared.resilience import Backoff, retry_transient
from runcast.shared.streamlog import Entry, Reset, StreamLog, to_entries

log = logging.getLogger("runcast.hub")

Batch = list[Entry] | Reset
GroupKey = Callable[[str], Hashable]
T = TypeVar("T")


RETRY_S = 15.0
"""How long a join, backlog or catch-up read retries a lost Redis before the viewer's stream fails (and the client
resumes, possibly on another gateway)."""


def retrying(call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
    """An idempotent Redis read, retried through transient errors with backoff for up to RETRY_S."""
    return retry_transient(call, Backoff(RETRY_S, cap_s=2.0))


def single_group(run_id: str) -> Hashable:
    """Plain Redis: every key can go in one XREAD. (Cluster: group by node or slot so each XREAD stays in one.)"""
    return "main"


class Hub:
    """`EventFeed` over one reader per group; Redis connections: one per reader + at most `max_connections` pooled."""

    def __init__(
        self,
        stream_log: StreamLog,
        *,
        queue_size: int = 1024,
        history_size: int = 2048,
        page_size: int = 500,
        max_connections: int = 8,
        block_ms: int = 10_000,
        fallback_block_ms: int = 100,
        idle_check_s: float = 30.0,
        group_key: GroupKey = single_group,
    ) -> None:
        self._cluster: ClusterReaders | None = None
        if isinstance(stream_log.redis, RedisCluster):  # one group per slot: a cluster XREAD cannot span slots
            self._cluster = ClusterReaders(stream_log.redis)
            self.redis = stream_log.redis  # single-slot commands only; the app owns (and closes) this client
            self.log = stream_log
            group_key = run_slot
        else:
            base = stream_log.redis.connection_pool
            self._conn_class = base.connection_class
            self._conn_kwargs = dict(base.connection_kwargs)
            pool = BlockingConnectionPool(
                max_connections=max_connections,
                timeout=None,
                connection_class=self._conn_class,
                **{**self._conn_kwargs, "client_name": "runcast-hub"},
            )
            self.redis = Redis(connection_pool=pool)
            self.log = StreamLog(self.redis, maxlen=stream_log.maxlen, retention_s=stream_log.retention_s)
        self.queue_size = queue_size
        self.history_size = history_size
        self.page_size = page_size
        self.block_ms = block_ms
        self.fallback_block_ms = fallback_block_ms
        self.idle_check_s = idle_check_s
        self.group_key = group_key
        self.runs: dict[str, RunFeed] = {}
        self.readers: dict[Hashable, StreamReader] = {}
        self._retired: set[StreamReader] = set()
        self._janitor: asyncio.Task[None] | None = None
        self._closed = False

    # -- EventFeed -------------------------------------------------------------------------------------------------

    async def subscribe(self, run_id: str, after_id: str) -> AsyncIterator[Batch]:
        run = await self._join(run_id)
        subscriber = Subscriber(self.queue_size)
        run.subscribers.add(subscriber)
        metrics.SUBSCRIBERS.inc()
        try:
            async for batch in self._serve(run, subscriber, after_id):
                yield batch
        finally:
            metrics.SUBSCRIBERS.dec()
            run.subscribers.discard(subscriber)
            self._leave(run)

    async def close(self) -> None:
        self._closed = True
        tasks = [reader.stop() for reader in [*self.readers.values(), *self._retired]]
        self.readers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        if self._cluster is not None:
            await self._cluster.aclose()
        else:
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
                await sub.wait()
            if run.ended_at(last) and not sub.lagging:
                return
            metrics.CATCHUPS.inc()

    async def _backlog_from_redis(self, run: RunFeed, last: str) -> AsyncIterator[Batch]:
        """Reset (when `last` was trimmed), then every entry after `last` up to the stream's end, in pages."""
        metrics.count_read("xrange")
        reset = await retrying(partial(self.log.check_gap, run.run_id, last))
        if reset is not None:
            yield reset
        while True:
            metrics.count_read("xrange")
            page = await retrying(partial(self.log.read_after, run.run_id, last, count=self.page_size))
            if page:
                yield page
                last = page[-1].id
            if len(page) < self.page_size or page[-1].is_terminal:
                return
            if run.covers(last):  # the rest is in memory: the caller's inbox/history splice takes it from here
                tail = run.history_after(last)
                if tail:
                    yield tail
                return

    # -- runs joining and leaving the readers ----------------------------------------------------------------------

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
        run = RunFeed(run_id, self.group_key(run_id), self.history_size)
        run.refs = 1
        self.runs[run_id] = run
        try:
            floor, tail = await retrying(partial(self._stream_tail, run))
        except BaseException as exc:
            run.join_error = exc
            run.ready.set()
            run.refs -= 1
            if self.runs.get(run_id) is run:
                del self.runs[run_id]
            raise
        run.start_with(floor, tail)
        if not run.ended:
            self._reader_for(run.group).add(run)
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

    def _unfollow(self, run: RunFeed) -> None:
        reader = self.readers.get(run.group)
        if reader is None:
            return
        reader.remove(run)
        if not reader.runs:
            del self.readers[run.group]
            self._retire(reader)

    def _reader_for(self, group: Hashable) -> StreamReader:
        reader = self.readers.get(group)
        if reader is None:
            reader = StreamReader(
                group,
                partial(self._reader_connection, group),
                self.redis if self._cluster is None else self._cluster.control_for_slot(group),  # type: ignore[arg-type]
                self._on_entries,
                on_recovered=self._on_recovered,
                block_ms=self.block_ms,
                fallback_block_ms=self.fallback_block_ms,
            )
            self.readers[group] = reader
            reader.start()
        return reader

    def _retire(self, reader: StreamReader) -> None:
        reader.retire()
        self._retired.add(reader)
        if reader.task is not None:
            reader.task.add_done_callback(lambda _task: self._retired.discard(reader))

    def _reader_connection(self, group: Hashable) -> AbstractConnection:
        """A dedicated connection for one reader (outside the pool: it blocks for seconds at a time)."""
        # reads carry their own timeout (BLOCK + margin), hence no socket timeout
        overrides = {"client_name": "runcast-hub-reader", "health_check_interval": 0, "socket_timeout": None}
        if self._cluster is not None:  # on the slot's current primary; a reconnect re-reads the slot map first
            return self._cluster.connection_for_slot(group, **overrides)  # type: ignore[arg-type]
        return self._conn_class(**{**self._conn_kwargs, **overrides})

    async def _on_recovered(self, runs: list[RunFeed]) -> None:
        """After the reader lost Redis: entries trimmed after a run's cursor meanwhile would be skipped silently by
        XREAD, so check each run that has news and send its viewers through catch-up (then `reset`) on a gap."""
        for run in runs:
            reset = await self.log.check_gap(run.run_id, run.cursor)
            if reset is not None:
                log.warning("run %s: entries after %s were trimmed while Redis was unreachable", run.run_id, run.cursor)
                run.restart_after_gap(reset.first_available)

    def _on_entries(self, run: RunFeed, entries: list[Entry]) -> None:
        run.publish(entries)
        if run.ended:
            self._unfollow(run)

    # -- runs that expire while followed ---------------------------------------------------------------------------

    def _ensure_janitor(self) -> None:
        if self._janitor is None or self._janitor.done():
            self._janitor = asyncio.create_task(self._sweep_expired(), name="runcast-hub-janitor")

    async def _sweep_expired(self) -> None:
        """A run that goes quiet may have expired (retention) without a terminal entry: then end its viewers."""
        loop = asyncio.get_running_loop()
        while self.runs:
            await asyncio.sleep(self.idle_check_s)
            for run in list(self.runs.values()):
                if run.ended or run.expired or loop.time() - run.last_activity < self.idle_check_s:
                    continue
                try:
                    exists = await self.redis.exists(meta_key(run.run_id))
                except Exception as exc:
                    log.warning("hub: expiry check failed: %r", exc)
                    continue
                if exists:
                    run.last_activity = loop.time()
                else:
                    run.expire()
                    self._unfollow(run)
