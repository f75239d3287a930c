"""The seed-compatible streaming event model (jaf-py's `jaf.core.streaming` names and JSON).

`StreamingEvent.to_dict()` is the wire format (SPEC §6): the gateway forwards these JSON bytes untouched.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from json.encoder import encode_basestring_ascii as _encode_str  # what json.dumps uses (ensure_ascii)
from typing import Any

from runcast.shared.keys import events_key
from runcast.shared.stream_config import ChunkType as ChunkType
from runcast.shared.stream_config import StreamChunk as StreamChunk
from runcast.shared.stream_config import StreamConfig as StreamConfig


class StreamingEventType(str, Enum):
    """The kinds of event a run streams, with jaf-py's names and wire values (`"start"`, `"chunk"`, ...)."""

    START = "start"
    CHUNK = "chunk"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"
    AGENT_SWITCH = "agent_switch"
    METADATA = "metadata"
    ERROR = "error"
    COMPLETE = "complete"

    @property
    def is_terminal(self) -> bool:
        """COMPLETE and ERROR end a run; nothing follows them."""
        return self in (StreamingEventType.COMPLETE, StreamingEventType.ERROR)


TERMINAL_TYPES = frozenset({StreamingEventType.COMPLETE.value, StreamingEventType.ERROR.value})


@dataclass(frozen=True)
class StreamingChunk:
    """A CHUNK's data: `content` is all the text so far, `delta` the new text; `token_count` counts deltas."""

    content: str
    delta: str
    is_complete: bool = False
    token_count: int | None = None


@dataclass(frozen=True)
class StreamingToolCall:
    """A TOOL_CALL's data: the tool about to run, its arguments and the call id its result will carry."""

    tool_name: str
    arguments: dict[str, Any]
    call_id: str
    status: str = "started"


@dataclass(frozen=True)
class StreamingToolResult:
    """A TOOL_RESULT's data: what the tool returned (or its error), `status` `completed` or `failed`."""

    tool_name: str
    call_id: str
    result: Any
    status: str = "completed"
    execution_time_ms: float | None = None


@dataclass(frozen=True)
class StreamingMetadata:
    """START's and METADATA's data: the agent, the model, and (at the end) turns, tokens and time."""

    agent_name: str
    model_name: str
    turn_count: int = 0
    total_tokens: int | None = None
    execution_time_ms: float | None = None


@dataclass(frozen=True)
class StreamingError:
    """An ERROR's data: `error_type` (`model_error`, `cancelled`, `worker_lost`, ...) and a sentence of detail."""

    error_type: str
    detail: str


EventData = StreamingChunk | StreamingToolCall | StreamingToolResult | StreamingMetadata | StreamingError | dict

_DATA_CLASSES: dict[StreamingEventType, type] = {
    StreamingEventType.START: StreamingMetadata,
    StreamingEventType.METADATA: StreamingMetadata,
    StreamingEventType.CHUNK: StreamingChunk,
    StreamingEventType.TOOL_CALL: StreamingToolCall,
    StreamingEventType.TOOL_RESULT: StreamingToolResult,
    StreamingEventType.ERROR: StreamingError,
}


