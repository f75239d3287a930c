"""A StreamLog whose appends survive a lost Redis connection or a Redis restart, without duplicating an event.

An append is one Lua script. If the connection drops after sending it, we cannot know whether it ran, so a blind
retry could publish an event twice. Instead, after a failure, we look at the run's last entry: if it is the event we
were appending (the event JSON carries its own timestamp, so it is unique within a run), the append happened and we
return its id; otherwise we append again. Only the worker appends its run's events, so "our event is last" is exact.
Redis must not lose acknowledged writes across the restart (AOF with `appendfsync always`, or a replica and WAIT):
otherwise events viewers already saw can vanish, which no client-side retry can repair.
"""

from __future__ import annotations

from redis.asyncio import Redis

from runcast.shared.keys import events_key
from runcast.shared.resilience import TRANSIENT_ERRORS, Backoff
from runcast.shared.streaming import StreamingEvent
from runcast.shared.streamlog import StreamLog


class DurableStreamLog(StreamLog):
    def __init__(self, redis: Redis, *, maxlen: int = 10_000, retention_s: int = 86_400, retry_s: float = 30.0):
        super().__init__(redis, maxlen=maxlen, retention_s=retention_s)
        self.retry_s = retry_s

    async def append_many(self, run_id: str, events: list[StreamingEvent]) -> str:
        backoff = Backoff(self.retry_s)
        uncertain = False
        while True:
            try:
                if uncertain and events:
                    landed = await self._landed(run_id, events[-1])
                    if landed is not None:
                        return landed
                return await super().append_many(run_id, events)
            except TRANSIENT_ERRORS as exc:
                uncertain = True
                await backoff.wait(exc)  # re-raises once Redis has been away longer than retry_s

    async def _landed(self, run_id: str, last_event: StreamingEvent) -> str | None:
        """The id of the run's last entry when it is `last_event` (the interrupted append did run), else None."""
        last = await self.redis.xrevrange(events_key(run_id), count=1)
        if last and last[0][1].get("event") == last_event.to_json():
            return last[0][0]
        return None
