"""Publishing a run's events to its Redis stream under a chunking policy (`runcast.shared.streaming.StreamConfig`).

The agent produces events into a queue; one publisher loop takes them out, lets the `Coalescer` merge text deltas
the policy wants merged, and appends what is ready with `StreamLog.append_many` — everything that piled up while the
previous write was in flight goes out in one round trip, so a fast model never costs one Redis write per token.
Pending text is published after at most `max_delay_ms` (a slow model still streams) and always before any
non-chunk event, so the order of events is never changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from runcast.shared.streaming import StreamConfig, StreamingChunk, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import StreamLog

MAX_BATCH = 256
"""Most events in one append (bounds the Lua script's argument list)."""

_SENTENCE_END = (".", "!", "?", "…", "\n", '."', '!"', '?"', ".)", ".'")


def ends_sentence(text: str) -> bool:
    return text.rstrip(" \t").endswith(_SENTENCE_END)


@dataclass
class _Pending:
    first: StreamingEvent
    last: StreamingEvent
    delta: str
    since: float


class Coalescer:
    """Pure policy state machine: feed events in order, get back the events to publish now."""

    def __init__(self, config: StreamConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._pending: _Pending | None = None
        self._fresh = True  # no chunk published since the last non-chunk event: the next delta goes out at once

    @property
    def deadline(self) -> float | None:
        """When pending text must be published (monotonic seconds), or None when nothing is pending."""
        if self._pending is None:
            return None
        return self._pending.since + self.config.max_delay_ms / 1000

    def add(self, event: StreamingEvent) -> list[StreamingEvent]:
        if event.type is not StreamingEventType.CHUNK or not isinstance(event.data, StreamingChunk):
            out = self.flush()
            out.append(event)
            self._fresh = True
            return out
        if self._fresh or self.config.is_passthrough:
            self._fresh = False
            return [*self.flush(), event]
        out: list[StreamingEvent] = []
        if self.config.enable_sentence_boundaries and event.data.delta.lstrip(" \t").startswith("\n"):
            out = self.flush()  # a line break opens the next sentence: what came before is complete
        pending = self._pending
        if pending is None:
            self._pending = pending = _Pending(event, event, event.data.delta, self.clock())
        else:
            pending.last = event
            pending.delta += event.data.delta
        if self._ready(pending.delta):
            out += self.flush()
        return out

    def _ready(self, text: str) -> bool:
        size = self.config.chunk_size
        if self.config.enable_sentence_boundaries:
            return ends_sentence(text) or (size > 1 and len(text) >= size)
        return len(text) >= size

    def due(self) -> list[StreamingEvent]:
        """Pending text whose max delay has passed."""
        deadline = self.deadline
        if deadline is not None and self.clock() >= deadline:
            return self.flush()
        return []

    def flush(self) -> list[StreamingEvent]:
        """The pending deltas as one CHUNK: the last delta's content and count, the joined delta."""
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        last = pending.last
        assert isinstance(last.data, StreamingChunk)
        data = last.data
        merged = StreamingChunk(data.content, pending.delta, data.is_complete, data.token_count)
        return [StreamingEvent(last.type, merged, pending.first.timestamp, last.run_id, last.trace_id)]

    def set_config(self, config: StreamConfig) -> None:
        self.config = config


_DONE = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def publish_events(
    events: AsyncIterator[StreamingEvent],
    stream_log: StreamLog,
    run_id: str,
    config: StreamConfig,
    config_for_agent: Callable[[str], StreamConfig] | None = None,
) -> int:
    """Publish every event of `events` to the run's stream; return the number of appends (round trips).

    Raises `RunEnded` when the run was ended from outside (cancel), and whatever the agent raised, after
    publishing what it produced before. On AGENT_SWITCH the policy follows the new agent (`config_for_agent`).
    """
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
        except Exception as exc:
            queue.put_nowait(_Failed(exc))
        else:
            queue.put_nowait(_DONE)

    coalescer = Coalescer(config)
    producer = asyncio.create_task(produce(), name=f"agent:{run_id}")
    appends = 0
    try:
        finished: object = None
        while finished is None:
            batch: list[StreamingEvent] = []
            deadline = coalescer.deadline
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    item = await queue.get()
            except TimeoutError:
                item = None
            while item is not None:
                if item is _DONE or isinstance(item, _Failed):
                    finished = item
                    batch += coalescer.flush()
                    break
                assert isinstance(item, StreamingEvent)
                batch += coalescer.add(item)
                if item.type is StreamingEventType.AGENT_SWITCH and config_for_agent and isinstance(item.data, dict):
                    coalescer.set_config(config_for_agent(str(item.data.get("to_agent", ""))))
                item = queue.get_nowait() if not queue.empty() and len(batch) < MAX_BATCH else None
            batch += coalescer.due()
            if batch:
                await stream_log.append_many(run_id, batch)
                appends += 1
        if isinstance(finished, _Failed):
            raise finished.exc
        return appends
    finally:
        if not producer.done():
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer


def _loop_time(deadline: float | None) -> float | None:
    """A `time.monotonic()` deadline on the event loop's clock (None = no deadline)."""
    if deadline is None:
        return None
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
