"""The arq job: run one run's agent and publish each event to the run's stream the moment it happens.

Per worker process, not per run (`WorkerRuns`): one writer sends the appends of all runs (`runcast.worker.writer`),
one task refreshes all heartbeats (`runcast.worker.heartbeat`), one watch notices runs ended from outside
(`runcast.worker.watch`). A job opens its run's channel in each and waits for whichever comes first: the agent done
and its events in the log, or the run ended from outside (cancel: an append refused, or the watch saw the status),
in which case the agent task is cancelled wherever it is (model stream or tool).

Stopping: when arq cancels the job itself (worker shutdown after its grace period, abort, job timeout) the run is
ended with ERROR `worker_shutdown` before the cancellation goes on.

Redis refusing writes (OOM, MISCONF, READONLY) or away: the writer retries for RUNCAST_REDIS_RETRY_S; past that the
run's agent is stopped and the run ends with ERROR `store_unavailable` as soon as Redis takes a write again
(`runcast.worker.ending`: retried without deadline, so viewers always get a terminal event).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runcast.shared.conversations import ConversationStore
from runcast.shared.keys import meta_key
from runcast.shared.resilience import StoreUnavailable
from runcast.shared.settings import Settings, get_settings
from runcast.shared.streaming import StreamConfig
from runcast.shared.streamlog import TERMINAL_STATUSES, RunEnded, StreamLog, UnknownRun
from runcast.worker.batcher import CommandBatcher
from runcast.worker.conversation import end_turn, run_history
from runcast.worker.ending import end_when_writable
from runcast.worker.heartbeat import Heartbeats, run_heartbeat
from runcast.worker.providers.base import ModelProvider
from runcast.worker.publisher import publish_events
from runcast.worker.runnable import RunnableAgent, RunRequest, run_events
from runcast.worker.watch import CANCEL_POLL_S, EndWatch
from runcast.worker.writer import AppendWriter

__all__ = ["CANCEL_POLL_S", "WorkerRuns", "WorkerState", "run_agent"]

log = logging.getLogger("runcast.worker")


@dataclass
class WorkerRuns:
    """The per-process services every running job shares."""

    writer: AppendWriter
    heartbeats: Heartbeats
    watch: EndWatch
    batcher: CommandBatcher

    @classmethod
    def on(cls, stream_log: StreamLog, settings: Settings | None = None) -> WorkerRuns:
        conf = settings or get_settings()
        writer = AppendWriter(stream_log, interval_s=conf.worker_write_interval_ms / 1000)
        batcher = CommandBatcher(stream_log.redis)
        heartbeats = Heartbeats(stream_log.redis, conf.worker_lost_s, batcher)
        return cls(writer, heartbeats, EndWatch(stream_log.redis), batcher)

    async def read_meta(self, run_id: str) -> dict[str, str] | None:
        """The run's meta hash (None when it is gone), read in the round trip shared with the other jobs."""
        (meta,) = await self.batcher.run(lambda pipe: pipe.hgetall(meta_key(run_id)))
        return meta or None

    async def aclose(self) -> None:
        await self.batcher.aclose()
        await self.writer.aclose()
        await self.heartbeats.aclose()
        await self.watch.aclose()


@dataclass
class WorkerState:
    """What every job needs, built once per worker process (see `runcast.worker.settings.startup`)."""

    stream_log: StreamLog
    registry: Mapping[str, RunnableAgent]
    provider: ModelProvider
    chunking: StreamConfig = field(default_factory=StreamConfig)
    conversations: ConversationStore | None = None  # None: limits from the environment (worker/conversation.py)
    settings: Settings | None = None  # the worker's settings (None: the environment's)
    _runs: WorkerRuns | None = field(default=None, init=False, repr=False)

    def chunking_for(self, agent_name: str) -> StreamConfig:
        agent = self.registry.get(agent_name)
        return agent.chunking if agent is not None and agent.chunking is not None else self.chunking

    @property
    def runs(self) -> WorkerRuns:
        """Built on first use, in the loop the jobs run in."""
        if self._runs is None:
            self._runs = WorkerRuns.on(self.stream_log, self.settings)
        return self._runs


