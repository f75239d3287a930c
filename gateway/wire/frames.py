"""Wire encodings of stream entries: SSE frames and WebSocket messages (SPEC §5, §6).

Encodings are cached per entry: every viewer of a run receives the same Entry objects from the feed, so a frame is
encoded once per event, not once per viewer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import lru_cache

from sse_starlette import ServerSentEvent

from runcast.shared.streamlog import Entry, Reset


def encode_sse_frame(entry: Entry) -> bytes:
    """`id:`, `event:`, `data:` lines. Event JSON is one line (JSON escapes line breaks), so the frame is one format
    away; anything with a line break goes through sse-starlette's encoder (one `data:` line per line; the same bytes
    otherwise)."""
    if "\n" in entry.event or "\r" in entry.event or "\n" in entry.type or "\r" in entry.type:
        return ServerSentEvent(data=entry.event, event=entry.type, id=entry.id, sep="\n").encode()
    return f"id: {entry.id}\nevent: {entry.type}\ndata: {entry.event}\n\n".encode()


sse_frame = lru_cache(maxsize=8192)(encode_sse_frame)
"""Cached per entry: the viewers' own tasks (backlogs, catch-ups) encode the same entries many times."""


def sse_reset_frame(reset: Reset) -> bytes:
    return ServerSentEvent(data=json.dumps(reset.to_dict()), event="reset", sep="\n").encode()


def sse_batch(entries: Sequence[Entry]) -> bytes:
    """Several waiting events become one write."""
    return b"".join(map(sse_frame, entries))


def sse_parts(entries: Sequence[Entry], limit: int) -> Iterator[list[bytes]]:
    """`entries`' frames in groups of at most `limit` bytes (a frame bigger than `limit` goes alone), one body write
    each, so a long backlog is never one big write: each waits until the connection can take it (`wire/outlet.py`).
    Groups of the cached frames rather than joined bytes: the caller joins each as it sends it and keeps no copy."""
    pending: list[bytes] = []
    size = 0
    for frame in map(sse_frame, entries):
        if pending and size + len(frame) > limit:
            yield pending
            pending, size = [], 0
        pending.append(frame)
        size += len(frame)
    if pending:
        yield pending


def sse_live(entries: Sequence[Entry]) -> bytes:
    """The same bytes as `sse_batch`, for the hub's one pass over a run's live viewers (`DirectSink`): a pass encodes
    each batch once for all of them anyway, so the per-entry cache would only cost its hashing and bookkeeping."""
    return b"".join(map(encode_sse_frame, entries))


@lru_cache(maxsize=8192)
def ws_message(entry: Entry) -> str:
    return f'{{"id":"{entry.id}","event":{entry.event}}}'


def ws_reset_message(reset: Reset) -> str:
    return json.dumps({"id": None, "event": {"type": "reset", "data": reset.to_dict()}})
