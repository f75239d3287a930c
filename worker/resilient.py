"""An arq Worker whose poll loop outlives a Redis outage.

arq lets any Redis error in its poll loop escape `Worker.main()`, which stops the worker. redis-py's retry covers a
command's send/receive but not taking a connection from the pool, whose handshake fails while Redis restarts
(connection reset, or `LOADING` while it replays its AOF). `ResilientWorker` retries the poll iteration with
backoff for up to RUNCAST_REDIS_RETRY_S of continuous outage, then lets the error stop the worker (its supervisor
restarts it; runs it was executing end with `worker_lost`). `runcast worker` uses it; plain
`arq runcast.worker.settings.WorkerSettings` runs arq's own Worker, without this.
"""

from __future__ import annotations

from typing import Any

from arq.worker import Worker, get_kwargs

from runcast.shared.redis_client import queue_redis
from runcast.shared.resilience import TRANSIENT_ERRORS, Backoff
from runcast.shared.settings import get_settings


class ResilientWorker(Worker):
    def __init__(self, *args: Any, redis_retry_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._backoff = Backoff(redis_retry_s if redis_retry_s is not None else get_settings().redis_retry_s)

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except TRANSIENT_ERRORS as exc:
            await self._backoff.wait(exc)  # re-raises once the outage has lasted longer than allowed
        else:
            self._backoff.reset()


def run_resilient_worker(settings_cls: type) -> ResilientWorker:
    """Run arq's Worker for `settings_cls` on runcast's own queue client (`queue_redis`: the same retries for a plain
    URL and a Sentinel URL; arq's `create_pool` drops them for Sentinel)."""
    kwargs: dict[str, Any] = {**get_kwargs(settings_cls), "redis_pool": queue_redis(get_settings())}
    worker = ResilientWorker(**kwargs)
    worker.run()
    return worker
