"""What comes in on a hub reader's connection: the announcement format, and the protocol that parses the bytes.

The append script (`shared/streamlog.py`) announces each append as one pub/sub message; `parse_announcement` reads
it. `Subscription` is the asyncio protocol a reader's connection switches to once redis-py has set it up (auth, TLS,
database, client name): it parses replies with hiredis as bytes arrive and hands each read's worth to the reader
(`LiveReader.received`), so a message costs no task wake-up and no coroutine chain. `OneReply` adapts a reply
already parsed by redis-py to the same interface, for connections without a socket to take over (fakeredis).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import hiredis

from runcast.shared.streamlog import Entry

log = logging.getLogger("runcast.hub")


def parse_announcement(payload: bytes) -> tuple[str, list[Entry]]:
    """`<prev>\n` then, per entry, `<id> <type> <byte length>\n<event>` (see the append script) as (prev, entries).

    Parsed by length, so the event JSON is sliced out as it is (a JSON array around it cost ~3 us more per event to
    decode: every quote in the event is escaped). Anything malformed raises ValueError: the hub reads the log."""
    end = payload.index(b"\n")
    prev = payload[:end].decode()
    entries = []
    pos, size = end + 1, len(payload)
    while pos < size:
        end = payload.index(b"\n", pos)
        entry_id, entry_type, length = payload[pos:end].split(b" ")
        pos = end + 1 + int(length)
        if pos > size:
            raise ValueError("announcement cut short")
        entries.append(Entry(entry_id.decode(), entry_type.decode(), payload[end + 1 : pos].decode()))
    return prev, entries


def as_bytes(reply: Any) -> Any:
    """A reply decoded by redis-py (the pump's connection decodes) as the protocol's own parser gives it: bytes."""
    if isinstance(reply, str):
        return reply.encode()
    if isinstance(reply, list):
        return [as_bytes(item) for item in reply]
    return reply


class OneReply:
    """`LiveReader.received`'s parser interface over one reply already parsed by redis-py."""

    reply: Any = False

    def gets(self) -> Any:
        reply, self.reply = self.reply, False
        return reply


class Subscription(asyncio.Protocol):
    """The reader's connection once redis-py has set it up: bytes in, parsed by hiredis, handed to the reader."""

    def __init__(self, reader: Any, lost: asyncio.Future[Exception | None]) -> None:
        self.reader = reader
        self.lost = lost
        self.parser = hiredis.Reader()  # bytes: an announcement is parsed by length (see `parse_announcement`)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            self.reader.received(self.parser)
        except hiredis.ProtocolError as exc:
            log.error("hub reader %s: protocol error %r", self.reader.group, exc)
            if not self.lost.done():
                self.lost.set_result(exc)

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
