"""The hub's state for one followed run: where it is in the stream, a bounded in-memory tail, its subscribers.

Entries reach a run from two places, both through `announce(prev, entries)`: the live announcements its reader
receives (each names the id the appended entries follow), and the gap fills read from the log. An announcement that
does not follow what the run already has (`prev` after `head`) is a gap: the hub reads the log from `head` (a fill)
instead. Accepted entries wait in `incoming` until the reader's tick ends, then `publish` hands them to every viewer in
one pass (several announcements of one tick become one write per viewer).
"""

from __future__ import annotations

import asyncio
import bisect

from runcast.gateway import metrics
from runcast.gateway.hub.subscriber import Encode, Subscriber
from runcast.shared.ids import START_ID, entry_key
from runcast.shared.keys import events_key, live_channel
from runcast.shared.streamlog import Entry


class RunFeed:
    """`history` holds, in order, every entry with `floor < id <= cursor`: the last `history_size` (plus at most an
    eighth more, so the list is trimmed in steps rather than per event).

    A subscriber resuming at or after `floor` gets its backlog from memory, so viewers who join a followed run (or fall
    a little behind) cost no Redis read; older resume points go to Redis by XRANGE.
    """

    def __init__(self, run_id: str, group: object, history_size: int) -> None:
        self.run_id = run_id
        self.key = events_key(run_id)
        self.channel = live_channel(run_id)
        self.group = group
        self.history_size = history_size
        self._trim_slack = min(256, history_size // 8)  # at most this many entries beyond history_size
        self.cursor = START_ID  # the last entry published to subscribers
        self.cursor_key = (0, 0)
        self.floor = START_ID
        self.history: list[Entry] = []
        self._history_keys: list[tuple[int, int]] = []
        self.subscribers: set[Subscriber] = set()
        self.refs = 0
        self.ready = asyncio.Event()
        self.join_error: BaseException | None = None
        self.ended = False
        self.expired = False
        self._loop = asyncio.get_running_loop()  # kept: get_running_loop() costs a getpid() syscall per call
        self.last_activity = self._loop.time()
        # -- sequencing announcements (see the module docstring)
        self.started = False  # the join's tail is in: announcements can be checked against `head`
        self.early: list[tuple[str, list[Entry]]] = []  # announcements that came before the tail
        self.head = START_ID  # the last entry accepted (published, or waiting in `incoming`)
        self.head_key = (0, 0)
        self.incoming: list[Entry] = []
        self._incoming_keys: list[tuple[int, int]] = []
        # -- the live subscription and gap fills (driven by the hub)
        self.subscribed = asyncio.Event()  # its channel is subscribed on its reader's current connection
        self.ever_subscribed = False
        self.subscribe_error: Exception | None = None  # the server refused the channel (not on a cluster move)
        self.missing_to = (0, 0)  # the last id of an announcement refused as a gap: a fill must get at least this far
        self.fill_wanted = False
        self.fill_check = False  # the fill must first check that nothing after `head` was trimmed
        self.filling = False

    def start_with(self, floor: str, tail: list[Entry]) -> bool:
        """Follow from the stream's last entry at join time; `tail` is every entry after `floor` (oldest first).

        Then take the announcements that arrived while the tail was read; True when one of them showed a gap."""
        self.floor = floor
        self.cursor = self.head = tail[-1].id if tail else floor
        self.cursor_key = self.head_key = entry_key(self.head)
        self.ended = bool(tail) and tail[-1].is_terminal
        self._remember([entry_key(entry.id) for entry in tail], tail)
        self.started = True
        early, self.early = self.early, []
        gap = False
        for prev, entries in early:
            gap = not self.announce(prev, entries) or gap
        return gap

    def announce(self, prev: str, entries: list[Entry]) -> bool:
        """Take `entries`, appended right after `prev`. False (nothing taken) when `prev` is after `head`: entries
        between them are missing here, so the caller must read the log after `head` first."""
        if not self.started:
            self.early.append((prev, entries))
            return True
        keys = [entry_key(entry.id) for entry in entries]
        if prev != self.head:
            if entry_key(prev) > self.head_key:
                self.missing_to = max(self.missing_to, keys[-1])
                return False
            head = self.head_key  # an overlap (a fill read some of these already): keep what is new
            kept = [(key, entry) for key, entry in zip(keys, entries, strict=True) if key > head]
            if not kept:
                return True
            keys, entries = [key for key, _ in kept], [entry for _, entry in kept]
        self.incoming.extend(entries)
        self._incoming_keys.extend(keys)
        self.head, self.head_key = entries[-1].id, keys[-1]
        return True

    def flush(self) -> list[Entry]:
        """Publish what was accepted since the last flush; returns it."""
        if not self.incoming:
            return []
        entries, keys, self.incoming, self._incoming_keys = self.incoming, self._incoming_keys, [], []
        return self.publish(entries, keys)

    def covers(self, after_id: str) -> bool:
        """True when memory holds every entry after `after_id` that the hub has published."""
        return entry_key(after_id) >= entry_key(self.floor)

    def history_after(self, after_id: str) -> list[Entry]:
        return self.history[bisect.bisect_right(self._history_keys, entry_key(after_id)) :]

    def ended_at(self, last_id: str) -> bool:
        """Nothing will ever come after `last_id`: the run ended there (or its keys expired)."""
        return self.expired or (self.ended and entry_key(last_id) >= self.cursor_key)

    def publish(self, entries: list[Entry], keys: list[tuple[int, int]] | None = None) -> list[Entry]:
        """Take new entries: advance the cursor, keep the tail, and hand them to every subscriber in one pass.

        Never waits. Direct subscribers get the bytes written to their connection here, encoded once per format;
        the others get them in their inbox. Returns the entries that were new (ids at or below the cursor are
        ignored)."""
        cursor = self.cursor_key
        if keys is None:
            keys = [entry_key(entry.id) for entry in entries]
        if keys and keys[0] <= cursor:
            fresh = [(key, entry) for key, entry in zip(keys, entries, strict=True) if key > cursor]
            keys, entries = [key for key, _ in fresh], [entry for _, entry in fresh]
        if not entries:
            return entries
        self.cursor, self.cursor_key = entries[-1].id, keys[-1]
        if self.cursor_key > self.head_key:  # published straight (not through `announce`)
            self.head, self.head_key = self.cursor, self.cursor_key
        self.last_activity = self._loop.time()
        self.ended = entries[-1].is_terminal
        self._remember(keys, entries)
        self._pass(entries, keys)
        return entries

    def _pass(self, entries: list[Entry], keys: list[tuple[int, int]]) -> None:
        encoded: dict[Encode, bytes] = {}
        whole = 0  # direct subscribers that took the whole batch (counted in one go)
        for subscriber in tuple(self.subscribers):
            if subscriber.direct:
                encode = subscriber.sink.encode  # type: ignore[union-attr]
                data = encoded.get(encode)
                if data is None:
                    data = encoded[encode] = encode(entries)
                taken = subscriber.write_direct(entries, keys, data, self.ended)
                if taken == len(entries):
                    whole += 1
                elif taken:
                    metrics.delivered(entries[-taken:], observe_lag=True, direct=True)
            elif subscriber.attached:
                subscriber.offer(entries)
        if whole:
            metrics.delivered_directly(keys, whole)

    def _remember(self, keys: list[tuple[int, int]], entries: list[Entry]) -> None:
        if self.history_size <= 0:
            self.floor = self.cursor
            return
        self.history.extend(entries)
        self._history_keys.extend(keys)
        excess = len(self.history) - self.history_size
        if excess > self._trim_slack:  # trimmed in steps, not per event: each trim moves the whole list
            self.floor = self.history[excess - 1].id
            del self.history[:excess]
            del self._history_keys[:excess]

    def restart_after_gap(self, first_kept: str) -> None:
        """The log trimmed entries after `cursor` that the hub never saw (a long outage). Memory can no longer
        serve anything before `first_kept`, and subscribers must not be fed across the gap: detach them, so each
        catches up from Redis from its own last id, where the gap check sends it a `reset` first."""
        self.history.clear()
        self._history_keys.clear()
        self.floor = first_kept
        for subscriber in self.subscribers:
            subscriber.detach(lagging=True)

    def expire(self) -> None:
        """The run's keys are gone: nothing more will come; let every subscriber finish."""
        self.expired = True
        for subscriber in self.subscribers:
            subscriber.detach(lagging=False)
