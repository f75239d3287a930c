"""Running one agent job straight against a real Redis (no gateway): the worker side of a run, observed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from runcast.shared.ids import new_run_id
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.shared.streamlog import Entry, StreamLog
from runcast.worker.agents import Agent, default_registry
from runcast.worker.job import WorkerState, run_agent
from runcast.worker.providers.base import ModelProvider
from runcast.worker.providers.scripted import ScriptedProvider


@dataclass
class Finished:
    run_id: str
    result: str
    entries: list[Entry]
    meta: dict[str, str]

    @property
    def events(self) -> list[StreamingEvent]:
        return [StreamingEvent.from_json(e.event) for e in self.entries]

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.entries]

    def of_type(self, event_type: str) -> list[dict]:
        return [event.to_dict()["data"] for event in self.events if event.type.value == event_type]


@contextlib.asynccontextmanager
async def worker_state(
    redis_url: str,
    *,
    registry: Mapping[str, Agent] = default_registry,
    provider: ModelProvider | None = None,
    chunking: StreamConfig | None = None,
) -> AsyncIterator[WorkerState]:
    redis = redis_from_url(redis_url)
    model = provider or ScriptedProvider(delay_ms=0)
    try:
        yield WorkerState(StreamLog(redis), registry, model, chunking or StreamConfig())
    finally:
        await redis.aclose()
        close = getattr(model, "aclose", None)
        if close is not None:
            await close()


async def start_job(state: WorkerState, agent: str, text: str) -> tuple[str, asyncio.Task[str]]:
    run_id = new_run_id()
    await state.stream_log.create_run(run_id, agent, text)
    return run_id, asyncio.create_task(run_agent({"runcast": state}, run_id))


async def finished(state: WorkerState, run_id: str, job: asyncio.Task[str], within_s: float = 20) -> Finished:
    result = await asyncio.wait_for(job, within_s)
    meta = await state.stream_log.get_meta(run_id) or {}
    return Finished(run_id, result, await state.stream_log.read_all(run_id), meta)


async def run_job(state: WorkerState, agent: str, text: str) -> Finished:
    run_id, job = await start_job(state, agent, text)
    return await finished(state, run_id, job)


async def wait_for_entry(state: WorkerState, run_id: str, event_type: str, within_s: float = 10) -> Entry:
    """Poll the run's stream until an entry of `event_type` is there."""
    async with asyncio.timeout(within_s):
        while True:
            for entry in await state.stream_log.read_all(run_id):
                if entry.type == event_type:
                    return entry
            await asyncio.sleep(0.01)
