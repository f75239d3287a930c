"""Noticing, for every run of a worker process, that the run was ended from outside (cancel) — one check per tick.

A run can be ended by someone else (`POST /v1/runs/{id}/cancel`, the lost-run sweeper): its terminal event is then
in the log and the append script refuses anything more. A run that is publishing learns it from the reply to its
next append (the writer fails its channel with `RunEnded`), at no extra cost. A quiet run (a slow tool, a model that
has not answered yet) needs a look: every `every_s` the watch reads the status of the runs that had no append reply
during the last `every_s`, all in one pipeline, and fails the channels of those that have ended. Their jobs then
cancel the agent. So cancel reaches an agent within about 2 x `every_s` whatever it is doing, and a busy worker
pays for the watch only for the runs that are quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from runcast.shared.keys import meta_key
from runcast.shared.resilience import TRANSIENT_ERRORS
from runcast.shared.streamlog import TERMINAL_STATUSES, RunEnded
from runcast.worker.writer import RunChannel

log = logging.getLogger("runcast.worker")

CANCEL_POLL_S = 0.15
"""How often quiet runs' status is read (cancel reaches the agent within about twice this)."""
CHECK_BATCH = 1_000


class EndWatch:
    """Status checks of the quiet runs of one worker process; the task runs while any run is watched."""

    def __init__(self, redis: object, every_s: float = CANCEL_POLL_S) -> None:
        self.redis = redis
        self.every_s = every_s
        self.channels: dict[str, RunChannel] = {}
        self._task: asyncio.Task[None] | None = None
        self.checks = 0  # statuses read (for tests: a busy run is not polled)

    def add(self, channel: RunChannel) -> None:
        channel.last_ack = time.monotonic()
        self.channels[channel.run_id] = channel
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="runcast-end-watch")

    def discard(self, channel: RunChannel) -> None:
        if self.channels.get(channel.run_id) is channel:
            del self.channels[channel.run_id]

    async def check_once(self) -> list[str]:
        """Read the status of every quiet run; fail the channels of those that ended. Returns their run ids."""
        now = time.monotonic()
        quiet = [c for c in self.channels.values() if now - c.last_ack >= self.every_s and c.error is None]
        ended = []
        for start in range(0, len(quiet), CHECK_BATCH):
            batch = quiet[start : start + CHECK_BATCH]
            async with self.redis.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
                for channel in batch:
                    pipe.hget(meta_key(channel.run_id), "status")
                statuses = await pipe.execute()
            self.checks += len(batch)
            for channel, status in zip(batch, statuses, strict=True):
                if isinstance(status, bytes):
                    status = status.decode()
                if status is None or status in TERMINAL_STATUSES:
                    channel.fail(RunEnded(channel.run_id))
                    ended.append(channel.run_id)
        return ended

    async def _run(self) -> None:
        while self.channels:
            await asyncio.sleep(self.every_s)
            try:
                await self.check_once()
            except TRANSIENT_ERRORS as exc:  # a blip must not stop healthy runs; appends surface a real outage
                log.warning("status check of %d runs failed (%s); retrying", len(self.channels), exc)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
