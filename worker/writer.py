"""One writer per worker process: the appends of all its runs, one round trip per loop tick.

A run's publisher `put`s events into its `RunChannel` (no await, no round trip); the writer task takes what every
channel has pending and sends it as one `append_runs` call (one script call on a plain Redis; one per slot in one
pipeline on a cluster), then resolves what the replies tell: each run's last id, or that the run has ended
(cancelled or lost: the script refused the append) or is unknown. Whatever arrives while a call is in flight goes out
in the next one, so the batch grows with the load and a lone event is sent at once. Calls start at least
`interval_s` apart (RUNCAST_WORKER_WRITE_INTERVAL_MS): a busy worker's events wait a few ms to share a call, since
each call costs a fixed ~100 us of worker and Redis CPU whether it carries one event or a hundred.

Guarantees:
- order per run: one call in flight at a time, each channel's events in put order; a failed call is resent as it
  was before anything newer of those runs is sent;
- exactly once: ids are chosen here (`IdClock`) before the first send and kept for every resend; the script skips
  what already landed (`runcast.shared.append`). A store error (lost connection, restarting Redis, READONLY, OOM,
  MISCONF) retries the same batch with backoff for up to `retry_s`, then fails the batch's runs with
  `StoreUnavailable`;
- nothing after the terminal event: the script refuses it; the channel then rejects further puts with `RunEnded`.

- across a failover: Redis replicates asynchronously, so a promoted replica can lack the last entries the old
  primary acknowledged (viewers may have seen them). Each run keeps its recently acknowledged entries (`Tail`) and
  every append carries the last id it saw acknowledged (`RunAppend.expect`); a log that ends before it answers
  `Behind`, and the writer re-sends the lost entries with their own ids before the new ones. Viewers that saw them
  skip them (their resume id is past them; the hub drops ids it has had), a new viewer reads them from the log: exact
  either way. Entries older than the tail keeps are replaced by one METADATA `events_lost` notice at the id of the
  newest one of them, so the loss is never silent. Runs that are idle or ended a moment ago have no next append to
  find out: after a connection error, a `Behind` or a primary switch (`suspect_failover`) the writer checks each of
  them with an empty append (n = 0) carrying `expect`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from runcast.shared.append import ENDED, UNKNOWN, Behind, Conflict, Reply, status_after
from runcast.shared.resilience import STORE_ERRORS, Backoff, StoreUnavailable
from runcast.shared.streaming import StreamingEvent
from runcast.shared.streamlog import IdClock, RunAppend, RunEnded, StreamLog, UnknownRun
from runcast.worker.tail import Tail

log = logging.getLogger("runcast.worker")

Entry = tuple[str, str, str]

MAX_EVENTS_PER_TICK = 4_000
"""Most events one tick sends (the rest waits for the next tick, in order)."""
MAX_PENDING = 2_048
"""Events a run may have waiting before its publisher pauses (`RunChannel.room`): Redis slower than the model."""


class RunChannel:
    """One run's way into the writer. `put` queues, `flush` waits until everything put is in the log."""

    def __init__(self, writer: AppendWriter, run_id: str) -> None:
        self.writer = writer
        self.run_id = run_id
        self.pending: list[Entry] = []  # (id, type, json): encoded and numbered when put, in the agent's task
        self._statuses: list[tuple[int, str]] = []  # (put number, status) of the pending status-changing events
        self.taken = 0  # events handed to the writer so far
        self.put_count = 0
        self.acked_count = 0
        self.in_flight = 0
        self.last_id: str | None = None
        self.status = ""  # the status the run's acknowledged events moved it to ('' = none of them changed it)
        self._taken_status = ""
        self.last_ack = 0.0  # time.monotonic() of the last reply for this run (the cancel watch skips busy runs)
        self.ttl_at = 0.0  # when this run's keys' TTL was last re-armed
        self.error: BaseException | None = None
        self.tail = Tail()  # recently acknowledged entries, to re-send after a failover lost them
        self._in_flight_entries: list[Entry] = []
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self._room: asyncio.Future[None] | None = None

    def put(self, events: Sequence[StreamingEvent]) -> None:
        """Queue events for the log (in order). Raises the run's error once it is known (e.g. RunEnded).

        Each event gets its entry id and JSON here, so the writer's tick only assembles what is ready (the encoding
        is spread over the runs' own tasks instead of stalling the loop in one go).
        """
        if self.error is not None:
            raise self.error
        if not events:
            return
        ids = self.writer.ids
        for event in events:
            status = status_after(event)
            if status:
                self._statuses.append((self.put_count, status))
            self.pending.append((ids.next(), event.type._value_, event.to_json()))
            self.put_count += 1
        self.writer.ready(self)

    @property
    def backlog(self) -> int:
        return len(self.pending) + self.in_flight

    async def room(self) -> None:
        """Wait while this run has MAX_PENDING events not yet in the log."""
        while self.backlog >= MAX_PENDING and self.error is None:
            self._room = asyncio.get_running_loop().create_future()
            await self._room
        if self.error is not None:
            raise self.error

    async def flush(self) -> str | None:
        """Wait until every event put so far is in the log; the run's last entry id. Raises the run's error."""
        if self.acked_count < self.put_count and self.error is None:
            done = asyncio.get_running_loop().create_future()
            self._flushes.append((self.put_count, done))
            await done
        if self.error is not None:
            raise self.error
        return self.last_id

    def close(self) -> None:
        self.writer.forget(self)

    # called by the writer / the cancel watch
    def take(self, limit: int) -> tuple[list[Entry], str]:
        """Up to `limit` pending entries for the next call, and the status the last of them moves the run to."""
        entries, self.pending = self.pending[:limit], self.pending[limit:]
        self.in_flight = len(entries)
        self._in_flight_entries = entries
        self.taken += len(entries)
        status = ""
        while self._statuses and self._statuses[0][0] < self.taken:
            status = self._statuses.pop(0)[1]
        self._taken_status = status
        return entries, status

    def acked(self, last_id: str, now: float) -> None:
        self.acked_count += self.in_flight
        self.in_flight = 0
        if self._in_flight_entries:
            self.tail.extend(self._in_flight_entries, now)
            self._in_flight_entries = []
        self.last_id = last_id
        self.status = self._taken_status or self.status
        self.last_ack = now
        self._wake_waiters()

    def fail(self, error: BaseException) -> None:
        """The run takes no more events: it ended (RunEnded, UnknownRun) or Redis failed for good."""
        if self.error is None:
            self.error = error
        self.pending.clear()
        self._statuses.clear()
        self.in_flight = 0
        self._in_flight_entries = []
        self._wake_waiters()
        if not self.ended.done():
            self.ended.set_result(None)

    def _wake_waiters(self) -> None:
        keep = []
        for target, done in self._flushes:
            if done.done():
                continue
            if self.error is not None or self.acked_count >= target:
                done.set_result(None)
            else:
                keep.append((target, done))
        self._flushes = keep
        if self._room is not None and not self._room.done() and (self.backlog < MAX_PENDING or self.error):
            self._room.set_result(None)


