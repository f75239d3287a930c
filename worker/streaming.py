"""The seed framework's streaming API on runcast's agent loop: `run_streaming` and `StreamingAgent`.

Unlike the seed (which waited for the run to end and sliced the final text), `run_streaming` yields each event
the moment the model produces it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

from runcast.shared.ids import new_run_id
from runcast.shared.streaming import ChunkType, StreamChunk, StreamingChunk, StreamingEvent, StreamingEventType
from runcast.worker.agents import Agent, default_registry
from runcast.worker.providers.base import Message, ModelProvider
from runcast.worker.providers.scripted import ScriptedProvider
from runcast.worker.runner import run_agent_events


@dataclass
class RunState:
    """Where a run starts: its id, the conversation so far (the last `user` message is the input), the agent."""

    messages: list[Message]
    current_agent_name: str
    run_id: str = field(default_factory=new_run_id)
    trace_id: str | None = None

    @classmethod
    def for_input(cls, agent_name: str, text: str, **kwargs: object) -> RunState:
        """A run of `agent_name` on one user message."""
        return cls(messages=[Message("user", text)], current_agent_name=agent_name, **kwargs)  # type: ignore[arg-type]


@dataclass
class RunConfig:
    """How to run: which agents exist, which model provider drives them, how many turns at most."""

    agent_registry: Mapping[str, Agent] = field(default_factory=lambda: default_registry)
    model_provider: ModelProvider = field(default_factory=ScriptedProvider)
    max_turns: int | None = None


async def run_streaming(initial_state: RunState, config: RunConfig) -> AsyncIterator[StreamingEvent]:
    """Run the state's agent and yield every StreamingEvent as it happens (START ... COMPLETE or ERROR)."""
    agent = config.agent_registry.get(initial_state.current_agent_name)
    if agent is None:
        raise KeyError(f"no agent named {initial_state.current_agent_name!r}")
    messages = list(initial_state.messages)
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last_user is None:
        raise ValueError("the run state has no user message to answer")
    history, input_text = messages[:last_user] + messages[last_user + 1 :], messages[last_user].content
    async for event in run_agent_events(
        agent,
        input_text,
        config.model_provider,
        registry=config.agent_registry,
        run_id=initial_state.run_id,
        trace_id=initial_state.trace_id,
        max_turns=config.max_turns,
        history=history,
    ):
        yield event


class StreamingAgent:
    """The seed's convenience wrapper: `stream_response(message)` yields `StreamChunk`s of new text as it arrives
    (`content` is the new piece), then one final chunk; tool calls, tool results and errors come through as
    chunks of their `ChunkType`."""

    def __init__(
        self, agent_name: str = "echo", config: RunConfig | None = None, *, agent: Agent | None = None
    ) -> None:
        self.config = config or RunConfig()
        if agent is not None:
            self.config = RunConfig({**self.config.agent_registry, agent.name: agent}, self.config.model_provider)
            agent_name = agent.name
        self.agent_name = agent_name

    async def stream_response(self, message: str) -> AsyncIterator[StreamChunk]:
        """Run the agent on `message`, yielding new text as it arrives, tool calls/results and errors as chunks."""
        state = RunState.for_input(self.agent_name, message)
        sequence = itertools.count()
        async for event in run_streaming(state, self.config):
            chunk = _to_chunk(event, state.run_id, sequence)
            if chunk is not None:
                yield chunk


def _to_chunk(event: StreamingEvent, run_id: str, sequence: itertools.count[int]) -> StreamChunk | None:
    data = event.data
    meta = {"run_id": run_id, "event_type": event.type.value, "timestamp": event.timestamp}
    if event.type is StreamingEventType.CHUNK and isinstance(data, StreamingChunk):
        n = next(sequence)
        meta["token_count"] = data.token_count
        return StreamChunk(data.delta, f"chunk_{n}", n, False, ChunkType.TEXT, meta)
    kinds = {
        StreamingEventType.TOOL_CALL: ChunkType.TOOL_CALL,
        StreamingEventType.TOOL_RESULT: ChunkType.TOOL_RESULT,
        StreamingEventType.METADATA: ChunkType.METADATA,
        StreamingEventType.ERROR: ChunkType.ERROR,
    }
    kind = kinds.get(event.type)
    if kind is None and event.type is not StreamingEventType.COMPLETE:
        return None
    n = next(sequence)
    payload = event.to_dict()["data"]
    final = event.is_terminal
    if kind is ChunkType.ERROR:
        return StreamChunk(f"[Error: {payload.get('detail', '')}]", f"chunk_{n}", n, True, kind, {**meta, **payload})
    return StreamChunk("", f"chunk_{n}", n, final, kind or ChunkType.TEXT, {**meta, "data": payload})
