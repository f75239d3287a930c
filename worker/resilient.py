"""An arq Worker that starts a queued run within milliseconds and whose poll loop outlives a Redis outage.

Start latency: arq sleeps `poll_delay` between polls of its queue. `ResilientWorker` instead waits on the queue's
doorbell (`runcast.shared.doorbell`: BLPOP with the time left until the next regular poll as its timeout) and starts
the rung jobs at once; arq's regular poll still runs every `poll_delay` (deferred and retried jobs, missed bells,
aborts, health). arq's loop itself no longer sleeps (`poll_delay_s` is 0 for it): the wait is in `_poll_iteration`.
A worker with no free slot does not take bells (another worker gets them); it waits for a slot instead.

Claiming jobs: arq claims each job with WATCH, EXISTS, ZSCORE, MULTI/PSETEX/EXEC (four round trips, one job after
the other). `start_jobs` claims all the jobs it was given with one script doing the same checks atomically (the job
is due, its in-progress key absent -> set it), then starts arq's own `run_job` for each claimed one exactly as arq
does (semaphore, job counter, task). And the regular poll re-reads every due job id, including those running here or
on another worker: ids running here are skipped, and ids found running elsewhere are not checked again for
ELSEWHERE_S, so a poll costs O(new jobs), not O(running jobs x workers).

Outages: arq lets any Redis error in its poll loop escape `Worker.main()`, which stops the worker. redis-py's retry
covers a command's send/receive but not taking a connection from the pool, whose handshake fails while Redis
restarts (connection reset, or `LOADING` while it replays its AOF). `ResilientWorker` retries the poll iteration with
backoff for up to RUNCAST_REDIS_RETRY_S of continuous outage, then lets the error stop the worker (its supervisor
restarts it; runs it was executing end with `worker_lost`). Redis refusing writes while it answers (OOM at
maxmemory, MISCONF, READONLY) never stops it: the poll waits with backoff for as long as it lasts (a restart would
not help), and arq's own job writes (a job's first MULTI, its end-of-job MULTI) are retried until Redis takes them
instead of failing the job task, which arq's poll would re-raise and stop the worker with. `runcast worker` uses
it; plain `arq runcast.worker.settings.WorkerSettings` runs arq's own Worker, without this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq.constants import in_progress_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker, get_kwargs
from redis.exceptions import ReadOnlyError

from runcast.shared.doorbell import wait_for_bells
from runcast.shared.redis_client import queue_redis
from runcast.shared.resilience import STORE_ERRORS, STORE_REFUSALS, TRANSIENT_ERRORS, Backoff, describe
from runcast.shared.settings import get_settings

log = logging.getLogger("arq.worker")

WRITES_REFUSED = (*STORE_REFUSALS, ReadOnlyError)
"""Redis answers but takes no writes: restarting the worker would not help (each retry reconnects anyway, which
follows a failover behind a DNS name or proxy), so the poll waits for as long as it lasts."""

ELSEWHERE_S = 2.0
"""How long a due job found running on another worker is left out of this worker's regular polls."""

# KEYS[1]: the queue (sorted set: job id -> due time ms); KEYS[i + 1]: job i's in-progress key.
# ARGV[1]: now (ms); ARGV[2]: in-progress TTL (ms); ARGV[i + 2]: job i's id.
# Per job: its score when this call claimed it (due, not in progress: the in-progress key is now set), else 0.
CLAIM_LUA = """
local claimed = {}
for i = 1, #KEYS - 1 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i + 2])
  if score and tonumber(score) <= tonumber(ARGV[1]) and redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SET', KEYS[i + 1], '1', 'PX', ARGV[2])
    claimed[i] = score
  else
    claimed[i] = 0
  end
end
return claimed
"""


