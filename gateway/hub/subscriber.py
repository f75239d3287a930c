"""One viewer's bounded inbox in the hub.

The reader offers each new batch of a run to every attached subscriber without ever waiting: when the inbox would
overflow, the subscriber is marked lagging instead (and the hub detaches it from the live feed). Nothing is dropped
silently: a lagging subscriber first drains what it holds, then catches up from the log after its last delivered id.
"""

from __future__ import annotations

import asyncio

from runcast.shared.ids import entry_key
from runcast.shared.streamlog import Entry


class Subscriber:
    """Wake-ups use a bare future made only while the subscriber waits, not an `asyncio.Event`: the reader's
    `offer` to N subscribers is a hot loop (the Event's set/wait/clear cost showed in profiles). Same semantics:
    a wake while the subscriber is not waiting makes its next `wait()` return at once."""

    __slots__ = ("_inbox", "_waiter", "_woken", "attached", "lagging", "max_queue")

    def __init__(self, max_queue: int) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self.max_queue = max_queue
        self._inbox: list[Entry] = []
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False
        self.attached = False
        self.lagging = False

    def __len__(self) -> int:
        return len(self._inbox)

    def offer(self, entries: list[Entry]) -> bool:
        """Called by the reader: queue `entries`, or (inbox full) mark this subscriber lagging and return False."""
        if len(self._inbox) + len(entries) > self.max_queue:
            self.lagging = True
            self.attached = False
            self.wake()
            return False
        self._inbox.extend(entries)
        self.wake()
        return True

    def attach(self) -> None:
        """(Re)join the live feed: start buffering with an empty inbox."""
        self._inbox.clear()
        self.attached = True
        self.lagging = False

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
