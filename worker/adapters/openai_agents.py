"""OpenAI Agents SDK agents in runcast workers (`pip install 'runcast[openai-agents]'`; tested with openai-agents 0.24).

`OpenAIAgentsAgent` runs `agents.Runner.run_streamed(agent, input)` and maps what `stream_events()` reports to runcast
events as it arrives:

| SDK stream event | runcast event |
|---|---|
| raw `response.created` | (a new model turn: turns and the agent's model in METADATA) |
| raw `response.output_text.delta` (`ResponseTextDeltaEvent`) | one CHUNK per delta |
| raw `response.completed` | its usage -> `total_tokens` in METADATA |
| run item `message_output_created` | the part of the message that was not streamed as deltas, if any, as one CHUNK |
| run item `tool_called` / `tool_output` | TOOL_CALL / TOOL_RESULT (the tool's own output, `execution_time_ms`) |
| run item `handoff_requested` | (remembers the handoff's arguments: the AGENT_SWITCH reason) |
| run item `handoff_occured` | AGENT_SWITCH `{from_agent, to_agent, reason}` |
| `AgentUpdatedStreamEvent` | AGENT_SWITCH only if the agent changed without a handoff item; the model name follows |
| end of the stream | METADATA + COMPLETE; ERROR `interrupted` if the run stopped for a tool approval |
| `MaxTurnsExceeded` / any other exception | ERROR `max_turns_exceeded` / `agent_error`, with the SDK's message |

The SDK runs the agent loop in a task of its own (`RunResultStreaming.run_loop_task`) and only hands events over
through a queue, so closing the adapter (cancel, shutdown, job timeout) must stop that task explicitly: the adapter
calls `result.cancel()` and waits for the task to end. Leaving it to `stream_events()` is not enough: closed while
suspended at an event, it waits for the whole run to finish before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.worker.adapters.base import (
    CANCEL_GRACE_S,
    RunEvents,
    ToolClock,
    describe,
    field_of,
    framework_run,
    maybe_json,
    require_extra,
)
from runcast.worker.providers.base import Message
from runcast.worker.runnable import RunRequest

require_extra("agents", framework="OpenAI Agents SDK", extra="openai-agents", package="openai-agents")

from agents import Agent, ItemHelpers, MaxTurnsExceeded, Runner  # noqa: E402
from agents.models import get_default_model  # noqa: E402

log = logging.getLogger("runcast.worker.adapters.openai_agents")

_RESERVED = frozenset({"starting_agent", "input", "context"})


class OpenAIAgentsAgent:
    """An OpenAI Agents SDK agent as a runcast `RunnableAgent`.

    - `agent`: the `agents.Agent` the run starts with (its handoffs and tools come with it);
    - `name` (default: the SDK agent's), `description` (`GET /v1/agents`), `chunking` (else the worker default);
    - `context`: the SDK run context for tools and hooks, a value or a function of the `RunRequest` (default: the
      run's `metadata` dict);
    - `run_options`: more `Runner.run_streamed` keyword arguments (`max_turns`, `run_config`, `hooks`,
      `error_handlers`, ...).
    """

    def __init__(
        self,
        agent: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        chunking: StreamConfig | None = None,
        context: Any = None,
        run_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(agent, Agent):
            raise TypeError(f"from_openai_agents needs an agents.Agent, not {type(agent).__name__}")
        reserved = _RESERVED & set(run_options or {})
        if reserved:
            raise ValueError(f"run_options may not set {sorted(reserved)}: the adapter sets them")
        self.agent = agent
        self.name = name or agent.name
        self.description = description if description is not None else f"OpenAI Agents SDK agent {agent.name}"
        self.chunking = chunking
        self.context = context
        self.run_options = dict(run_options or {})

    def model_name(self, agent: Any = None) -> str:
        """The model an agent runs on, as the SDK picks it: the agent's own, else the run config's, else the SDK's
        default model name."""
        run_config = self.run_options.get("run_config")
        model = getattr(agent or self.agent, "model", None) or getattr(run_config, "model", None)
        if model is None:
            return get_default_model()
        if isinstance(model, str):
            return model
        return str(getattr(model, "model", None) or type(model).__name__)

    def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        run = RunEvents(request.run_id, self.agent.name, self.model_name(), trace_id=request.trace_id)
        return framework_run(run, self._run(request, run))

    async def _run(self, request: RunRequest, run: RunEvents) -> AsyncIterator[StreamingEvent]:
        context = self.context(request) if callable(self.context) else self.context
        result = Runner.run_streamed(
            self.agent,
            to_input(request.history, request.input),
            context=dict(request.metadata) if context is None else context,
            **self.run_options,
        )
        translate = Translator(run, self.model_name)
        sdk_events = result.stream_events()
        try:
            async for sdk_event in sdk_events:
                for event in translate(sdk_event):
                    yield event
        except MaxTurnsExceeded as exc:
            yield run.error("max_turns_exceeded", describe(exc))
            return
        finally:
            await _stop(result, sdk_events)
        for event in translate.end(result.final_output, result.interruptions):
            yield event


async def _stop(result: Any, sdk_events: Any) -> None:
    """Make sure nothing of the SDK's run is left running: cancel its run loop task if it is still going, close
    the event stream, then wait for the task and for the SDK's own clean-up after it (the model provider's)."""
    run_loop = getattr(result, "run_loop_task", None)
    if run_loop is not None and not run_loop.done():
        result.cancel()
    with contextlib.suppress(Exception):  # its errors were raised to the consumer already, or are moot (cancelled)
        await sdk_events.aclose()
    for name in ("run_loop_task", "_model_provider_cleanup_task"):  # the second is private: looked up, not relied on
        task = getattr(result, name, None)
        if isinstance(task, asyncio.Future) and not task.done():
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
            if not task.done():
                log.warning("the SDK's %s did not stop within %.0f s of being cancelled", name, CANCEL_GRACE_S)


class Translator:
    """SDK stream events of one run -> runcast events (stateful: turns, streamed text, tool timing, handoffs)."""

    def __init__(self, run: RunEvents, model_for: Callable[[Any], str]) -> None:
        self.run = run
        self.model_for = model_for
        self.clock = ToolClock()
        self.calls = 0
        self.tool_names: dict[str, str] = {}
        self.handoff_reasons: dict[str, str] = {}
        self.turn_text = ""
        """The text published in this turn (deltas, and any message text that came without deltas)."""
        self.turn_matched = 0
        """How much of `turn_text` the turn's finished messages account for."""
        self.items: dict[str, Callable[[Any], list[StreamingEvent]]] = {
            "message_output_created": self._message,
            "tool_called": self._tool_called,
            "tool_output": self._tool_output,
            "handoff_requested": self._handoff_requested,
            "handoff_occured": self._handoff_occurred,  # sic: the SDK's spelling
        }

    def __call__(self, event: Any) -> list[StreamingEvent]:
        kind = getattr(event, "type", None)
        if kind == "raw_response_event":
            return self._raw(event.data)
        if kind == "run_item_stream_event":
            handler = self.items.get(event.name)
            return handler(event.item) if handler is not None else []
        if kind == "agent_updated_stream_event":
            return self._agent_updated(event.new_agent)
        return []

    def _raw(self, data: Any) -> list[StreamingEvent]:
        kind = getattr(data, "type", None)
        if kind == "response.created":
            self.run.new_turn()
            self.turn_text, self.turn_matched = "", 0
        elif kind == "response.output_text.delta":
            return self._text(data.delta)
        elif kind == "response.completed":
            usage = getattr(data.response, "usage", None)
            self.run.add_tokens(getattr(usage, "total_tokens", None))
        return []

    def _text(self, text: str) -> list[StreamingEvent]:
        chunk = self.run.chunk(text)
        if chunk is None:
            return []
        self.turn_text += text
        return [chunk]

    def _message(self, item: Any) -> list[StreamingEvent]:
        """A finished message of this turn. Its text normally came as deltas already; a model that did not stream it
        (or not all of it) gets the rest published as one CHUNK. Matched by text, in order, not by item id: some
        models give every item the same placeholder id."""
        text = ItemHelpers.text_message_output(item)
        streamed = self.turn_text[self.turn_matched :]
        if streamed.startswith(text):
            self.turn_matched += len(text)
            return []
        if not text.startswith(streamed):
            log.warning("a streamed message was rewritten, not extended; its new text is not published")
            self.turn_matched = len(self.turn_text)
            return []
        events = self._text(text[len(streamed) :])
        self.turn_matched = len(self.turn_text)
        return events

    def _tool_called(self, item: Any) -> list[StreamingEvent]:
        self.calls += 1
        raw = item.raw_item
        call_id = str(item.call_id or f"call_{self.run.turns}_{self.calls}")
        name = str(item.tool_name or field_of(raw, "type") or "tool")
        self.tool_names[call_id] = name
        self.clock.start(call_id)
        return [self.run.tool_call(name, _arguments(raw), call_id)]

    def _tool_output(self, item: Any) -> list[StreamingEvent]:
        call_id = str(item.call_id or "")
        name = self.tool_names.pop(call_id, None) or str(field_of(item.raw_item, "type") or "tool")
        output = item.output if _is_json(item.output) else str(field_of(item.raw_item, "output") or item.output)
        return [self.run.tool_result(name, call_id, output, execution_time_ms=self.clock.stop(call_id))]

    def _handoff_requested(self, item: Any) -> list[StreamingEvent]:
        raw = item.raw_item
        self.handoff_reasons[str(field_of(raw, "call_id") or "")] = handoff_reason(field_of(raw, "arguments"))
        return []

    def _handoff_occurred(self, item: Any) -> list[StreamingEvent]:
        reason = self.handoff_reasons.pop(str(field_of(item.raw_item, "call_id") or ""), "")
        target = item.target_agent
        self.run.model_name = self.model_for(target)
        return [self.run.agent_switch(target.name, reason, from_agent=item.source_agent.name)]

    def _agent_updated(self, agent: Any) -> list[StreamingEvent]:
        self.run.model_name = self.model_for(agent)
        if agent.name == self.run.agent_name:
            return []  # the run's first agent, or the handoff just reported
        return [self.run.agent_switch(agent.name, "")]

    def end(self, final_output: Any, interruptions: Any) -> list[StreamingEvent]:
        """How a run whose event stream ended without an exception ends."""
        if interruptions:
            return [self.run.error("interrupted", "the SDK run stopped for a tool approval; runcast runs have none")]
        events: list[StreamingEvent] = []
        if final_output is not None and not self.turn_text:
            # The final output did not come as text in the last turn (a tool's output with tool_use_behavior
            # "stop_on_first_tool", say): it is still the run's answer.
            events += self._text(final_output if isinstance(final_output, str) else _as_text(final_output))
        return [*events, *self.run.finish()]


def to_input(history: tuple[Message, ...] | list[Message], text: str) -> str | list[dict[str, Any]]:
    """A runcast conversation and the new input as the SDK's input: the plain text when there is no history, else
    Responses-style input items (messages, `function_call`, `function_call_output`), oldest first."""
    if not history:
        return text
    items: list[dict[str, Any]] = []
    for message in history:
        if message.role == "tool":
            output = {"type": "function_call_output", "call_id": message.tool_call_id or "", "output": message.content}
            items.append(output)
            continue
        if message.content or not message.tool_calls:
            items.append({"role": message.role, "content": message.content})
        for call in message.tool_calls:
            function = call.get("function", {})
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id", ""),
                    "name": function.get("name", ""),
                    "arguments": function.get("arguments", "") or "{}",
                }
            )
    items.append({"role": "user", "content": text})
    return items


def handoff_reason(arguments: Any) -> str:
    """What a handoff call says about why: its `reason` (or only) string argument, else its arguments as given.
    A handoff without `input_type` has no arguments: no reason."""
    parsed = maybe_json(arguments)
    if isinstance(parsed, dict):
        strings = [v for v in parsed.values() if isinstance(v, str)]
        if isinstance(parsed.get("reason"), str):
            return parsed["reason"]
        if len(parsed) == 1 and strings:
            return strings[0]
        return json.dumps(parsed) if parsed else ""
    return "" if parsed in (None, "") else str(arguments)


def _arguments(raw: Any) -> Any:
    """A tool call's arguments as an object: a function call's JSON arguments; a hosted tool's action, if any."""
    arguments = field_of(raw, "arguments")
    if arguments is not None:
        parsed = maybe_json(arguments)
        return parsed if parsed != "" else {}
    action = field_of(raw, "action")
    if action is None:
        return {}
    return action.model_dump(exclude_none=True) if hasattr(action, "model_dump") else action


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _as_text(value: Any) -> str:
    """A structured final output as the text of its answer: JSON where it can be, else its `str`."""
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json()
    return json.dumps(value) if _is_json(value) else str(value)