@dataclass(frozen=True)
class StreamingEvent:
    """One event of a run, as the seed defines it; `to_json()` is what travels on the wire (`data:` of an SSE event).

    `data` is the dataclass of its type (`StreamingChunk` for CHUNK, ...) or a plain dict (AGENT_SWITCH, COMPLETE).
    """

    type: StreamingEventType
    data: EventData
    timestamp: float = field(default_factory=time.time)
    run_id: str | None = None
    trace_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """This event ends its run (COMPLETE or ERROR)."""
        return self.type.is_terminal

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form: `type`, `data`, `timestamp`, `run_id`, `trace_id`."""
        data = self.data
        if not isinstance(data, dict):
            data = asdict(data)
        return {
            "type": self.type.value,
            "data": data,
            "timestamp": self.timestamp,
            "run_id": str(self.run_id) if self.run_id is not None else None,
            "trace_id": str(self.trace_id) if self.trace_id is not None else None,
        }

    def to_json(self) -> str:
        """The compact JSON of `to_dict()`. A text chunk, nearly every event of a run, is written directly: the
        same bytes as `json.dumps` gives, about 6x faster (measured; it is most of a worker's CPU per token)."""
        if type(self.data) is StreamingChunk and self.type is _CHUNK:
            fast = _chunk_json(self)
            if fast is not None:
                return fast
        return json.dumps(self.to_dict(), separators=(",", ":"), default=str)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StreamingEvent:
        """Parse `to_dict()`'s form; unknown fields of `data` are ignored, incomplete `data` stays a dict."""
        event_type = StreamingEventType(raw["type"])
        data: Any = raw.get("data") or {}
        data_class = _DATA_CLASSES.get(event_type)
        if data_class is not None and isinstance(data, dict):
            known = {k: v for k, v in data.items() if k in data_class.__dataclass_fields__}
            try:
                data = data_class(**known)
            except TypeError:
                pass  # missing fields: keep the plain dict rather than lose the event
        return cls(
            type=event_type,
            data=data,
            timestamp=float(raw.get("timestamp") or 0.0),
            run_id=raw.get("run_id"),
            trace_id=raw.get("trace_id"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> StreamingEvent:
        """Parse `to_json()`'s form."""
        return cls.from_dict(json.loads(text))


_CHUNK = StreamingEventType.CHUNK


def _json_str(value: object) -> str | None:
    if value is None:
        return "null"
    return _encode_str(value if isinstance(value, str) else str(value))


def _chunk_json(event: StreamingEvent) -> str | None:
    """`json.dumps(event.to_dict(), separators=(",", ":"))` for a chunk of plain types; None when not plain."""
    chunk = event.data
    assert isinstance(chunk, StreamingChunk)
    count = chunk.token_count
    if (
        type(chunk.content) is not str
        or type(chunk.delta) is not str
        or type(chunk.is_complete) is not bool
        or not (count is None or type(count) is int)
        or type(event.timestamp) is not float
        or not math.isfinite(event.timestamp)
    ):
        return None
    return "".join(
        (
            '{"type":"chunk","data":{"content":',
            _encode_str(chunk.content),
            ',"delta":',
            _encode_str(chunk.delta),
            ',"is_complete":true,"token_count":' if chunk.is_complete else ',"is_complete":false,"token_count":',
            "null" if count is None else str(count),
            '},"timestamp":',
            repr(event.timestamp),
            ',"run_id":',
            _json_str(event.run_id),
            ',"trace_id":',
            _json_str(event.trace_id),
            "}",
        )
    )


@dataclass
class FinalMessage:
    """What `StreamingBuffer.get_final_message()` returns (jaf's `Message` for the assistant's turn)."""

    role: str
    content: str
    tool_calls: list[StreamingToolCall] | None = None


class StreamingBuffer:
    """Accumulates one run's events into its final state."""

    def __init__(self) -> None:
        self.content = ""
        self.tool_calls: list[StreamingToolCall] = []
        self.tool_results: list[StreamingToolResult] = []
        self.metadata: StreamingMetadata | None = None
        self.is_complete = False
        self.error: StreamingError | None = None

    def add_chunk(self, chunk: StreamingChunk) -> None:
        """Append a chunk's delta to `content`."""
        self.content += chunk.delta
        if chunk.is_complete:
            self.is_complete = True

    def add_tool_call(self, tool_call: StreamingToolCall) -> None:
        """Record a tool call."""
        self.tool_calls.append(tool_call)

    def add_tool_result(self, tool_result: StreamingToolResult) -> None:
        """Record a tool's result."""
        self.tool_results.append(tool_result)

    def set_metadata(self, metadata: StreamingMetadata) -> None:
        """Keep the latest metadata (START's, then METADATA's)."""
        self.metadata = metadata

    def set_error(self, error: StreamingError) -> None:
        """Record the run's error; the run is over."""
        self.error = error
        self.is_complete = True

    def mark_complete(self) -> None:
        """The run is over."""
        self.is_complete = True

    def add_event(self, event: StreamingEvent) -> None:
        """Fold any event into the buffer (what `from_events` does for each)."""
        data = event.data
        if event.type is StreamingEventType.CHUNK and isinstance(data, StreamingChunk):
            self.add_chunk(data)
        elif event.type is StreamingEventType.TOOL_CALL and isinstance(data, StreamingToolCall):
            self.add_tool_call(data)
        elif event.type is StreamingEventType.TOOL_RESULT and isinstance(data, StreamingToolResult):
            self.add_tool_result(data)
        elif event.type in (StreamingEventType.START, StreamingEventType.METADATA) and isinstance(
            data, StreamingMetadata
        ):
            self.set_metadata(data)
        elif event.type is StreamingEventType.ERROR:
            self.set_error(data if isinstance(data, StreamingError) else StreamingError("error", str(data)))
        elif event.type is StreamingEventType.COMPLETE:
            self.mark_complete()

    def get_final_message(self) -> FinalMessage:
        """The assistant's message: the final text and its tool calls."""
        return FinalMessage(role="assistant", content=self.content, tool_calls=list(self.tool_calls) or None)

    def to_dict(self) -> dict[str, Any]:
        """What `GET /v1/runs/{run_id}/result` answers."""
        return {
            "content": self.content,
            "tool_calls": [asdict(c) for c in self.tool_calls],
            "tool_results": [asdict(r) for r in self.tool_results],
            "metadata": asdict(self.metadata) if self.metadata else None,
            "error": asdict(self.error) if self.error else None,
            "is_complete": self.is_complete,
        }

    @classmethod
    def from_events(cls, events: Iterable[StreamingEvent]) -> StreamingBuffer:
        """A run's final state from its events."""
        buffer = cls()
        for event in events:
            buffer.add_event(event)
        return buffer


class StreamingCollector:
    """Collects events per run in memory and replays them (the seed's API)."""

    def __init__(self) -> None:
        self.buffers: dict[str, StreamingBuffer] = {}
        self.events: dict[str, list[StreamingEvent]] = {}

    async def collect_stream(self, stream: AsyncIterator[StreamingEvent], run_id: str | None = None) -> StreamingBuffer:
        """Consume `stream`, keeping its events (under `run_id`, else each event's own) and their buffer."""
        buffer = StreamingBuffer()
        collected: list[StreamingEvent] = []
        async for event in stream:
            key = run_id or event.run_id or "default"
            collected.append(event)
            buffer.add_event(event)
            self.events[key] = collected
            self.buffers[key] = buffer
        if run_id is not None:
            self.events.setdefault(run_id, collected)
            self.buffers.setdefault(run_id, buffer)
        return buffer

    def get_buffer(self, run_id: str) -> StreamingBuffer | None:
        """The run's folded state, if its events were collected."""
        return self.buffers.get(run_id)

    def get_events_for_run(self, run_id: str) -> list[StreamingEvent]:
        """The run's collected events, oldest first."""
        return list(self.events.get(run_id, []))

    async def replay_stream(self, run_id: str, delay_ms: int = 0) -> AsyncIterator[StreamingEvent]:
        """Yield the run's collected events again, pausing `delay_ms` before each."""
        for event in self.get_events_for_run(run_id):
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            yield event

    def clear_run(self, run_id: str) -> None:
        """Forget the run."""
        self.buffers.pop(run_id, None)
        self.events.pop(run_id, None)

    def add_events(self, run_id: str, events: Iterable[StreamingEvent]) -> StreamingBuffer:
        """Record already-collected events for a run (e.g. read back from Redis)."""
        collected = list(events)
        self.events[run_id] = collected
        self.buffers[run_id] = StreamingBuffer.from_events(collected)
        return self.buffers[run_id]

    @classmethod
    async def from_redis(cls, redis: Any, run_id: str) -> StreamingCollector:
        """A collector holding every event of `run_id` still kept in its Redis stream (e.g. a finished run).

        `redis` is a `redis.asyncio.Redis`; `replay_stream(run_id, delay_ms)` then replays the run as recorded.
        """
        collector = cls()
        collector.add_events(run_id, await read_events_from_redis(redis, run_id))
        return collector


async def read_events_from_redis(redis: Any, run_id: str) -> list[StreamingEvent]:
    """Every event of a run still kept in its Redis stream, oldest first."""
    raw = await redis.xrange(events_key(run_id))
    events = []
    for _entry_id, fields in raw:
        payload = fields.get("event") if "event" in fields else fields.get(b"event")
        if payload is not None:
            events.append(StreamingEvent.from_json(payload))
    return events


async def replay_from_redis(redis: Any, run_id: str, delay_ms: int = 0) -> AsyncIterator[StreamingEvent]:
    """Replay a run straight from its Redis stream, pausing `delay_ms` before each event."""
    collector = await StreamingCollector.from_redis(redis, run_id)
    async for event in collector.replay_stream(run_id, delay_ms):
        yield event