class ResilientWorker(Worker):
    def __init__(self, *args: Any, redis_retry_s: float | None = None, doorbell: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backoff = Backoff(redis_retry_s if redis_retry_s is not None else get_settings().redis_retry_s)
        self._refused = Backoff(None)
        self.doorbell = doorbell
        self.poll_every_s = self.poll_delay_s
        if doorbell:
            self.poll_delay_s = 0.0  # arq's `poll()` no longer sleeps; `_poll_iteration` waits on the doorbell
        self._polled_at = float("-inf")
        self._polling = False
        self._elsewhere: dict[bytes, float] = {}
        self._claim_script: Any = None
        self.bells = 0  # jobs started from a bell (for tests and curiosity)

    async def _poll_iteration(self) -> None:
        try:
            if self.doorbell:
                await self._doorbell_iteration()
            else:
                await self._regular_poll()
        except WRITES_REFUSED as exc:  # Redis answers but refuses writes (OOM, MISCONF, READONLY): wait, however long
            await self._refused.wait(exc)
        except TRANSIENT_ERRORS as exc:
            await self._backoff.wait(exc)  # re-raises once the outage has lasted longer than allowed
        else:
            self._backoff.reset()
            self._refused.reset()

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's `run_job`, retried when its first step (one MULTI: read the job, count the try) fails with a store
        error: the MULTI ran as a whole or not at all, and nothing else of the job ran yet (its bookkeeping at the
        end, `finish_job`, never raises one, see below), so trying again is safe. Without this the task would fail,
        arq's poll would re-raise it and stop the worker, and the job would stay claimed (its in-progress key set)
        for `job_timeout` without running."""
        backoff = Backoff(None)
        while True:
            try:
                return await super().run_job(job_id, score)
            except STORE_ERRORS as exc:
                log.warning("job %s could not start (%s); retrying", job_id, describe(exc))
                await backoff.wait(exc)

    async def finish_job(self, job_id: str, *args: Any) -> None:
        """arq's end-of-job bookkeeping (one MULTI: drop the in-progress key, the job and its retry count, store the
        result), retried until Redis takes it. Under OOM Redis refuses every MULTI, even one of DELs; arq would let
        the error kill the worker (its poll re-raises a failed job task)."""
        await _until_stored(lambda: super(ResilientWorker, self).finish_job(job_id, *args), f"job {job_id} finish")

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        await _until_stored(
            lambda: super(ResilientWorker, self).finish_failed_job(job_id, result_data), f"job {job_id} finish"
        )

    async def _doorbell_iteration(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._polled_at >= self.poll_every_s:
            await self._regular_poll()
            self._polled_at = loop.time()
        wait_s = self._polled_at + self.poll_every_s - loop.time()
        free = self.max_jobs - self.job_counter
        if not self.allow_pick_jobs or free <= 0:
            await self._wait_for_a_slot(wait_s)
            return
        job_ids = await wait_for_bells(self.pool, self.queue_name, free, wait_s)
        if job_ids and self.allow_pick_jobs:
            before = self.job_counter
            await self.start_jobs(job_ids)
            self.bells += self.job_counter - before

    async def _regular_poll(self) -> None:
        self._polling = True
        try:
            await super()._poll_iteration()
        finally:
            self._polling = False

    async def _wait_for_a_slot(self, timeout_s: float) -> None:
        running = [task for task in self.tasks.values() if not task.done()]
        if running and timeout_s > 0:
            await asyncio.wait(running, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        elif timeout_s > 0:
            await asyncio.sleep(timeout_s)

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """Claim and start as many of `job_ids` as there are free slots, in one round trip."""
        now = asyncio.get_running_loop().time()
        fresh = [j for j in job_ids if j.decode() not in self.tasks and self._elsewhere.get(j, 0.0) <= now]
        take = fresh[: max(self.max_jobs - self.job_counter, 0)]
        if not take:
            return
        for _ in take:  # reserve the slots first, as arq does per job
            await self.sem.acquire()
            self.job_counter += 1
        try:
            scores = await self._claim(take)
        except BaseException:
            for _ in take:
                self._release_sem_dec_counter_on_complete()
            raise
        for job_id_b, score in zip(take, scores, strict=True):
            job_id = job_id_b.decode()
            if not score:  # not due, finished, or running elsewhere
                self._release_sem_dec_counter_on_complete()
                if self._polling:
                    self._elsewhere[job_id_b] = now + ELSEWHERE_S
                continue
            task = self.loop.create_task(self.run_job(job_id, int(float(score))))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task
        if len(self._elsewhere) > 4 * self.queue_read_limit:
            self._elsewhere = {j: until for j, until in self._elsewhere.items() if until > now}

    async def _claim(self, job_ids: list[bytes]) -> list[Any]:
        if self._claim_script is None:
            self._claim_script = self.pool.register_script(CLAIM_LUA)
        keys = [self.queue_name, *(in_progress_key_prefix + j.decode() for j in job_ids)]
        args = [timestamp_ms(), int(self.in_progress_timeout_s * 1000), *job_ids]
        return await self._claim_script(keys=keys, args=args)


async def _until_stored(call: Callable[[], Awaitable[None]], what: str) -> None:
    """Run an idempotent write until Redis takes it (store errors retried with backoff, no deadline)."""
    backoff = Backoff(None)
    while True:
        try:
            return await call()
        except STORE_ERRORS as exc:
            if backoff.failures == 0:
                log.warning("%s not recorded yet (%s); retrying", what, describe(exc))
            await backoff.wait(exc)


def run_resilient_worker(settings_cls: type) -> ResilientWorker:
    """Run arq's Worker for `settings_cls` on runcast's own queue client (`queue_redis`: the same retries for a plain
    URL and a Sentinel URL; arq's `create_pool` drops them for Sentinel)."""
    kwargs: dict[str, Any] = {**get_kwargs(settings_cls), "redis_pool": queue_redis(get_settings())}
    worker = ResilientWorker(**kwargs)
    worker.run()
    return worker
