"""The arq job: run one run's agent and publish each event to the run's stream the moment it happens.

Stopping: a run can be ended from outside (`POST /v1/runs/{id}/cancel` -> `StreamLog.end_run`, status
`cancelled`). While the agent runs, a watcher polls the run's status every `CANCEL_POLL_S` and cancels the agent
task as soon as the run has ended, wherever it is (model stream or tool); an append after the end raises
`RunEnded`, which also just stops the job quietly. When arq cancels the job itself (worker shutdown after its
grace period, abort, job timeout) the run is ended with ERROR `worker_shutdown` before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from runcast.shared.conversations import ConversationStore
from runcast.shared.keys import meta_key
from runcast.shared.streaming import StreamConfig, StreamingError, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import TERMINAL_STATUSES, RunEnded, StreamLog, UnknownRun
from runcast.worker.conversation import end_turn, run_history
from runcast.worker.heartbeat import run_heartbeat
from runcast.worker.providers.base import ModelProvider
from runcast.worker.publisher import publish_events
from runcast.worker.runnable import RunnableAgent, RunRequest, run_events

log = logging.getLogger("runcast.worker")

CANCEL_POLL_S = 0.15
"""How often a running job checks whether its run was ended from outside (cancel reaches the agent within this)."""


@dataclass
class WorkerState:
    """What every job needs, built once per worker process (see `runcast.worker.settings.startup`)."""

    stream_log: StreamLog
    registry: Mapping[str, RunnableAgent]
    provider: ModelProvider
    chunking: StreamConfig = field(default_factory=StreamConfig)
    conversations: ConversationStore | None = None  # None: limits from the environment (worker/conversation.py)

    def chunking_for(self, agent_name: str) -> StreamConfig:
        agent = self.registry.get(agent_name)
        return agent.chunking if agent is not None and agent.chunking is not None else self.chunking


async def run_agent(ctx: dict[str, Any], run_id: str) -> str:
    state: WorkerState = ctx["runcast"]
    stream_log = state.stream_log
    meta = await stream_log.get_meta(run_id)
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
    try:
        if agent is None:
            error = StreamingError("unknown_agent", f"no agent named {meta.get('agent')!r} on this worker")
            await stream_log.append(run_id, StreamingEvent(StreamingEventType.ERROR, error, run_id=run_id))
            return "failed"
        history = await run_history(state, meta)
        async with run_heartbeat(stream_log, run_id):
            request = RunRequest.from_meta(
                run_id, meta, provider=state.provider, registry=state.registry, history=history
            )
            await _run_until_done_or_ended(state, agent, request)
    except (RunEnded, UnknownRun):
        log.info("run %s was ended from outside; stopped its agent", run_id)
    except asyncio.CancelledError:
        log.warning("run %s: job cancelled by arq (shutdown, abort or timeout); ending the run", run_id)
        with contextlib.suppress(Exception):
            await asyncio.shield(stream_log.end_run(run_id, "worker_shutdown", "the worker stopped during the run"))
        raise
    except Exception as exc:
        log.exception("run %s failed", run_id)
        with contextlib.suppress(RunEnded, UnknownRun):
            await stream_log.end_run(run_id, "internal_error", f"{type(exc).__name__}: {exc}")
    await end_turn(state, run_id, meta)
    final = await stream_log.get_meta(run_id)
    return (final or {}).get("status", "unknown")


async def _run_until_done_or_ended(state: WorkerState, agent: RunnableAgent, request: RunRequest) -> None:
    """Publish the agent's events; stop it within CANCEL_POLL_S once the run has been ended from outside."""
    run_id = request.run_id
    events = run_events(agent, request)
    publisher = asyncio.create_task(
        publish_events(events, state.stream_log, run_id, state.chunking_for(agent.name), state.chunking_for),
        name=f"publish:{run_id}",
    )
    watcher = asyncio.create_task(_wait_until_ended(state.stream_log, run_id), name=f"watch:{run_id}")
    try:
        await asyncio.wait({publisher, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if publisher.done():
            publisher.result()  # raises RunEnded or the agent's failure
        else:
            log.info("run %s ended from outside; cancelling its agent", run_id)
    finally:
        for task in (publisher, watcher):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RunEnded, UnknownRun):
                    await task


async def _wait_until_ended(stream_log: StreamLog, run_id: str) -> None:
    """Return once the run's status is terminal (or its meta is gone)."""
    while True:
        await asyncio.sleep(CANCEL_POLL_S)
        try:
            status = await stream_log.redis.hget(meta_key(run_id), "status")
        except (RedisError, OSError) as exc:  # a blip must not stop a healthy run; appends will surface a real outage
            log.warning("run %s: status check failed (%s); retrying", run_id, exc)
            continue
        if status is None or status in TERMINAL_STATUSES:
            return
