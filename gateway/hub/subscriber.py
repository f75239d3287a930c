"""One viewer in the hub: a bounded inbox, or (when its connection allows it) direct writes by the hub.

A subscriber is fed in one of two ways, never both at once:
- **inbox** (any viewer; the only way for a WebSocket or a server the hub cannot write to): the run's one pass
  `offer`s new entries, the viewer's own task wakes, takes them as one batch and sends them itself;
- **direct** (an SSE viewer on uvicorn, once it is level with the run): the run's one pass hands the entries, encoded
  once per format, to the viewer's `Sink`, which writes them to its socket right there. No task wakes per viewer.

Either way the hub never waits for anyone. An inbox that would overflow, or a sink that cannot take more (its
transport is backed up), marks the subscriber lagging instead: its task takes over again, catches up from memory or
the log after its last delivered id (the log in Redis is the buffer), and goes back to live. Nothing is dropped
silently and no one else is delayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from runcast.shared.ids import START_ID, entry_key
from runcast.shared.streamlog import Entry

Encode = Callable[[Sequence[Entry]], bytes]
"""A wire format: how entries become the bytes of one write (per-entry encodings cached by the format)."""


class Sink(Protocol):
    """Where the hub writes a live viewer's entries itself (`runcast.gateway.wire.direct.DirectSink` for SSE).

    `encode` is the viewer's format: subscribers with the same `encode` get the same bytes, encoded once per pass.
    `ready`: the hub may start writing to it now (bound to a connection that is open and not backed up; while it is
    not, the viewer's own task sends, and waits for the connection to drain). A sink may also have a `backed_up`
    property: bound to a connection that holds more unsent bytes than it may (the hub then queues nothing for it, see
    `Subscriber.offer`). `write` must not block: True when
    the bytes were taken; False when the connection cannot take more now (backed up: the hub detaches the
    subscriber to catch-up) or is gone (`closed`: the subscriber ends)."""

    encode: Encode

    @property
    def ready(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> bool: ...


class Subscriber:
    """Wake-ups use a bare future made only while the subscriber waits, not an `asyncio.Event`: the run's pass over
    N subscribers is a hot loop (the Event's set/wait/clear cost showed in profiles). Same semantics: a wake while
    the subscriber is not waiting makes its next `wait()` return at once."""

    __slots__ = (
        "_inbox",
        "_waiter",
        "_woken",
        "attached",
        "closed",
        "direct",
        "lagging",
        "last_id",
        "last_key",
        "max_queue",
        "pressure",
        "sink",
    )

    def __init__(self, max_queue: int, sink: Sink | None = None) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self.sink = sink
        self.pressure: Any = sink if hasattr(sink, "backed_up") else None  # a sink that tells when it is backed up
        self._inbox: list[Entry] = []
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self.attached = False
        self.lagging = False
        self.direct = False  # the run writes to `sink` itself; `last_id` is what it last wrote
        self.closed = False  # the sink's connection is gone: nothing more to send
        self.last_id = START_ID
        self.last_key = (0, 0)

    def __len__(self) -> int:
        return len(self._inbox)

    def offer(self, entries: list[Entry]) -> bool:
        """Called by the run's pass: queue `entries`, or (inbox full, or its connection backed up: the viewer is not
        reading, so nothing is kept for it) mark this subscriber lagging; False then."""
        pressure = self.pressure
        if len(self._inbox) + len(entries) > self.max_queue or (pressure is not None and pressure.backed_up):
            self.detach(lagging=True)
            return False
        self._inbox.extend(entries)
        self.wake()
        return True

    def attach(self) -> None:
        """(Re)join the live feed: start buffering with an empty inbox."""
        self._inbox.clear()
        self.attached = True
        self.lagging = False

    def go_direct(self, last_id: str) -> None:
        """From now on the run's pass writes to the sink itself, starting after `last_id` (the inbox is empty)."""
        self.last_id = last_id
        self.last_key = entry_key(last_id)
        self.direct = True

    def detach(self, *, lagging: bool) -> None:
        """Stop feeding this subscriber live (lagging: it catches up from its last delivered id); wake its task."""
        self.attached = False
        self.direct = False
        if lagging:
            self.lagging = True
        self.wake()

    def write_direct(
        self, entries: list[Entry], keys: list[tuple[int, int]], data: bytes | None, terminal: bool
    ) -> int:
        """Called by the run's pass for a direct subscriber: write `entries` (encoded as `data` for every direct
        subscriber of this format, or None to encode here; `terminal`: the last one ends the run) to the sink.
        Returns how many entries were delivered."""
        sink = self.sink
        assert sink is not None
        if keys[0] <= self.last_key:  # it delivered some of these already (its backlog ran ahead of the reader)
            keep = [i for i, key in enumerate(keys) if key > self.last_key]
            if not keep:
                return 0
            entries, keys, data = [entries[i] for i in keep], [keys[i] for i in keep], None
        if data is None:
            data = sink.encode(entries)
        if not sink.write(data):
            if sink.closed:
                self.closed = True
            self.detach(lagging=not self.closed)
            return 0
        self.last_id = entries[-1].id
        self.last_key = keys[-1]
        if terminal:  # nothing can follow: let its task finish the stream
            self.direct = False
            self.wake()
        return len(entries)

    def take_after(self, last_id: str) -> list[Entry]:
        """Everything queued, as one batch, minus what was already delivered (the splice's overlap)."""
        batch, self._inbox = self._inbox, []
        last = entry_key(last_id)
        if batch and entry_key(batch[0].id) <= last:
            batch = [entry for entry in batch if entry_key(entry.id) > last]
        return batch

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is None:
            self._woken = True
        elif not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if self._woken:
            self._woken = False
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
