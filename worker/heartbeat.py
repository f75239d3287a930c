"""The worker's liveness signal for the runs it is executing, and its clean-up when a run stops.

The contract with the gateways' sweeper (`runcast.gateway.sweeper`) is per run: `heartbeat_key(run_id)`, a key with a
short TTL (`lost_s`), kept alive while the run's agent runs, and the run listed in `RUNNING_KEY`. A listed run whose
key has expired lost its worker (killed, frozen, or cut off from Redis for longer than `lost_s`) and is ended with
ERROR `worker_lost`.

`Heartbeats` keeps that contract for every run of a worker process with one task: one pipeline of `SET ... PX` for all
its runs every `lost_s / 3` (not one timer and one round trip per run).

`async with run_heartbeat(stream_log, run_id, heartbeats=...):` around the agent:
- on enter: `SET heartbeat_key(run_id) PX lost_ms` then `ZADD RUNNING_KEY` (in that order, so a run the sweeper sees in
  the index always had a heartbeat);
- on cancellation (arq cancels running jobs after `job_completion_wait` on SIGTERM, or at the job timeout): the run
  is ended with ERROR `worker_shutdown` through `StreamLog.end_run` (atomic: a no-op when it already ended);
- on exit: the key and the index entry are removed (best effort: if Redis is away the key simply expires).
Without `heartbeats`, the run gets a `Heartbeats` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from redis.exceptions import OutOfMemoryError

from runcast.shared.keys import heartbeat_key
from runcast.shared.redis_client import is_cluster
from runcast.shared.resilience import RUNNING_KEY, STORE_ERRORS, Backoff
from runcast.shared.settings import get_settings
from runcast.shared.streamlog import StreamLog
from runcast.worker.batcher import CommandBatcher

log = logging.getLogger("runcast.worker")

SHUTDOWN_END_TIMEOUT_S = 5.0
"""How long a cancelled job may spend recording `worker_shutdown` before the process gives up on it."""
REFRESH_BATCH = 1_000


class Heartbeats:
    """The heartbeat keys of all runs of one worker process, refreshed together; the task runs while any run does."""

    def __init__(self, redis: object, lost_s: float, batcher: CommandBatcher | None = None) -> None:
        self.redis = redis
        self.lost_s = lost_s
        self.batcher = batcher or CommandBatcher(redis)
        self.runs: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def every_s(self) -> float:
        return max(self.lost_s / 3, 0.05)

    async def add(self, run_id: str) -> None:
        """Beat for `run_id` now and list it as running (heartbeat first), then keep it beating.

        A store error (Redis refusing writes: OOM, MISCONF; or away) is retried until the writes land: the run has
        not started yet, so it waits for Redis and starts then (only the job's cancellation stops the waiting)."""
        backoff = Backoff(None)
        while True:
            try:
                await self._list(run_id)
                break
            except STORE_ERRORS as exc:
                await backoff.wait(exc)
        self.runs.add(run_id)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh(), name="runcast-heartbeats")

    async def _list(self, run_id: str) -> None:
        ttl_ms = self._ttl_ms()
        claimed = {run_id: time.time()}  # the score is informational (claim time); the sweeper reads members only
        if is_cluster(self.redis):  # keys in two slots: a cluster pipeline does not keep their order
            await self.batcher.run(lambda pipe: pipe.set(heartbeat_key(run_id), "1", px=ttl_ms))
            await self.batcher.run(lambda pipe: pipe.zadd(RUNNING_KEY, claimed))
        else:  # one connection: in order, in one round trip shared with the other jobs starting now
            await self.batcher.run(
                lambda pipe: (pipe.set(heartbeat_key(run_id), "1", px=ttl_ms), pipe.zadd(RUNNING_KEY, claimed))
            )

    async def remove(self, run_id: str) -> None:
        self.runs.discard(run_id)
        with contextlib.suppress(*STORE_ERRORS):  # best effort: the key expires anyway
            await self.batcher.run(lambda pipe: (pipe.delete(heartbeat_key(run_id)), pipe.zrem(RUNNING_KEY, run_id)))

    async def beat_all(self) -> None:
        """Re-arm every run's heartbeat key. Over maxmemory Redis refuses SET (OOM) but takes PEXPIRE (it never
        grows memory): the keys are kept alive with it, so a full Redis does not make the sweeper think the runs'
        worker is lost. (MISCONF refuses both: the sweeper cannot write either, and the end script is atomic.)"""
        try:
            await self._beat(lambda pipe, key, ttl_ms: pipe.set(key, "1", px=ttl_ms))
        except OutOfMemoryError:
            await self._beat(lambda pipe, key, ttl_ms: pipe.pexpire(key, ttl_ms))

    async def _beat(self, command: Callable[[Any, str, int], object]) -> None:
        runs = list(self.runs)
        ttl_ms = self._ttl_ms()
        for start in range(0, len(runs), REFRESH_BATCH):
            async with self.redis.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
                for run_id in runs[start : start + REFRESH_BATCH]:
                    command(pipe, heartbeat_key(run_id), ttl_ms)
                await pipe.execute()

    async def _refresh(self) -> None:
        while self.runs:
            await asyncio.sleep(self.every_s)
            try:
                await self.beat_all()
            except STORE_ERRORS as exc:  # keep trying: the keys outlive a blip shorter than lost_s
                log.warning("heartbeats of %d runs not refreshed: %s", len(self.runs), exc)

    def _ttl_ms(self) -> int:
        return max(int(self.lost_s * 1000), 1)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def run_heartbeat(
    stream_log: StreamLog, run_id: str, lost_s: float | None = None, *, heartbeats: Heartbeats | None = None
) -> AsyncIterator[None]:
    own = heartbeats is None
    beats = heartbeats or Heartbeats(stream_log.redis, lost_s if lost_s is not None else get_settings().worker_lost_s)
    await beats.add(run_id)
    try:
        yield
    except asyncio.CancelledError:
        log.info("run %s stopped by the worker (shutdown or job timeout)", run_id)
        with contextlib.suppress(*STORE_ERRORS):
            await asyncio.wait_for(
                stream_log.end_run(run_id, "worker_shutdown", "the worker stopped before the run finished"),
                SHUTDOWN_END_TIMEOUT_S,
            )
        raise
    finally:
        await beats.remove(run_id)
        if own:
            await beats.aclose()
