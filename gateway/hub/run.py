"""The hub's state for one followed run: its cursor in the stream, a bounded in-memory tail, its subscribers."""

from __future__ import annotations

import asyncio
import bisect

from runcast.gateway.hub.subscriber import Subscriber
from runcast.shared.ids import START_ID, entry_key
from runcast.shared.keys import events_key
from runcast.shared.streamlog import Entry


class RunFeed:
    """`history` holds, in order, every entry with `floor < id <= cursor`, at most `history_size` of them.

    A subscriber resuming at or after `floor` gets its backlog from memory, so viewers who join a followed run (or fall
    a little behind) cost no Redis read; older resume points go to Redis by XRANGE.
    """

    def __init__(self, run_id: str, group: object, history_size: int) -> None:
        self.run_id = run_id
        self.key = events_key(run_id)
        self.group = group
        self.history_size = history_size
        self.cursor = START_ID
        self.floor = START_ID
        self.history: list[Entry] = []
        self._history_keys: list[tuple[int, int]] = []
        self.subscribers: set[Subscriber] = set()
        self.refs = 0
        self.ready = asyncio.Event()
        self.join_error: BaseException | None = None
        self.ended = False
        self.expired = False
        self.last_activity = asyncio.get_running_loop().time()

    def start_with(self, floor: str, tail: list[Entry]) -> None:
        """Follow from the stream's last entry at join time; `tail` is every entry after `floor` (oldest first)."""
        self.floor = floor
        self.cursor = tail[-1].id if tail else floor
        self.ended = bool(tail) and tail[-1].is_terminal
        self._remember([entry_key(entry.id) for entry in tail], tail)

    def covers(self, after_id: str) -> bool:
        """True when memory holds every entry after `after_id` that the reader has seen."""
        return entry_key(after_id) >= entry_key(self.floor)

    def history_after(self, after_id: str) -> list[Entry]:
        return self.history[bisect.bisect_right(self._history_keys, entry_key(after_id)) :]

    def ended_at(self, last_id: str) -> bool:
        """Nothing will ever come after `last_id`: the run ended there (or its keys expired)."""
        return self.expired or (self.ended and entry_key(last_id) >= entry_key(self.cursor))

    def publish(self, entries: list[Entry]) -> list[Entry]:
        """Take the reader's new entries: advance the cursor, keep the tail, offer them to attached subscribers.

        Never waits. Returns the entries that were new (ids at or below the cursor are ignored)."""
        cursor = entry_key(self.cursor)
        keys = [entry_key(entry.id) for entry in entries]
        if keys and keys[0] <= cursor:
            fresh = [(key, entry) for key, entry in zip(keys, entries, strict=True) if key > cursor]
            keys, entries = [key for key, _ in fresh], [entry for _, entry in fresh]
        if not entries:
            return entries
        self.cursor = entries[-1].id
        self.last_activity = asyncio.get_running_loop().time()
        self.ended = entries[-1].is_terminal
        self._remember(keys, entries)
        for subscriber in list(self.subscribers):
            if subscriber.attached:
                subscriber.offer(entries)
        return entries

    def _remember(self, keys: list[tuple[int, int]], entries: list[Entry]) -> None:
        if self.history_size <= 0:
            self.floor = self.cursor
            return
        self.history.extend(entries)
        self._history_keys.extend(keys)
        excess = len(self.history) - self.history_size
        if excess > 0:
            self.floor = self.history[excess - 1].id
            del self.history[:excess]
            del self._history_keys[:excess]

    def restart_after_gap(self, first_kept: str) -> None:
        """The log trimmed entries after `cursor` that the reader never saw (a long outage). Memory can no longer
        serve anything before `first_kept`, and attached subscribers must not be fed across the gap: detach them, so
        each catches up from Redis from its own last id, where the gap check sends it a `reset` first."""
        self.history.clear()
        self._history_keys.clear()
        self.floor = first_kept
        for subscriber in self.subscribers:
            subscriber.attached = False
            subscriber.lagging = True
            subscriber.wake()

    def expire(self) -> None:
        """The run's keys are gone: nothing more will come; let every subscriber finish."""
        self.expired = True
        for subscriber in self.subscribers:
            subscriber.wake()
