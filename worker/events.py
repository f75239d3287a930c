"""One run's StreamingEvents, built the same way whoever produces them (runcast's runner, a framework adapter, an
external producer through the publish API).

`RunEvents` holds what the run has produced so far and makes each event with the shapes SPEC §6 fixes:

- CHUNK: `content` is all of the run's text so far, `delta` the new text, `token_count` the number of deltas;
  the first text of a new model turn gets `TURN_SEPARATOR` in front when neither side has whitespace, so a
  `content` made of several turns stays readable (the deltas still join to exactly `content`);
- START / METADATA: agent, model, turns, tokens, elapsed time;
- TOOL_CALL `started`, TOOL_RESULT `completed`/`failed` with its execution time, AGENT_SWITCH
  `{"from_agent", "to_agent", "reason"}`, ERROR `{"error_type", "detail"}`, COMPLETE `{"content"}`.
"""

from __future__ import annotations

import time
from typing import Any

from runcast.shared.streaming import (
    EventData,
    StreamingChunk,
    StreamingError,
    StreamingEvent,
    StreamingEventType,
    StreamingMetadata,
    StreamingToolCall,
    StreamingToolResult,
)

TURN_SEPARATOR = "\n\n"
"""Put between two model turns' text when neither side has whitespace, so `content` stays readable."""


def needs_separator(content: str, text: str) -> bool:
    return bool(content) and bool(text) and not content[-1].isspace() and not text[0].isspace()


def tool_arguments(value: Any) -> dict[str, Any]:
    """TOOL_CALL `arguments` is an object: a non-object (unparsable JSON, a list, ...) is kept under `_raw`."""
    return value if isinstance(value, dict) else {"_raw": value}


class RunEvents:
    """Makes one run's events and remembers its progress: text so far, deltas, turns, tokens, current agent."""

    def __init__(self, run_id: str | None, agent_name: str, model_name: str, *, trace_id: str | None = None) -> None:
        self.run_id = run_id
        self.trace_id = trace_id
        self.agent_name = agent_name
        self.model_name = model_name
        self.content = ""
        self.deltas = 0
        self.turns = 0
        self.tokens: int | None = None
        self._started = time.perf_counter()
        self._turn_has_text = False

    def event(self, event_type: StreamingEventType, data: EventData) -> StreamingEvent:
        return StreamingEvent(type=event_type, data=data, run_id=self.run_id, trace_id=self.trace_id)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self._started) * 1000, 3)

    def progress(self) -> StreamingMetadata:
        return StreamingMetadata(self.agent_name, self.model_name, self.turns, self.tokens, self.elapsed_ms())

    def start(self) -> StreamingEvent:
        return self.event(StreamingEventType.START, self.progress())

    def new_turn(self) -> None:
        """A model turn begins: its first text may need a separator from the previous turn's."""
        self.turns += 1
        self._turn_has_text = False

    def chunk(self, text: str) -> StreamingEvent | None:
        """A CHUNK for one model delta (None for an empty delta: nothing to publish)."""
        if not text:
            return None
        if not self._turn_has_text and needs_separator(self.content, text):
            text = TURN_SEPARATOR + text
        self._turn_has_text = True
        self.content += text
        self.deltas += 1
        return self.event(StreamingEventType.CHUNK, StreamingChunk(self.content, text, False, self.deltas))

    def add_tokens(self, total: int | None) -> None:
        if total is not None:
            self.tokens = (self.tokens or 0) + int(total)

    def tool_call(self, tool_name: str, arguments: Any, call_id: str) -> StreamingEvent:
        call = StreamingToolCall(tool_name, tool_arguments(arguments), call_id, "started")
        return self.event(StreamingEventType.TOOL_CALL, call)

    def tool_result(
        self, tool_name: str, call_id: str, result: Any, *, failed: bool = False, execution_time_ms: float | None = None
    ) -> StreamingEvent:
        status = "failed" if failed else "completed"
        data = StreamingToolResult(tool_name, call_id, result, status, execution_time_ms)
        return self.event(StreamingEventType.TOOL_RESULT, data)

    def agent_switch(self, to_agent: str, reason: str = "", *, from_agent: str | None = None) -> StreamingEvent:
        switch = {"from_agent": from_agent or self.agent_name, "to_agent": to_agent, "reason": reason}
        self.agent_name = to_agent
        return self.event(StreamingEventType.AGENT_SWITCH, switch)

    def metadata(self) -> StreamingEvent:
        return self.event(StreamingEventType.METADATA, self.progress())

    def complete(self) -> StreamingEvent:
        return self.event(StreamingEventType.COMPLETE, {"content": self.content})

    def finish(self) -> list[StreamingEvent]:
        """How a successful run ends: METADATA (usage, turns, time), then COMPLETE."""
        return [self.metadata(), self.complete()]

    def error(self, error_type: str, detail: str) -> StreamingEvent:
        return self.event(StreamingEventType.ERROR, StreamingError(error_type, detail))
