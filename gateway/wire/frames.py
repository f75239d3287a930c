"""Wire encodings of stream entries: SSE frames and WebSocket messages (SPEC §5, §6).

Encodings are cached per entry: every viewer of a run receives the same Entry objects from the feed, so a frame is
encoded once per event, not once per viewer.
"""

from __future__ import annotations

import json
from functools import lru_cache

from sse_starlette import ServerSentEvent

from runcast.shared.streamlog import Entry, Reset


@lru_cache(maxsize=8192)
def sse_frame(entry: Entry) -> bytes:
    """`id:`, `event:`, `data:` lines. Event JSON is one line (JSON escapes line breaks), so the frame is one format
    away; anything with a line break goes through sse-starlette's encoder (one `data:` line per line; the same bytes
    otherwise)."""
    if "\n" in entry.event or "\r" in entry.event or "\n" in entry.type or "\r" in entry.type:
        return ServerSentEvent(data=entry.event, event=entry.type, id=entry.id, sep="\n").encode()
    return f"id: {entry.id}\nevent: {entry.type}\ndata: {entry.event}\n\n".encode()


def sse_reset_frame(reset: Reset) -> bytes:
    return ServerSentEvent(data=json.dumps(reset.to_dict()), event="reset", sep="\n").encode()


def sse_batch(entries: list[Entry]) -> bytes:
    """Several waiting events become one write."""
    return b"".join(map(sse_frame, entries))


@lru_cache(maxsize=8192)
def ws_message(entry: Entry) -> str:
    return f'{{"id":"{entry.id}","event":{entry.event}}}'


def ws_reset_message(reset: Reset) -> str:
    return json.dumps({"id": None, "event": {"type": "reset", "data": reset.to_dict()}})
