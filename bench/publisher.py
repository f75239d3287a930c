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
from runcast.shared.streamlog import RunAppend, StreamLog

NO_TRIM = 100_000_000
"""The publisher's MAXLEN: a benchmark run must never be trimmed (a lagging viewer would see a reset)."""


SPREAD_TICKS_PER_S = 1_000
"""At most this many append ticks per second when many runs are spread over each period (see `steady`)."""


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

    def _event(self, run_id: str, phase: str, kind: StreamingEventType) -> StreamingEvent:
        chunk = kind is StreamingEventType.CHUNK
        n = self.published[run_id] + 1
        data = StreamingChunk(content=self.content, delta=" tok", token_count=n) if chunk else {}
        return StreamingEvent(kind, data, timestamp=time.time(), run_id=run_id, trace_id=phase)

    def _appended(self, run_id: str, entry_id: str | bytes) -> None:
        entry_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        count, checksum = self.tally[run_id]
        self.tally[run_id] = (count + 1, checksum + entry_int(entry_id))
        self.published[run_id] += 1

    async def _round(
        self, phase: str, kind: StreamingEventType = StreamingEventType.CHUNK, run_ids: list[str] | None = None
    ) -> None:
        """One event to every run (of `run_ids`). One run: one append (one EVALSHA round trip, as a worker does per
        token). Many runs: one append call for all of them (`StreamLog.append_runs`, as a worker's writer does), so
        the publisher's own CPU stays small next to the gateway's; each run's events stay in order."""
        run_ids = self.run_ids if run_ids is None else run_ids
        if len(run_ids) == 1:
            run_id = run_ids[0]
            self._appended(run_id, await self.log.append(run_id, self._event(run_id, phase, kind)))
            return
        appends = [RunAppend.build(run_id, [self._event(run_id, phase, kind)]) for run_id in run_ids]
        for append, reply in zip(appends, await self.log.append_runs(appends), strict=True):
            if not isinstance(reply, str):
                raise RuntimeError(f"append refused for run {append.run_id}: {reply}")
            self._appended(append.run_id, reply)

    async def steady(self, rate: float, duration: float, phase: str = "steady") -> PhaseResult:
        """`rate` events per second to every run for `duration` seconds, on a fixed schedule (no drift).

        Many runs are spread over each period instead of appending all at the same instant (independent workers
        do not tick together): the runs form up to `SPREAD_TICKS_PER_S / rate` groups, each appended at its own
        offset within the period, so a reader sees the mix of lone and coinciding appends real runs make."""
        total = max(1, round(rate * duration))
        groups = max(1, min(len(self.run_ids), round(SPREAD_TICKS_PER_S / rate)))
        members = [self.run_ids[g::groups] for g in range(groups)]
        start = time.time()
        loop_start = time.monotonic()
        for k in range(total):
            for g, run_ids in enumerate(members):
                delay = loop_start + (k + g / groups) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._round(phase, run_ids=run_ids)
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
