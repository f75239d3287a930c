"""The agent run loop: drives a model provider and turns what it streams into StreamingEvents as they happen.

One turn = one model call. Text deltas become CHUNK events at once (`content` is all of the run's text so far,
`delta` the new text); tool-call pieces are assembled by index and, when the turn ends, each call is run
(TOOL_CALL before, TOOL_RESULT after, the result goes back to the model) or, for a `transfer_to_<agent>` call,
the run switches agent (AGENT_SWITCH) and the new agent continues with the whole history. A turn without tool
calls ends the run: METADATA, then COMPLETE. Failures end it with ERROR (`model_error`, `max_turns_exceeded`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from runcast.shared.streaming import (
    StreamingChunk,
    StreamingError,
    StreamingEvent,
    StreamingEventType,
    StreamingMetadata,
    StreamingToolCall,
    StreamingToolResult,
)
from runcast.worker.agents import Agent
from runcast.worker.providers.base import Message, ModelError, ModelProvider, TextDelta, ToolCallDelta, Usage
from runcast.worker.tools import execute_tool, parse_arguments

TURN_SEPARATOR = "\n\n"
"""Put between two assistant turns' text when neither side has whitespace, so `content` stays readable."""


@dataclass
class PendingCall:
    """A tool call being assembled from streamed pieces."""

    call_id: str = ""
    name: str = ""
    arguments: str = ""

    def add(self, delta: ToolCallDelta) -> None:
        if delta.call_id:
            self.call_id = delta.call_id
        if delta.name:
            self.name += delta.name
        self.arguments += delta.arguments


@dataclass
class RunProgress:
    """What the run has produced so far (shared across turns and agents)."""

    content: str = ""
    deltas: int = 0
    turns: int = 0
    tokens: int | None = None
    history: list[Message] = field(default_factory=list)

    def add_usage(self, usage: Usage) -> None:
        self.tokens = (self.tokens or 0) + usage.total_tokens


async def run_agent_events(
    agent: Agent,
    input_text: str,
    provider: ModelProvider,
    *,
    registry: Mapping[str, Agent] | None = None,
    run_id: str | None = None,
    trace_id: str | None = None,
    max_turns: int | None = None,
    history: list[Message] | None = None,
) -> AsyncIterator[StreamingEvent]:
    """Run `agent` on `input_text` (after `history`, if any) and yield each event the moment it happens."""
    started = time.perf_counter()
    registry = registry or {agent.name: agent}
    turn_limit = max_turns if max_turns is not None else agent.model_settings.max_turns
    progress = RunProgress(history=[*(history or []), Message("user", input_text)])

    def event(event_type: StreamingEventType, data: object) -> StreamingEvent:
        return StreamingEvent(type=event_type, data=data, run_id=run_id, trace_id=trace_id)  # type: ignore[arg-type]

    def metadata(current: Agent) -> StreamingMetadata:
        elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        used = current.provider or provider
        model_name = current.model_settings.model or getattr(used, "model", None) or used.name
        return StreamingMetadata(current.name, model_name, progress.turns, progress.tokens, elapsed_ms)

    yield event(StreamingEventType.START, metadata(agent))
    while True:
        if progress.turns >= turn_limit:
            detail = f"the run used its {turn_limit} turns without a final answer"
            yield event(StreamingEventType.ERROR, StreamingError("max_turns_exceeded", detail))
            return
        progress.turns += 1
        turn_text, calls = "", {}
        model = agent.provider or provider
        messages = [Message("system", agent.instructions), *progress.history]
        try:
            async for delta in model.stream(
                agent_name=agent.name,
                model=agent.model_settings.model,
                messages=messages,
                tools=agent.tool_specs(),
                temperature=agent.model_settings.temperature,
            ):
                if isinstance(delta, TextDelta) and delta.text:
                    text = delta.text
                    if not turn_text and _needs_separator(progress.content, text):
                        text = TURN_SEPARATOR + text
                    turn_text += delta.text
                    progress.content += text
                    progress.deltas += 1
                    chunk = StreamingChunk(progress.content, text, False, progress.deltas)
                    yield event(StreamingEventType.CHUNK, chunk)
                elif isinstance(delta, ToolCallDelta):
                    calls.setdefault(delta.index, PendingCall()).add(delta)
                elif isinstance(delta, Usage):
                    progress.add_usage(delta)
        except ModelError as exc:
            yield event(StreamingEventType.ERROR, StreamingError("model_error", str(exc)))
            return
        ordered = [calls[i] for i in sorted(calls)]
        for n, call in enumerate(ordered):
            call.call_id = call.call_id or f"call_{progress.turns}_{n}"
        progress.history.append(
            Message(
                "assistant",
                turn_text,
                tool_calls=[
                    {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in ordered
                ],
            )
        )
        if not ordered:
            yield event(StreamingEventType.METADATA, metadata(agent))
            yield event(StreamingEventType.COMPLETE, {"content": progress.content})
            return
        next_agent: Agent | None = None
        for call in ordered:
            if next_agent is not None:  # calls after a handoff are answered, not run
                progress.history.append(_tool_message(call, "Not run: the conversation was handed off."))
                continue
            target = agent.handoff_target(call.name)
            if target is not None and target in registry:
                next_agent = registry[target]
                reason = _handoff_reason(call.arguments)
                switch = {"from_agent": agent.name, "to_agent": target, "reason": reason}
                yield event(StreamingEventType.AGENT_SWITCH, switch)
                progress.history.append(_tool_message(call, f"Transferred to {target}."))
                continue
            async for tool_event in _run_tool(agent, call, progress, event):
                yield tool_event
        if next_agent is not None:
            agent = next_agent


EventFactory = Callable[[StreamingEventType, object], StreamingEvent]


async def _run_tool(
    agent: Agent, call: PendingCall, progress: RunProgress, event: EventFactory
) -> AsyncIterator[StreamingEvent]:
    try:
        arguments = parse_arguments(call.arguments)
    except ValueError:
        arguments = {"_raw": call.arguments}
    yield event(StreamingEventType.TOOL_CALL, StreamingToolCall(call.name, arguments, call.call_id, "started"))
    outcome = await execute_tool(agent.tool(call.name), call.name, call.arguments)
    result = StreamingToolResult(call.name, call.call_id, outcome.result, outcome.status, outcome.execution_time_ms)
    yield event(StreamingEventType.TOOL_RESULT, result)
    progress.history.append(_tool_message(call, outcome.for_model()))


def _tool_message(call: PendingCall, content: str) -> Message:
    return Message("tool", content, tool_call_id=call.call_id, name=call.name)


def _handoff_reason(raw_arguments: str) -> str:
    try:
        return str(parse_arguments(raw_arguments).get("reason", ""))
    except ValueError:
        return ""


def _needs_separator(content: str, text: str) -> bool:
    return bool(content) and not content[-1].isspace() and not text[0].isspace()
