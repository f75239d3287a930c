"""The agent run loop: drives a model provider and turns what it streams into StreamingEvents as they happen."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from shared.streaming import (
    StreamingChunk,
    StreamingError,
    StreamingEvent,
    StreamingEventType,
    StreamingMetadata,
)
from worker.agents import Agent
from worker.providers.base import Message, ModelError, ModelProvider, TextDelta, Usage


async def run_agent_events(
    agent: Agent,
    input_text: str,
    provider: ModelProvider,
    *,
    run_id: str | None = None,
    trace_id: str | None = None,
) -> AsyncIterator[StreamingEvent]:
    started = time.perf_counter()
    model_name = agent.model_settings.model or provider.name

    def event(event_type: StreamingEventType, data: object) -> StreamingEvent:
        return StreamingEvent(type=event_type, data=data, run_id=run_id, trace_id=trace_id)  # type: ignore[arg-type]

    def metadata(turns: int, tokens: int) -> StreamingMetadata:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return StreamingMetadata(agent.name, model_name, turns, tokens, round(elapsed_ms, 3))

    yield event(StreamingEventType.START, metadata(0, 0))
    messages = [Message("system", agent.instructions), Message("user", input_text)]
    content, chunks, total_tokens = "", 0, 0
    try:
        async for delta in provider.stream(
            agent_name=agent.name, model=agent.model_settings.model, messages=messages, tools=[]
        ):
            if isinstance(delta, TextDelta) and delta.text:
                content += delta.text
                chunks += 1
                yield event(StreamingEventType.CHUNK, StreamingChunk(content, delta.text, False, chunks))
            elif isinstance(delta, Usage):
                total_tokens += delta.prompt_tokens + delta.completion_tokens
    except ModelError as exc:
        yield event(StreamingEventType.ERROR, StreamingError("model_error", str(exc)))
        return
    yield event(StreamingEventType.METADATA, metadata(1, total_tokens))
    yield event(StreamingEventType.COMPLETE, {"content": content})
