"""When the Python client tries a request again, and how long it waits first (runcast.js follows the same rules).

Retried: 503 (event store unavailable, viewer caps), 429 (create rate limit), other 5xx (a proxy's 502/504), and
transport failures (connection refused or reset, timeouts). Not retried: every other 4xx — retrying cannot fix them.

The wait before retry n (n = 1, 2, ... failures in a row):
- without `Retry-After`: exponential backoff with equal jitter, uniform in [c/2, c], c = min(cap_s, base_s * 2^(n-1));
- with `Retry-After: r` (seconds, or an HTTP-date): never sooner than the server asked, and spread so that clients
  told the same `r` do not all come back in the same instant: uniform in [r, 1.5 r], and at least the backoff above.
The client gives up with a typed error (`GatewayUnavailable`, `RateLimited`) after `max_retries` failed retries in a
row, or as soon as the next wait would take the time spent waiting in this outage past `budget_s` (a `Retry-After`
beyond the budget is not waited for at all: the error carries it, `.retry_after`, for the caller to decide).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

__all__ = ["Retrier", "RetryPolicy", "parse_retry_after"]

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How a client retries. `sleep`, `uniform` and `now` are injectable (tests record the waits instead)."""

    max_retries: int = 8
    base_s: float = 0.2
    cap_s: float = 5.0
    budget_s: float = 120.0
    sleep: Sleep = field(default=asyncio.sleep, repr=False, compare=False)
    uniform: Callable[[float, float], float] = field(default=random.uniform, repr=False, compare=False)
    now: Callable[[], float] = field(default=time.time, repr=False, compare=False)

    def delay(self, failures: int, retry_after: float | None) -> float:
        """The wait before the next attempt after `failures` failures in a row (>= 1)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(failures - 1, 0))
        backoff = self.uniform(ceiling / 2, ceiling)
        if retry_after is None or retry_after <= 0:
            return backoff
        return max(backoff, self.uniform(retry_after, retry_after * 1.5))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` in seconds from now: delta-seconds (`"3"`) or an HTTP-date; None when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP-date is GMT; be lenient with one that does not say so
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, infinity
        return None
    return max(seconds, 0.0)


class Retrier:
    """The retry state of one operation: failures in a row and time waited in the current outage."""

    def __init__(self, policy: RetryPolicy, on_retry: Callable[[int, float, Exception], None] | None = None) -> None:
        self.policy = policy
        self.on_retry = on_retry
        self.failures = 0
        self.waited_s = 0.0
        self.delays: list[float] = []

    def reset(self) -> None:
        """The operation made progress: the next failure starts a new outage."""
        self.failures = 0
        self.waited_s = 0.0

    def next_delay(self, exc: Exception, retry_after: float | None) -> float | None:
        """Count a failure; the wait before the next attempt, or None when the budget is spent (give up)."""
        self.failures += 1
        if self.failures > self.policy.max_retries:
            return None
        delay = self.policy.delay(self.failures, retry_after)
        if self.waited_s + delay > self.policy.budget_s:
            return None
        return delay

    async def wait(self, delay: float, exc: Exception) -> None:
        if self.on_retry is not None:
            self.on_retry(self.failures, delay, exc)
        self.delays.append(delay)
        self.waited_s += delay
        await self.policy.sleep(delay)
