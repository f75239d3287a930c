"""Liveness and retry primitives shared by the worker (heartbeat, durable appends) and the gateway (sweeper, feed).

- `RUNNING_KEY`: a sorted set of the runs some worker has claimed (member = run id, score = claim time). It is one
  global key (so it works in Redis Cluster; nothing ever touches it in the same command as a per-run key). It is only
  an index for the sweeper: the truth is each run's own `heartbeat_key(run_id)`, a short-TTL key the worker refreshes.
- `retry_transient`: retry an idempotent Redis call through a lost connection or a restarting server, with
  exponential backoff and jitter (redis-py's own `EqualJitterBackoff`), until a deadline.
- `Periodic`: a background task that calls one step every few seconds and outlives the step's failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis._parsers.base import BaseParser
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runcast.shared.keys import PREFIX

RUNNING_KEY = f"{PREFIX}:running"

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OSError,
    TimeoutError,
)
"""What a lost connection, a killed client, a restarting (LOADING) server or a failover raise: worth retrying.
`ReadOnlyError` (`READONLY`) is a write reaching a replica: a primary demoted by Sentinel, or a client that has not yet
followed the failover. A Sentinel-managed connection turns it into a ConnectionError and re-asks the sentinels for the
primary; a plain connection (a failover behind a DNS name or a proxy) reconnects when retried. Sentinel's own
`MasterNotFoundError` (no primary while the failover runs) is a ConnectionError. Anything else is a bug to surface."""


class MisconfError(ResponseError):
    """`MISCONF`: Redis refuses every write (even DEL) because it cannot persist: a failed RDB save with
    `stop-writes-on-bgsave-error yes`, or AOF write errors. redis-py has no class for it (a plain ResponseError); we
    register this one in redis-py's reply parser table (`BaseParser.EXCEPTION_CLASSES`, which maps an error code to a
    class for both parsers, hiredis or not), so that `except STORE_REFUSALS` catches it wherever it is raised."""


BaseParser.EXCEPTION_CLASSES.setdefault("MISCONF", MisconfError)

STORE_REFUSALS: tuple[type[BaseException], ...] = (OutOfMemoryError, MisconfError)
"""Redis is up and answers reads but refuses writes: `OOM` (used memory over `maxmemory` with the `noeviction`
policy; a script is refused at its first write, so a refused append wrote nothing) or `MISCONF`. Retrying the same
call later is safe and useful (memory given back, the disk fixed). Not in TRANSIENT_ERRORS, which also configures
redis-py's per-command retry by reconnecting (no help here): callers that ride through a refusal catch
`STORE_ERRORS`."""

STORE_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, *STORE_REFUSALS)
"""Everything that means "the store cannot take this write now; the same write may succeed later"."""


class StoreUnavailable(Exception):
    """A run's writes were refused or failed for longer than the retry budget (RUNCAST_REDIS_RETRY_S): the run ends
    with ERROR `store_unavailable` as soon as Redis takes a write again (`runcast.worker.ending`)."""

    error_type = "store_unavailable"

    def __init__(self, cause: BaseException, waited_s: float) -> None:
        super().__init__(f"the run's events could not be stored for {waited_s:.0f} s: {describe(cause)}")
        self.cause = cause


def describe(exc: BaseException) -> str:
    """A store error in words a user can act on (the gateway's 503 bodies, the `store_unavailable` detail)."""
    if isinstance(exc, OutOfMemoryError):
        return "Redis is out of memory (maxmemory reached, noeviction policy)"
    if isinstance(exc, MisconfError):
        return "Redis refuses writes (MISCONF: it cannot persist to disk)"
    if isinstance(exc, ReadOnlyError):
        return "Redis is read-only (a replica; a failover is in progress)"
    return f"Redis is unavailable ({type(exc).__name__})"


log = logging.getLogger("runcast.resilience")
T = TypeVar("T")


class Backoff:
    """Delays for successive failures: 50 ms doubling up to `cap_s`, with equal jitter; a deadline per outage
    (`give_up_after_s`; None retries for ever, as the hub's reader does)."""

    def __init__(self, give_up_after_s: float | None, *, base_s: float = 0.05, cap_s: float = 1.0) -> None:
        self.give_up_after_s = give_up_after_s
        self._backoff = EqualJitterBackoff(cap=cap_s, base=base_s)
        self.failures = 0
        self._outage_started = 0.0

    def reset(self) -> None:
        self.failures = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        if self.failures == 0:
            self._outage_started = time.monotonic()
        self.failures += 1
        return self._backoff.compute(self.failures)

    def exhausted(self) -> bool:
        limit = self.give_up_after_s
        return self.failures > 0 and limit is not None and time.monotonic() - self._outage_started > limit

    async def wait(self, exc: BaseException) -> None:
        """Sleep before the next try, or re-raise `exc` when this outage has lasted longer than allowed."""
        if self.exhausted():
            raise exc
        delay = self.next_delay()
        log.warning("redis unavailable (%s: %s); retry %d in %.2fs", type(exc).__name__, exc, self.failures, delay)
        await asyncio.sleep(delay)


async def retry_transient(
    call: Callable[[], Awaitable[T]], backoff: Backoff, errors: tuple[type[BaseException], ...] = TRANSIENT_ERRORS
) -> T:
    """Run `call` until it succeeds, retrying `errors` (transient Redis errors; `STORE_ERRORS` for an idempotent
    write that should also wait out a refusal). Only for idempotent calls."""
    while True:
        try:
            result = await call()
        except errors as exc:
            await backoff.wait(exc)
            continue
        backoff.reset()
        return result


class Periodic:
    """Calls `step()` at once, then every `interval_s`, in a background task until `stop()`. A step that raises one
    of `errors` is logged and tried again next time: a Redis blip never ends the loop."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        interval_s: float,
        *,
        errors: tuple[type[BaseException], ...] = (Exception,),
        logger: logging.Logger = log,
    ) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self.errors = errors
        self.logger = logger
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.step()
            except self.errors as exc:
                self.logger.warning("%s failed (will retry): %r", self.name, exc)
            await asyncio.sleep(self.interval_s)
