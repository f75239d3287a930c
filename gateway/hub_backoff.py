"""Exponential backoff for the hub's Redis calls: 50 ms doubling up to 2 s, reset after a success."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

T = TypeVar("T")
log = logging.getLogger("runcast.hub")

TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError, OSError)
"""Errors that mean "the connection or server went away", worth a retry; anything else is a bug to surface."""


class Backoff:
    def __init__(self, first_s: float = 0.05, max_s: float = 2.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self._next = first_s

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


async def retrying(what: str, call: Callable[[], Awaitable[T]], *, give_up_after_s: float = 15.0) -> T:
    """Run `call`, retrying transient Redis errors with backoff for up to `give_up_after_s`, then re-raise."""
    backoff = Backoff()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after_s
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            delay = backoff.next()
            if loop.time() + delay > deadline:
                raise
            log.warning("hub: %s failed (%s); retrying in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)
