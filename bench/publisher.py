"""The benchmark's publisher: appends CHUNK events to runs through `StreamLog.append`, as a worker does per token.

Every event's `timestamp` is the wall time just before its append (viewers subtract it from their receive time) and
its `trace_id` names the benchmark phase (`steady`, `burst`, `end`), so viewers can attribute each delivery to a phase
without any side channel. The publisher keeps a per-run tally (count and sum of entry ids) that every viewer's
stream must match exactly: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import StreamLog

NO_TRIM = 100_000_000
"""The publisher's MAXLEN: a benchmark run must never be trimmed (a lagging viewer would see a reset)."""


def entry_int(entry_id: str) -> int:
    ms, _, seq = entry_id.partition("-")
    return (int(ms) << 20) | int(seq)


@dataclass
class PhaseResult:
    name: str
    start: float
    end: float
    events_per_run: int
    total_events: int


class Publisher:
    def __init__(self, redis: Redis, runs: int, payload_bytes: int = 200) -> None:
        self.log = StreamLog(redis, maxlen=NO_TRIM, retention_s=3_600)
        self.run_ids = [secrets.token_hex(16) for _ in range(runs)]
        self.content = ("x" * payload_bytes)[:payload_bytes]
        self.tally: dict[str, tuple[int, int]] = {run_id: (0, 0) for run_id in self.run_ids}
        self.published: dict[str, int] = dict.fromkeys(self.run_ids, 0)

    async def create_runs(self) -> None:
        for run_id in self.run_ids:
            await self.log.create_run(run_id, "bench", "fan-out benchmark")

    async def _append(self, run_id: str, phase: str, kind: StreamingEventType = StreamingEventType.CHUNK) -> None:
        n = self.published[run_id] + 1
        chunk = kind is StreamingEventType.CHUNK
        data = StreamingChunk(content=self.content, delta=" tok", token_count=n) if chunk else {}
        event = StreamingEvent(kind, data, timestamp=time.time(), run_id=run_id, trace_id=phase)
        entry_id = await self.log.append(run_id, event)
        count, checksum = self.tally[run_id]
        self.tally[run_id] = (count + 1, checksum + entry_int(entry_id))
        self.published[run_id] = n

    async def _round(self, phase: str, kind: StreamingEventType = StreamingEventType.CHUNK) -> None:
        """One event to every run, concurrently (one run's events stay in order: one append per run at a time)."""
        if len(self.run_ids) == 1:
            await self._append(self.run_ids[0], phase, kind)
        else:
            await asyncio.gather(*(self._append(run_id, phase, kind) for run_id in self.run_ids))

    async def steady(self, rate: float, duration: float, phase: str = "steady") -> PhaseResult:
        """`rate` events per second to every run for `duration` seconds, on a fixed schedule (no drift)."""
        total = max(1, round(rate * duration))
        start = time.time()
        loop_start = time.monotonic()
        for k in range(total):
            delay = loop_start + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._round(phase)
        return PhaseResult(phase, start, time.time(), total, total * len(self.run_ids))

    async def burst(self, events_per_run: int, phase: str = "burst") -> PhaseResult:
        """`events_per_run` events to every run, back to back (each its own append, as unbatched tokens)."""
        start = time.time()
        for _ in range(events_per_run):
            await self._round(phase)
        return PhaseResult(phase, start, time.time(), events_per_run, events_per_run * len(self.run_ids))

    async def complete(self) -> None:
        """The terminal event on every run: viewers' streams end after it."""
        await self._round("end", StreamingEventType.COMPLETE)
