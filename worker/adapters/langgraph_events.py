"""What LangGraph streams -> runcast events: the translation behind `runcast.worker.adapters.langgraph`.

`graph.astream(..., stream_mode=["messages", "updates"], subgraphs=True)` yields `(namespace, mode, payload)`:

- `messages` `(AIMessageChunk, metadata)`: one CHUNK per content delta; a new message id is a new model turn (its
  model: `ls_model_name`); `usage_metadata.total_tokens` adds to METADATA's `total_tokens`;
- `messages` with a whole `AIMessage` (a model that did not stream, a node that made one): its text as one CHUNK;
- `messages` from another agent than the one speaking: AGENT_SWITCH to it (the agent: for a model in a sub-graph,
  the sub-graph's node in its parent; else the model's node);
- `updates` with an `AIMessage` that has `tool_calls`: one TOOL_CALL per call (LangChain's parsed `args`, its id);
- `updates` with a `ToolMessage`: TOOL_RESULT (`failed` when its `status` is `error`; timed by `ToolWatcher`);
- a tool that returned `Command(goto=...)` (a handoff tool): AGENT_SWITCH to the target right after its
  TOOL_RESULT, the reason being the tool's message;
- `updates` with `__interrupt__`: ERROR `interrupted` once the stream ends (runcast runs have no resume step);
- the end of the stream: METADATA, COMPLETE.

The same message can be reported more than once (a sub-graph's messages again in its parent's update, the input's
messages in a node's output): tool calls and results are published once per call id, and the input's own are
never published.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from uuid import UUID

from runcast.shared.streaming import StreamingEvent
from runcast.worker.adapters.base import RunEvents, require_extra

require_extra("langgraph", framework="LangGraph", extra="langgraph", package="langgraph")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage  # noqa: E402
from langgraph.types import Command, Overwrite, Send  # noqa: E402
from pydantic import BaseModel  # noqa: E402

INTERRUPT = "__interrupt__"


class ToolWatcher(BaseCallbackHandler):
    """A LangChain callback handler on the run's config: how long each tool call took, and which tool calls
    returned a `Command(goto=...)` (handoffs), by tool call id. It only records: events are published in the
    stream's order, when the tool's `ToolMessage` arrives. `run_inline`: called on the loop (or the sync tool's
    thread) as the tool ends, so the record exists before the node's update is streamed."""

    run_inline = True

    def __init__(self) -> None:
        super().__init__()
        self._started: dict[UUID, tuple[str, float]] = {}
        self.elapsed_ms: dict[str, float] = {}
        self.handoffs: dict[str, str] = {}

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: UUID, **kwargs: Any) -> None:
        call_id = kwargs.get("tool_call_id")
        if call_id:
            self._started[run_id] = (str(call_id), time.perf_counter())

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        call_id = self._stop(run_id)
        target = handoff_target(output)
        if call_id is not None and target is not None:
            self.handoffs[call_id] = target

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._stop(run_id)

    def _stop(self, run_id: UUID) -> str | None:
        started = self._started.pop(run_id, None)
        if started is None:
            return None
        call_id, at = started
        self.elapsed_ms[call_id] = round((time.perf_counter() - at) * 1000, 3)
        return call_id


def handoff_target(output: Any) -> str | None:
    """The node a tool's `Command(goto=...)` sends the graph to (the first, for several), else None."""
    if not isinstance(output, Command) or not output.goto:
        return None
    goto = output.goto if isinstance(output.goto, list | tuple) else [output.goto]
    first = goto[0]
    return first.node if isinstance(first, Send) else str(first)


