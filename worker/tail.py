"""A run's recently acknowledged entries, kept by its worker to re-send what a Redis failover lost.

Redis replicates asynchronously: the primary acknowledges an append before its replica has it, so when Sentinel
promotes the replica the last few acknowledged entries may be gone (viewers may already have seen them). They are
re-sent from here with their own ids (`runcast.worker.writer`). How much to keep: what was acknowledged in the
`keep_s` before the switch. A SIGKILLed primary loses its replication lag (milliseconds); a demoted live one keeps
taking writes until each process's `PrimaryWatch` leaves it (~0.5 s). `keep_s` = 5 s covers both with room, bounded
by `max_bytes` per run (each CHUNK carries the content so far, so a long run's entries are large): anything older or
beyond that is reported, not re-sent — one METADATA event `{"events_lost": {"after": <id>, "through": <id>}}` at the
id of the newest entry no longer kept.
"""

from __future__ import annotations

import json
from collections import deque

from runcast.shared.ids import entry_key
from runcast.shared.streaming import StreamingEvent, StreamingEventType

Entry = tuple[str, str, str]  # (id, type, json)


class Tail:
    keep_s = 5.0
    max_bytes = 256 * 1024

    def __init__(self) -> None:
        self._entries: deque[tuple[float, Entry]] = deque()
        self._bytes = 0
        self.forgotten = ""  # id of the newest entry no longer kept ('' = none)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def extend(self, entries: list[Entry], now: float) -> None:
        """Keep `entries` (just acknowledged); forget what is older than `keep_s` or beyond `max_bytes`."""
        kept = self._entries
        for entry in entries:
            kept.append((now, entry))
            self._bytes += len(entry[2])
        horizon = now - self.keep_s
        while kept and (kept[0][0] < horizon or self._bytes > self.max_bytes) and len(kept) > 1:
            _, old = kept.popleft()
            self._bytes -= len(old[2])
            self.forgotten = old[0]

    def after(self, top: str, run_id: str) -> tuple[list[Entry], Entry | None]:
        """The kept entries after `top` (what a log ending at `top` lost), and a notice when older ones are gone."""
        top_key = entry_key(top)
        lost = [entry for _, entry in self._entries if entry_key(entry[0]) > top_key]
        notice = None
        if self.forgotten and entry_key(self.forgotten) > top_key:
            data = {"events_lost": {"after": top, "through": self.forgotten}}
            event = StreamingEvent(StreamingEventType.METADATA, data, run_id=run_id)
            notice = (self.forgotten, StreamingEventType.METADATA.value, event.to_json())
        return lost, notice

    @staticmethod
    def status_of(entries: list[Entry]) -> str:
        """The run status the last status-changing entry of `entries` moves the run to ('' = none)."""
        for _, kind, payload in reversed(entries):
            if kind == StreamingEventType.START.value:
                return "running"
            if kind == StreamingEventType.COMPLETE.value:
                return "completed"
            if kind == StreamingEventType.ERROR.value:
                data = json.loads(payload).get("data") or {}
                return "cancelled" if data.get("error_type") == "cancelled" else "failed"
        return ""
