"""One reader task per reader group: a multiplexed `XREAD BLOCK` over every followed run's stream, on one connection.

Each key is read at its own cursor. When the key set changes while the call is blocked, the reader is woken with
`CLIENT UNBLOCK <its connection id>` from the hub's control connection; servers without it get short blocks instead.
Redis errors (killed connection, restarted server) are logged, backed off and survived: the reader reconnects and
resumes every run from its cursor, so subscribers see a delay, never a gap or a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

from runcast.gateway import metrics
from runcast.gateway.hub.run import RunFeed
from runcast.shared.resilience import TRANSIENT_ERRORS, Backoff
from runcast.shared.streamlog import Entry

log = logging.getLogger("runcast.hub")

READ_MARGIN_S = 5.0
"""How much longer than its BLOCK a read may take before the connection is taken for dead."""


def parse_xread(reply: Any) -> list[tuple[str, list[Entry]]]:
    """A raw XREAD reply `[[key, [[id, [field, value, ...]], ...]], ...]` (or nil) as entries per key."""
    out: list[tuple[str, list[Entry]]] = []
    pairs = reply.items() if isinstance(reply, dict) else reply or ()  # RESP3 answers with a map
    for key, raw_entries in pairs:
        entries = []
        for entry_id, flat in raw_entries:
            fields = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
            entries.append(Entry(entry_id, fields.get("type", ""), fields.get("event", "")))
        out.append((key, entries))
    return out


class StreamReader:
    def __init__(
        self,
        group: object,
        connect: Callable[[], AbstractConnection],
        control: Redis,
        on_entries: Callable[[RunFeed, list[Entry]], None],
        *,
        on_recovered: Callable[[list[RunFeed]], Awaitable[None]] | None = None,
        block_ms: int = 10_000,
        fallback_block_ms: int = 100,
        count: int = 512,
    ) -> None:
        self.group = group
        self._connect = connect
        self._control = control
        self._on_entries = on_entries
        self._on_recovered = on_recovered
        self.block_ms = block_ms
        self.fallback_block_ms = fallback_block_ms
        self.count = count
        self.runs: dict[str, RunFeed] = {}
        self.client_id: int | None = None
        self.unblock_supported = True
        self._conn: AbstractConnection | None = None
        self._changed = asyncio.Event()
        self._retired = False
        self._generation = 0
        self._blocked_generation: int | None = None
        self._waker: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- key set ---------------------------------------------------------------------------------------------------

    def add(self, run: RunFeed) -> None:
        self.runs[run.key] = run
        metrics.RUNS_FOLLOWED.inc()
        self._wake()

    def remove(self, run: RunFeed) -> None:
        if self.runs.get(run.key) is run:
            del self.runs[run.key]
            metrics.RUNS_FOLLOWED.dec()
            self._wake()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"runcast-hub-reader-{self.group}")
        metrics.READERS.inc()
        self._task.add_done_callback(lambda _task: metrics.READERS.dec())  # even if cancelled before it ran

    def retire(self) -> None:
        """Stop once the current call returns (woken at once); the hub already routes new runs elsewhere."""
        self._retired = True
        self._wake()

    async def stop(self) -> None:
        self._retired = True
        metrics.RUNS_FOLLOWED.dec(len(self.runs))
        self.runs.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._waker is not None:
            self._waker.cancel()

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def _wake(self) -> None:
        """The key set changed: a blocked XREAD holding the old set must return now."""
        self._changed.set()
        if self._blocked_generation is None or not self.unblock_supported:
            return
        if self._waker is None or self._waker.done():
            self._waker = asyncio.create_task(self._unblock(), name=f"runcast-hub-waker-{self.group}")

    async def _unblock(self) -> None:
        """CLIENT UNBLOCK the reader while its pending XREAD predates a change of the key set.

        A reply of 0 means "not blocked (yet)": the XREAD may still be on its way to the server, so retry briefly.
        After a success, look again: a change may have come in just as the next XREAD went out."""
        unblocked: int | None = None
        attempts = 0
        while attempts < 50:
            generation, client_id = self._blocked_generation, self.client_id
            if generation is None or generation == unblocked or client_id is None or not self._changed.is_set():
                return
            try:
                done = await self._control.client_unblock(client_id)
            except ResponseError as exc:  # no such command (old server, some fakes): short blocks from now on
                log.info("hub: CLIENT UNBLOCK unavailable (%s); using %d ms blocks", exc, self.fallback_block_ms)
                self.unblock_supported = False
                return
            except RedisError:
                return  # the reader's own read fails or times out soon enough
            if done:
                unblocked, attempts = generation, 0
            else:
                attempts += 1
                await asyncio.sleep(0.002)

    # -- the loop --------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(None, cap_s=2.0)  # the reader never gives up: viewers wait, then resume exactly
        recovering = False
        try:
            while not self._retired:
                if not self.runs:
                    self._changed.clear()
                    await self._changed.wait()
                    continue
                try:
                    reply = await self._xread()
                    if recovering and self._on_recovered is not None:
                        # What the log trimmed while we could not read is not in this reply: let the hub check.
                        await self._on_recovered([run for key, _ in reply if (run := self.runs.get(key)) is not None])
                    recovering = False
                except (RedisError, *TRANSIENT_ERRORS) as exc:
                    metrics.READER_ERRORS.inc()
                    recovering = True
                    delay = backoff.next_delay()
                    log.warning("hub reader %s: Redis error (%r); reconnecting in %.2fs", self.group, exc, delay)
                    await self._drop_connection()
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                self._dispatch(reply)
        finally:
            await self._drop_connection()

    async def _xread(self) -> list[tuple[str, list[Entry]]]:
        conn = await self._connection()
        snapshot = dict(self.runs)
        keys = list(snapshot)
        block = self.block_ms if self.unblock_supported else self.fallback_block_ms
        self._generation += 1
        self._changed.clear()
        self._blocked_generation = self._generation
        try:
            await conn.send_command(
                "XREAD", "COUNT", self.count, "BLOCK", block, "STREAMS", *keys, *(snapshot[key].cursor for key in keys)
            )
            metrics.count_read("xread")
            raw = await conn.read_response(timeout=block / 1000 + READ_MARGIN_S)
        finally:
            self._blocked_generation = None
        return [(key, entries) for key, entries in parse_xread(raw) if self.runs.get(key) is snapshot.get(key)]

    def _dispatch(self, reply: list[tuple[str, list[Entry]]]) -> None:
        for key, entries in reply:
            run = self.runs.get(key)
            if run is None:
                continue  # left while we were reading
            self._on_entries(run, entries)

    async def _connection(self) -> AbstractConnection:
        if self._conn is None:
            conn = self._connect()
            client_id: Any = None
            try:
                await conn.connect()
                await conn.send_command("CLIENT", "ID")
                try:
                    client_id = await conn.read_response()
                except ResponseError:  # a server without CLIENT ID cannot be woken: short blocks instead
                    client_id = None
            except BaseException:
                await conn.disconnect()
                raise
            self.client_id = int(client_id) if client_id is not None else None
            if self.client_id is None:
                self.unblock_supported = False
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn, self.client_id = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect()
