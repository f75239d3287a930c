"""Admission limits: open viewers per run and per gateway process, and run creation per API key.

- Viewers are counted in this process (a viewer holds a connection here, so a process-local count is exact and
  cannot leak when another gateway dies). Past a cap the gateway answers 503 with `Retry-After`: the viewer should
  come back later or go to another replica.
- Run creation is counted in Redis with a fixed window per identity (`runcast:ratelimit:{<identity>}:<window>`,
  one INCR + EXPIRE), so the limit holds across all gateways. The identity is the API key (hashed: keys never
  reach Redis in clear); with no API keys configured creation is open and not limited. Past it: 429, `Retry-After`.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge
from redis.asyncio import Redis

from runcast.shared.keys import PREFIX

VIEWER_SLOTS = Gauge("runcast_viewer_slots_in_use", "open SSE/WebSocket viewers admitted by this gateway process")
REFUSED = PromCounter("runcast_requests_refused_total", "requests refused by an admission limit", ["limit"])


@dataclass
class ViewerLimits:
    per_run: int
    per_process: int
    total: int = 0
    by_run: Counter[str] = field(default_factory=Counter)

    def try_acquire(self, run_id: str) -> str | None:
        """Take a viewer slot; on refusal return why (and take nothing)."""
        if self.total >= self.per_process:
            REFUSED.labels("viewers_per_process").inc()
            return f"this gateway has its maximum of {self.per_process} open viewers; retry later or elsewhere"
        if self.by_run[run_id] >= self.per_run:
            REFUSED.labels("viewers_per_run").inc()
            return f"this run has its maximum of {self.per_run} open viewers on this gateway; retry later"
        self.total += 1
        self.by_run[run_id] += 1
        VIEWER_SLOTS.inc()
        return None

    def release(self, run_id: str) -> None:
        self.total -= 1
        self.by_run[run_id] -= 1
        if self.by_run[run_id] <= 0:
            del self.by_run[run_id]
        VIEWER_SLOTS.dec()


def key_identity(api_key: str) -> str:
    """What the rate limit counts under: a SHA-256 prefix, so API keys never reach Redis in clear."""
    return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:32]


class CreateRateLimiter:
    """At most `limit` run creations per identity per `window_s` window, counted in Redis (all gateways)."""

    def __init__(self, redis: Redis, *, limit: int, window_s: int) -> None:
        self.redis = redis
        self.limit = limit
        self.window_s = window_s

    async def hit(self, identity: str, now: float | None = None) -> float | None:
        """Count one creation; None when allowed, else the seconds until the window resets (for Retry-After)."""
        now = time.time() if now is None else now
        window = int(now // self.window_s)
        key = f"{PREFIX}:ratelimit:{{{identity}}}:{window}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_s + 1)
            count, _ = await pipe.execute()
        if count <= self.limit:
            return None
        REFUSED.labels("create_rate").inc()
        return max((window + 1) * self.window_s - now, 0.001)


def retry_after_header(seconds: float) -> str:
    return str(max(math.ceil(seconds), 1))
