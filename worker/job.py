"""The arq job: run one run's agent and publish each event to the run's stream the moment it happens."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.streaming import StreamingError, StreamingEvent, StreamingEventType
from shared.streamlog import RunEnded, StreamLog, UnknownRun
from worker.agents import Agent
from worker.heartbeat import run_heartbeat
from worker.providers.base import ModelProvider
from worker.runner import run_agent_events

log = logging.getLogger("runcast.worker")


@dataclass
class WorkerState:
    """What every job needs, built once per worker process (see `worker.settings.startup`)."""

    stream_log: StreamLog
    registry: Mapping[str, Agent]
    provider: ModelProvider


async def run_agent(ctx: dict[str, Any], run_id: str) -> str:
    state: WorkerState = ctx["runcast"]
    stream_log = state.stream_log
    meta = await stream_log.get_meta(run_id)
    if meta is None:
        log.warning("run %s has no meta (expired?); skipping", run_id)
        return "unknown"
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
        async with run_heartbeat(stream_log, run_id):
            async for event in run_agent_events(agent, meta.get("input", ""), state.provider, run_id=run_id):
                await stream_log.append(run_id, event)
    except (RunEnded, UnknownRun):
        log.info("run %s was ended from outside; stopping its agent", run_id)
    except Exception as exc:
        log.exception("run %s failed", run_id)
        error = StreamingError("internal_error", f"{type(exc).__name__}: {exc}")
        try:
            await stream_log.append(run_id, StreamingEvent(StreamingEventType.ERROR, error, run_id=run_id))
        except (RunEnded, UnknownRun):
            pass
    final = await stream_log.get_meta(run_id)
    return (final or {}).get("status", "unknown")
