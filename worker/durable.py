"""A StreamLog whose appends survive a lost Redis connection or a Redis restart, without duplicating an event.

An append is one Lua script. If the connection drops after sending it, we cannot know whether it ran, so the events
carry ids chosen here (`IdClock`) and a retry sends the very same ids: the script skips what an earlier send already
appended (same id, same JSON) and appends the rest (`runcast.shared.append`). Nothing to look up first, and it holds
for batches of many runs (`runcast.worker.writer`) as for one.
Redis must not lose acknowledged writes across the restart (AOF with `appendfsync always`, or a replica and WAIT):
otherwise events viewers already saw can vanish, which no client-side retry can repair.
"""

from __future__ import annotations

from redis.asyncio import Redis

from runcast.shared.resilience import STORE_ERRORS, Backoff
from runcast.shared.streaming import StreamingEvent
from runcast.shared.streamlog import AppendConflict, IdClock, RunAppend, StreamLog


class DurableStreamLog(StreamLog):
    def __init__(self, redis: Redis, *, maxlen: int = 10_000, retention_s: int = 86_400, retry_s: float = 30.0):
        super().__init__(redis, maxlen=maxlen, retention_s=retention_s)
        self.retry_s = retry_s
        self.ids = IdClock()

    async def append_many(self, run_id: str, events: list[StreamingEvent]) -> str:
        if not events:
            raise ValueError("nothing to append")
        append = RunAppend.build(run_id, events, self.ids)
        backoff = Backoff(self.retry_s)
        while True:
            try:
                return await self.append_one(append)
            except AppendConflict as conflict:  # another writer's entry is at or after our ids: take later ones
                self.ids.advance_past(conflict.top)
                append.renumber(self.ids)
            except STORE_ERRORS as exc:  # incl. OOM/MISCONF: a refused script wrote nothing
                await backoff.wait(exc)  # re-raises once Redis has been away longer than retry_s
