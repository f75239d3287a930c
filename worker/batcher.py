"""Per-run bookkeeping commands of many jobs in one pipeline per loop tick.

A job's own commands (read the run's meta at start, list it as running, unlist it at the end) are few, but a worker
starting 200 runs at once would send them as 200 x several round trips, each costing a socket write and read on
both sides. `CommandBatcher.run(build)` queues `build(pipe)` (it adds one or more commands to a pipeline) and
returns their replies; every call made before the loop gets back to the batcher goes out in one non-transactional
pipeline. Commands of one call stay in order on a plain Redis (one connection); on a cluster the pipeline is split
per node, so a caller that needs order across slots awaits one call before making the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

Build = Callable[[Any], None]
"""Adds commands to a pipeline: `lambda pipe: pipe.hgetall(key)`."""


class CommandBatcher:
    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._queued: list[tuple[Build, asyncio.Future[list[Any]]]] = []
        self._task: asyncio.Task[None] | None = None
        self.pipelines = 0  # round trips sent (for tests)

    async def run(self, build: Build) -> list[Any]:
        """The replies of the commands `build` adds, sent with whatever else is queued; raises their first error."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append((build, done))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush(), name="runcast-command-batcher")
        return await done

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every job that is ready this tick queue its commands
        while self._queued:
            queued, self._queued = self._queued, []
            try:
                await self._send(queued)
            except BaseException as exc:
                for _, done in queued:
                    if not done.done():
                        done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("batcher stopped"))
                if not isinstance(exc, Exception):
                    raise

    async def _send(self, queued: list[tuple[Build, asyncio.Future[list[Any]]]]) -> None:
        sizes = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for build, _ in queued:
                before = len(pipe)
                build(pipe)
                sizes.append(len(pipe) - before)
            self.pipelines += 1
            replies = await pipe.execute(raise_on_error=False)
        at = 0
        for (_, done), size in zip(queued, sizes, strict=True):
            mine = replies[at : at + size]
            at += size
            if done.done():
                continue
            error = next((reply for reply in mine if isinstance(reply, Exception)), None)
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(mine)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
