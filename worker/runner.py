"""The agent run loop: drives a model provider and turns what it streams into StreamingEvents as they happen.

One turn = one model call. Text deltas become CHUNK events at once (`content` is all of the run's text so far,
`delta` the new text); tool-call pieces are assembled by index and, when the turn ends, each call is run
(TOOL_CALL before, TOOL_RESULT after, the result goes back to the model) or, for a `transfer_to_<agent>` call,
the run switches agent (AGENT_SWITCH) and the new agent continues with the whole history. A turn without tool
calls ends the run: METADATA, then COMPLETE. Failures end it with ERROR (`model_error`, `max_turns_exceeded`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from runcast.shared.streaming import StreamingEvent
from runcast.worker.agents import Agent
from runcast.worker.events import RunEvents
from runcast.worker.providers.base import Message, ModelError, ModelProvider, TextDelta, ToolCallDelta, Usage
from runcast.worker.tools import execute_tool, parse_arguments


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
    registry = registry or {agent.name: agent}
    turn_limit = max_turns if max_turns is not None else agent.model_settings.max_turns
    history = [*(history or []), Message("user", input_text)]
    run = RunEvents(run_id, agent.name, _model_name(agent, provider), trace_id=trace_id)

    yield run.start()
    while True:
        if run.turns >= turn_limit:
            yield run.error("max_turns_exceeded", f"the run used its {turn_limit} turns without a final answer")
            return
        run.new_turn()
        turn_text, calls = "", {}
        model = agent.provider or provider
        messages = [Message("system", agent.instructions), *history]
        try:
            async for delta in model.stream(
                agent_name=agent.name,
                model=agent.model_settings.model,
                messages=messages,
                tools=agent.tool_specs(),
                temperature=agent.model_settings.temperature,
            ):
                if isinstance(delta, TextDelta) and delta.text:
                    turn_text += delta.text
                    chunk = run.chunk(delta.text)
                    if chunk is not None:
                        yield chunk
                elif isinstance(delta, ToolCallDelta):
                    calls.setdefault(delta.index, PendingCall()).add(delta)
                elif isinstance(delta, Usage):
                    run.add_tokens(delta.total_tokens)
        except ModelError as exc:
            yield run.error("model_error", str(exc))
            return
        ordered = [calls[i] for i in sorted(calls)]
        for n, call in enumerate(ordered):
            call.call_id = call.call_id or f"call_{run.turns}_{n}"
        history.append(
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
            for event in run.finish():
                yield event
            return
        next_agent: Agent | None = None
        for call in ordered:
            if next_agent is not None:  # calls after a handoff are answered, not run
                history.append(_tool_message(call, "Not run: the conversation was handed off."))
                continue
            target = agent.handoff_target(call.name)
            if target is not None and target in registry:
                next_agent = registry[target]
                yield run.agent_switch(target, _handoff_reason(call.arguments))
                history.append(_tool_message(call, f"Transferred to {target}."))
                continue
            async for tool_event in _run_tool(agent, call, history, run):
                yield tool_event
        if next_agent is not None:
            agent = next_agent
            run.model_name = _model_name(agent, provider)


def _model_name(agent: Agent, provider: ModelProvider) -> str:
    used = agent.provider or provider
    return agent.model_settings.model or getattr(used, "model", None) or used.name


async def _run_tool(
    agent: Agent, call: PendingCall, history: list[Message], run: RunEvents
) -> AsyncIterator[StreamingEvent]:
    try:
        arguments = parse_arguments(call.arguments)
    except ValueError:
        arguments = {"_raw": call.arguments}
    yield run.tool_call(call.name, arguments, call.call_id)
    outcome = await execute_tool(agent.tool(call.name), call.name, call.arguments)
    failed = outcome.status != "completed"
    yield run.tool_result(
        call.name, call.call_id, outcome.result, failed=failed, execution_time_ms=outcome.execution_time_ms
    )
    history.append(_tool_message(call, outcome.for_model()))


def _tool_message(call: PendingCall, content: str) -> Message:
    return Message("tool", content, tool_call_id=call.call_id, name=call.name)


def _handoff_reason(raw_arguments: str) -> str:
    try:
        return str(parse_arguments(raw_arguments).get("reason", ""))
    except ValueError:
        return ""