async def run_agent(ctx: dict[str, Any], run_id: str) -> str:
    state: WorkerState = ctx["runcast"]
    stream_log = state.stream_log
    runs = state.runs
    meta = await runs.read_meta(run_id)
    if meta is None:
        log.warning("run %s has no meta (expired?); skipping", run_id)
        return "unknown"
    if meta.get("external"):
        # Created for a producer outside the worker (`runcast.publisher`): it is never enqueued, but if it ever
        # reaches a worker, two writers on one log must not happen.
        log.warning("run %s belongs to an external producer; not running it", run_id)
        return meta.get("status", "unknown")
    if meta.get("status") != "queued":
        # Ended while queued (cancel), or already started by a worker that died or was stopped (arq retries jobs
        # it cancelled): never run the agent again on top of a half-published stream.
        log.info("run %s is %s, not queued; not running it (again)", run_id, meta.get("status"))
        return meta.get("status", "unknown")
    agent = state.registry.get(meta.get("agent", ""))
    status = ""
    try:
        if agent is None:
            await end_when_writable(
                stream_log, run_id, "unknown_agent", f"no agent named {meta.get('agent')!r} on this worker"
            )
            return "failed"
        history = await run_history(state, meta)
        request = RunRequest.from_meta(run_id, meta, provider=state.provider, registry=state.registry, history=history)
        async with run_heartbeat(stream_log, run_id, heartbeats=runs.heartbeats):
            try:
                status = await _run_until_done_or_ended(state, agent, request)
            except StoreUnavailable as exc:  # its agent is stopped; the run's end waits for Redis (still beating)
                log.error("run %s: %s; ending it with %s once Redis takes writes", run_id, exc, exc.error_type)
                if await end_when_writable(stream_log, run_id, exc.error_type, str(exc)):
                    status = "failed"
    except (RunEnded, UnknownRun):
        log.info("run %s was ended from outside; stopped its agent", run_id)
    except asyncio.CancelledError:
        log.warning("run %s: job cancelled by arq (shutdown, abort or timeout); ending the run", run_id)
        with contextlib.suppress(Exception):
            await asyncio.shield(stream_log.end_run(run_id, "worker_shutdown", "the worker stopped during the run"))
        raise
    except Exception as exc:
        log.exception("run %s failed", run_id)
        await end_when_writable(stream_log, run_id, "internal_error", f"{type(exc).__name__}: {exc}")
    await end_turn(state, run_id, meta)
    if status in TERMINAL_STATUSES:  # our own terminal event is in the log: no need to read it back
        return status
    final = await runs.read_meta(run_id)
    return (final or {}).get("status", "unknown")


async def _run_until_done_or_ended(state: WorkerState, agent: RunnableAgent, request: RunRequest) -> str:
    """Publish the agent's events; stop the agent as soon as the run is known to have ended from outside.

    Returns the status the run's own events moved it to (its terminal status when the agent finished)."""
    runs = state.runs
    run_id = request.run_id
    channel = runs.writer.open(run_id)
    runs.watch.add(channel)
    events = run_events(agent, request)
    publisher = asyncio.create_task(
        publish_events(events, channel, state.chunking_for(agent.name), state.chunking_for), name=f"publish:{run_id}"
    )
    try:
        await asyncio.wait({publisher, channel.ended}, return_when=asyncio.FIRST_COMPLETED)
        if publisher.done():
            publisher.result()  # raises RunEnded or the agent's failure
            return channel.status
        else:
            log.info("run %s ended from outside; cancelling its agent", run_id)
            if channel.error is not None:
                raise channel.error  # RunEnded / UnknownRun, or Redis gone for longer than the retry budget
            return ""
    finally:
        runs.watch.discard(channel)
        channel.close()
        if not publisher.done():
            publisher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await publisher