class Translator:
    """LangGraph stream items of one run -> runcast events (stateful: the message being streamed, the speaking
    agent, which tool calls and results were published)."""

    def __init__(self, run: RunEvents, watcher: ToolWatcher, known: Sequence[BaseMessage] = ()) -> None:
        self.run = run
        self.watcher = watcher
        self.message_id: str | None = None
        self.calls: set[str] = set()
        self.results: set[str] = set()
        self.tool_names: dict[str, str] = {}
        self.interrupts: list[Any] = []
        for message in known:  # the input's (history's) tool calls and results are not this run's
            self.calls.update(str(call.get("id")) for call in getattr(message, "tool_calls", None) or ())
            if isinstance(message, ToolMessage):
                self.results.add(message.tool_call_id)

    def __call__(self, item: tuple[Any, ...]) -> list[StreamingEvent]:
        namespace, mode, payload = item if len(item) == 3 else ((), *item)
        if mode == "messages":
            message, metadata = payload
            return self._message(tuple(namespace), message, metadata or {})
        if mode == "updates":
            return self._updates(payload)
        return []

    def _message(self, namespace: tuple[str, ...], message: Any, metadata: Mapping[str, Any]) -> list[StreamingEvent]:
        if not isinstance(message, AIMessage):  # tool / human messages: TOOL_RESULTs come from the updates
            return []
        events: list[StreamingEvent] = []
        speaker = agent_of(namespace, metadata)
        if speaker and speaker != self.run.agent_name:
            events.append(self.run.agent_switch(speaker))
        if message.id is None or message.id != self.message_id:
            self.message_id = message.id
            self.run.new_turn()
            if metadata.get("ls_model_name"):
                self.run.model_name = str(metadata["ls_model_name"])
        chunk = self.run.chunk(text_of(message.content))
        if chunk is not None:
            events.append(chunk)
        if message.usage_metadata:
            self.run.add_tokens(message.usage_metadata.get("total_tokens"))
        return events

    def _updates(self, payload: Any) -> list[StreamingEvent]:
        events: list[StreamingEvent] = []
        for node, update in payload.items() if isinstance(payload, Mapping) else ():
            if node == INTERRUPT:
                self.interrupts.extend(update if isinstance(update, list | tuple) else [update])
                continue
            for message in messages_in(update):
                if isinstance(message, AIMessage):
                    events += self._tool_calls(message)
                elif isinstance(message, ToolMessage):
                    events += self._tool_result(message)
        return events

    def _tool_calls(self, message: AIMessage) -> list[StreamingEvent]:
        events = []
        for call in message.tool_calls:
            call_id = str(call.get("id") or f"call_{self.run.turns}_{len(self.calls) + 1}")
            if call_id in self.calls:
                continue
            self.calls.add(call_id)
            self.tool_names[call_id] = call["name"]
            events.append(self.run.tool_call(call["name"], call.get("args"), call_id))
        return events

    def _tool_result(self, message: ToolMessage) -> list[StreamingEvent]:
        call_id = str(message.tool_call_id)
        if call_id in self.results:
            return []
        self.results.add(call_id)
        name = message.name or self.tool_names.get(call_id, "")
        result = message.content if isinstance(message.content, str) else text_of(message.content) or message.content
        failed = getattr(message, "status", "success") == "error"
        elapsed = self.watcher.elapsed_ms.pop(call_id, None)
        events = [self.run.tool_result(name, call_id, result, failed=failed, execution_time_ms=elapsed)]
        target = self.watcher.handoffs.pop(call_id, None)
        if target is not None and target != self.run.agent_name:
            events.append(self.run.agent_switch(target, text_of(message.content)))
        return events

    def outcome(self) -> list[StreamingEvent]:
        """How the run ends once the graph's stream is over: COMPLETE, or ERROR for a graph stopped at an
        interrupt (a human-in-the-loop step that a runcast run cannot answer)."""
        if self.interrupts:
            values = "; ".join(repr(getattr(i, "value", i)) for i in self.interrupts)
            return [self.run.error("interrupted", f"the graph stopped at an interrupt: {values}")]
        return self.run.finish()


def agent_of(namespace: tuple[str, ...], metadata: Mapping[str, Any]) -> str | None:
    """The agent a model call belongs to: for a model in a sub-graph, that sub-graph's node in its parent (an
    agent built as a graph, e.g. `create_react_agent`, whose inner node is just "agent"); else its node."""
    if namespace:
        return namespace[-1].split(":", 1)[0]
    node = metadata.get("langgraph_node")
    return str(node) if node else None


def text_of(content: Any) -> str:
    """A LangChain message's text: a string, or the text of its content blocks (reasoning, images and tool-use
    blocks are not text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part if isinstance(part, str) else str(part.get("text") or "")
            for part in content
            if isinstance(part, str) or (isinstance(part, Mapping) and part.get("type") == "text")
        )
    return ""


def messages_in(value: Any) -> Iterator[BaseMessage]:
    """Every message in a node's update: state dicts, lists, `Command.update`, `Overwrite`, pydantic / dataclass
    states."""
    if isinstance(value, BaseMessage):
        yield value
    elif isinstance(value, Command):
        yield from messages_in(value.update)
    elif isinstance(value, Overwrite):
        yield from messages_in(value.value)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from messages_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from messages_in(item)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from messages_in(getattr(value, name))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from messages_in(getattr(value, field.name))
