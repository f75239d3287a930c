"""The worker's liveness signal for a run it is executing, and its clean-up when the run stops.

`async with run_heartbeat(stream_log, run_id):` around the agent:
- on enter: `SET heartbeat_key(run_id) PX lost_ms` then `ZADD RUNNING_KEY` (in that order, so a run the sweeper sees in
  the index always had a heartbeat);
- while inside: a task refreshes the key every `lost_s / 3`, so it only expires when this worker stops beating
  (killed, frozen, or cut off from Redis for longer than `lost_s`) and a gateway's sweeper then ends the run
  with ERROR `worker_lost` (see `runcast.gateway.sweeper`);
- on cancellation (arq cancels running jobs after `job_completion_wait` on SIGTERM, or at the job timeout): the run
  is ended with ERROR `worker_shutdown` through `StreamLog.end_run` (atomic: a no-op when it already ended);
- on exit: the key and the index entry are removed (best effort: if Redis is away the key simply expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from runcast.shared.keys import heartbeat_key
from runcast.shared.resilience import RUNNING_KEY, TRANSIENT_ERRORS
from runcast.shared.settings import get_settings
from runcast.shared.streamlog import StreamLog

log = logging.getLogger("runcast.worker")

SHUTDOWN_END_TIMEOUT_S = 5.0
"""How long a cancelled job may spend recording `worker_shutdown` before the process gives up on it."""


async def beat(stream_log: StreamLog, run_id: str, lost_s: float) -> None:
    await stream_log.redis.set(heartbeat_key(run_id), "1", px=max(int(lost_s * 1000), 1))


async def _refresh(stream_log: StreamLog, run_id: str, lost_s: float) -> None:
    every = max(lost_s / 3, 0.05)
    while True:
        await asyncio.sleep(every)
        try:
            await beat(stream_log, run_id, lost_s)
        except TRANSIENT_ERRORS as exc:  # keep trying: the key outlives a blip shorter than lost_s
            log.warning("heartbeat for run %s not refreshed: %s", run_id, exc)


async def _forget(stream_log: StreamLog, run_id: str) -> None:
    with contextlib.suppress(*TRANSIENT_ERRORS):
        await stream_log.redis.delete(heartbeat_key(run_id))
        await stream_log.redis.zrem(RUNNING_KEY, run_id)


@contextlib.asynccontextmanager
async def run_heartbeat(stream_log: StreamLog, run_id: str, lost_s: float | None = None) -> AsyncIterator[None]:
    lost_s = lost_s if lost_s is not None else get_settings().worker_lost_s
    await beat(stream_log, run_id, lost_s)
    await stream_log.redis.zadd(RUNNING_KEY, {run_id: await _server_time(stream_log)})
    refresher = asyncio.create_task(_refresh(stream_log, run_id, lost_s), name=f"heartbeat-{run_id}")
    try:
        yield
    except asyncio.CancelledError:
        log.info("run %s stopped by the worker (shutdown or job timeout)", run_id)
        with contextlib.suppress(*TRANSIENT_ERRORS, TimeoutError):
            await asyncio.wait_for(
                stream_log.end_run(run_id, "worker_shutdown", "the worker stopped before the run finished"),
                SHUTDOWN_END_TIMEOUT_S,
            )
        raise
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await _forget(stream_log, run_id)


async def _server_time(stream_log: StreamLog) -> float:
    seconds, micros = await stream_log.redis.time()
    return seconds + micros / 1e6
