"""End runs whose worker is gone: a periodic sweep over the running-runs index, in every gateway.

A worker keeps `heartbeat_key(run_id)` alive (short TTL) while it runs the agent and lists the run in `RUNNING_KEY`
(see `runcast.worker.heartbeat`).
A listed run whose heartbeat key has expired has lost its worker (SIGKILL, OOM, host gone,
or cut off from Redis for longer than RUNCAST_WORKER_LOST_S): the sweeper ends it with ERROR `worker_lost` (status
`failed`) through `StreamLog.end_run`, whose check-and-append is one Lua script, so when several gateways sweep at
once the run still ends exactly once. Viewers blocked on the run then receive that terminal event and finish.
A viewer therefore waits at most RUNCAST_WORKER_LOST_S + the sweep interval after its worker died.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter
from redis.exceptions import RedisError

from runcast.shared.keys import heartbeat_key
from runcast.shared.resilience import RUNNING_KEY, Periodic
from runcast.shared.streamlog import StreamLog, UnknownRun

log = logging.getLogger("runcast.gateway.sweeper")

RUNS_LOST = Counter("runcast_runs_worker_lost_total", "runs this gateway ended because their worker stopped beating")

BATCH = 500


class LostRunSweeper:
    def __init__(self, stream_log: StreamLog, *, interval_s: float) -> None:
        self.stream_log = stream_log
        self.interval_s = interval_s
        self._periodic = Periodic(
            "runcast-lost-run-sweeper", self.sweep_once, interval_s, errors=(RedisError, OSError), logger=log
        )

    async def sweep_once(self) -> list[str]:
        """End every listed run whose heartbeat has expired; returns the runs this call ended."""
        redis = self.stream_log.redis
        ended: list[str] = []
        start = 0
        while True:
            run_ids: list[str] = await redis.zrange(RUNNING_KEY, start, start + BATCH - 1)
            if not run_ids:
                return ended
            async with redis.pipeline(transaction=False) as pipe:
                for run_id in run_ids:
                    pipe.exists(heartbeat_key(run_id))
                alive = await pipe.execute()
            stale = [run_id for run_id, beating in zip(run_ids, alive, strict=True) if not beating]
            for run_id in stale:
                try:
                    entry_id = await self.stream_log.end_run(run_id, "worker_lost", "the worker running it stopped")
                except UnknownRun:  # expired meanwhile: nothing left to end
                    continue
                if entry_id is not None:  # None: it had already ended (finished, cancelled, or another gateway)
                    log.warning("run %s: worker heartbeat lost; ended with worker_lost", run_id)
                    RUNS_LOST.inc()
                    ended.append(run_id)
            if stale:
                await redis.zrem(RUNNING_KEY, *stale)
            start += len(run_ids) - len(stale)

    def start(self) -> LostRunSweeper:
        self._periodic.start()
        return self

    async def stop(self) -> None:
        await self._periodic.stop()