Batched = tuple[RunChannel, RunAppend]


class AppendWriter:
    """The worker process's one writer task; it runs while any channel is open."""

    def __init__(
        self,
        stream_log: StreamLog,
        *,
        retry_s: float | None = None,
        ttl_every_s: float | None = None,
        interval_s: float = 0.0,
    ) -> None:
        self.stream_log = stream_log
        self.interval_s = interval_s
        self._sent_at = float("-inf")
        self.retry_s = retry_s if retry_s is not None else float(getattr(stream_log, "retry_s", 0.0))
        self.ttl_every_s = ttl_every_s if ttl_every_s is not None else stream_log.retention_s / 4
        self.ids: IdClock = getattr(stream_log, "ids", None) or IdClock()
        self.channels: dict[str, RunChannel] = {}
        self._ready: dict[str, RunChannel] = {}
        self._recent: dict[str, tuple[float, RunChannel]] = {}  # closed a moment ago: (closed at, channel)
        self._suspect = False  # a failover may have happened: check the runs that have no next append
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.calls = 0  # append calls sent (for tests and the benchmark's curiosity)
        self.resends = 0  # calls sent again after a transient error
        self.failover_resent = 0  # acknowledged entries a failover lost, re-sent with their ids
        self.failover_gaps = 0  # `events_lost` notices appended (lost entries older than the tail kept)

    def open(self, run_id: str) -> RunChannel:
        channel = RunChannel(self, run_id)
        self.channels[run_id] = channel
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="runcast-append-writer")
        return channel

    def forget(self, channel: RunChannel) -> None:
        if self.channels.get(channel.run_id) is channel:
            del self.channels[channel.run_id]
            if channel.last_id is not None and channel.tail:
                self._recent[channel.run_id] = (time.monotonic(), channel)
        self._ready.pop(channel.run_id, None)
        self._wake.set()  # lets an idle writer notice it has nothing left to serve

    def suspect_failover(self) -> None:
        """The primary may have changed (a watch saw it switch): check every run this writer has entries of."""
        self._suspect = True
        self._wake.set()

    def ready(self, channel: RunChannel) -> None:
        self._ready[channel.run_id] = channel
        self._wake.set()

    async def _run(self) -> None:
        while self.channels or self._ready or self._recent:
            self._expire_recent()
            if self._suspect:
                self._suspect = False
                await self._send(self._checks())
                continue
            if not self._ready:
                self._wake.clear()
                if not self.channels:  # only recently ended runs left: keep them for their window, then stop
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), Tail.keep_s)
                    continue
                await self._wake.wait()
                continue
            loop = asyncio.get_running_loop()
            pause = self._sent_at + self.interval_s - loop.time()
            if pause > 0:  # busy: let a few ms of events gather (an idle writer sends at once)
                await asyncio.sleep(pause)
            self._sent_at = loop.time()
            batch = self._take()
            try:
                await self._send(batch)
            except asyncio.CancelledError:
                for channel, _ in batch:
                    channel.fail(RuntimeError("the worker's append writer was stopped"))
                raise

    def _take(self) -> list[Batched]:
        batch: list[Batched] = []
        room = MAX_EVENTS_PER_TICK
        now = time.monotonic()
        for run_id, channel in list(self._ready.items()):
            if room <= 0:
                break
            entries, status = channel.take(room)
            room -= len(entries)
            if not channel.pending:
                del self._ready[run_id]
            if not entries:
                continue
            refresh = bool(status) or now - channel.ttl_at >= self.ttl_every_s
            append = RunAppend(run_id, entries, status, refresh, channel.last_id or "")
            if refresh:
                channel.ttl_at = now
            batch.append((channel, append))
        return batch

    async def _send(self, batch: list[Batched]) -> None:
        """Send `batch` until every run in it is settled. A store error (`STORE_ERRORS`: a lost connection, a
        restarting Redis, READONLY after a failover, OOM at maxmemory, MISCONF) resends the same batch, same ids,
        with backoff; after `retry_s` of errors the batch's runs fail with `StoreUnavailable` (the job then ends each
        run with ERROR `store_unavailable` once Redis takes writes again: `runcast.worker.ending`). An OOM or MISCONF
        refusal happens before the script writes anything, and a lost reply is skipped on resend: exactly once."""
        backoff = Backoff(self.retry_s)
        while batch:
            try:
                self.calls += 1
                replies = await self.stream_log.append_runs([append for _, append in batch])
            except STORE_ERRORS as exc:
                if backoff.exhausted():
                    log.error("appends failed for %.0f s, giving up on %d runs: %s", self.retry_s, len(batch), exc)
                    for channel, _ in batch:
                        channel.fail(StoreUnavailable(exc, self.retry_s))
                    return
                await backoff.wait(exc)
                self.resends += 1
                self._suspect = True  # the next call may reach a promoted replica: check the idle runs too
                continue  # the same batch, the same ids: what landed is skipped
            except Exception as exc:  # a bug: the batch's runs cannot go on
                log.exception("append failed for %d runs", len(batch))
                for channel, _ in batch:
                    channel.fail(exc)
                return
            batch = self._settle(batch, replies)

    def _settle(self, batch: list[Batched], replies: list[Reply]) -> list[Batched]:
        """Apply the replies; what to send again (conflicts, with new ids)."""
        again = []
        now = time.monotonic()
        for (channel, append), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Behind):
                again.append((channel, self._refill(channel, append, reply.top)))
            elif isinstance(reply, Conflict):
                log.warning("run %s: entry %s is not ours; appending after it", channel.run_id, reply.top)
                self.ids.advance_past(reply.top)
                append.renumber(self.ids)
                again.append((channel, append))
            elif reply == ENDED:
                channel.fail(RunEnded(channel.run_id))
            elif reply == UNKNOWN:
                channel.fail(UnknownRun(channel.run_id))
            else:
                channel.acked(str(reply), now)
        return again

    def _refill(self, channel: RunChannel, append: RunAppend, top: str) -> RunAppend:
        """The append again, after what the log lost since `top`: the tail's entries, or a notice for those gone."""
        lost, notice = channel.tail.after(top, channel.run_id)
        self._suspect = True  # a failover happened: the runs with no next append must be checked too
        self.failover_resent += len(lost)
        self.failover_gaps += notice is not None
        log.warning(
            "run %s: the log ends at %s, before %s (a failover lost acknowledged entries): re-sending %d%s",
            channel.run_id,
            top,
            append.expect,
            len(lost),
            ", after an events_lost notice for older ones" if notice else "",
        )
        entries = ([notice] if notice else []) + lost + append.entries
        status = append.status or Tail.status_of(lost)
        return RunAppend(channel.run_id, entries, status, True, "")

    def _checks(self) -> list[Batched]:
        """Empty appends that ask each idle or recently ended run's log whether it still has what was acknowledged."""
        runs = [c for c in self.channels.values() if c.run_id not in self._ready] + [
            c for _, c in self._recent.values()
        ]
        return [(c, RunAppend(c.run_id, [], "", False, c.last_id)) for c in runs if c.last_id and c.in_flight == 0]

    def _expire_recent(self) -> None:
        now = time.monotonic()
        for run_id, (closed_at, _) in list(self._recent.items()):
            if now - closed_at > Tail.keep_s:
                del self._recent[run_id]

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
