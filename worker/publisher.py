"""Publishing a run's events to its Redis stream under a chunking policy (`runcast.shared.streaming.StreamConfig`).

The publisher iterates the agent's events in the agent's own task, lets the `Coalescer` merge text deltas the policy
wants merged, and puts what is ready into the run's `RunChannel`: the worker's one writer sends what all runs have
put in one round trip per tick (`runcast.worker.writer`), so neither a fast model nor many runs cost one Redis write
per token. Pending text is published after at most `max_delay_ms` (a slow model still streams) and always before any
non-chunk event, so the order of events is never changed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from runcast.shared.streaming import StreamConfig, StreamingChunk, StreamingEvent, StreamingEventType
from runcast.worker.writer import MAX_PENDING, RunChannel

_CHUNK, _AGENT_SWITCH = StreamingEventType.CHUNK, StreamingEventType.AGENT_SWITCH  # module constants: faster
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
        if event.type is not _CHUNK or not isinstance(event.data, StreamingChunk):
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


async def publish_events(
    events: AsyncIterator[StreamingEvent],
    channel: RunChannel,
    config: StreamConfig,
    config_for_agent: Callable[[str], StreamConfig] | None = None,
) -> int:
    """Publish every event of `events` into the run's channel and wait until all are in the log; the count.

    Raises `RunEnded` when the run was ended from outside (cancel), and whatever the agent raised, after
    publishing what it produced before. On AGENT_SWITCH the policy follows the new agent (`config_for_agent`).
    Pending coalesced text is put when its `max_delay_ms` passes even while the agent is quiet (a timer, no task).
    """
    coalescer = Coalescer(config)
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None
    published = 0

    def put(batch: list[StreamingEvent]) -> None:
        nonlocal published
        if batch:
            channel.put(batch)
            published += len(batch)

    def on_deadline() -> None:
        nonlocal timer
        timer = None
        if channel.error is None:  # a failed channel: the publisher sees it at its next put
            put(coalescer.due())
            arm()

    def arm() -> None:
        nonlocal timer
        deadline = coalescer.deadline
        if deadline is None:
            if timer is not None:
                timer.cancel()
                timer = None
        elif timer is None:
            timer = loop.call_at(_loop_time(deadline), on_deadline)

    failure: Exception | None = None
    iterator = aiter(events)
    try:
        while True:
            try:
                event = await anext(iterator)
            except StopAsyncIteration:
                break
            except Exception as exc:  # the agent failed: what it produced before still goes out, in order
                failure = exc
                break
            put(coalescer.add(event))
            if event.type is _AGENT_SWITCH and config_for_agent and isinstance(event.data, dict):
                coalescer.set_config(config_for_agent(str(event.data.get("to_agent", ""))))
            arm()
            if channel.backlog >= MAX_PENDING:
                await channel.room()
        put(coalescer.flush())
    finally:
        if timer is not None:
            timer.cancel()
    await channel.flush()
    if failure is not None:
        raise failure
    return published


def _loop_time(deadline: float) -> float:
    """A `time.monotonic()` deadline on the event loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())
