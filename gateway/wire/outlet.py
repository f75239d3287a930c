"""A viewer connection's write side, seen from the app: how much it holds unsent, waiting until it can take more, and
ending it when its client has stopped reading (a stalled viewer).

Why: a viewer that connects and never reads must cost the gateway a bounded amount of memory, whatever the run's
length. The kernel's socket buffers fill first; after that, every byte written to the asyncio transport stays in the
gateway's memory until the client reads. So nothing is written to a connection whose transport already holds more
than `MAX_BUFFERED` bytes (64 KiB, uvicorn's and uvloop's high-water mark), writes are at most `WRITE_BYTES` each
(`frames.sse_chunks`), and the next piece of a backlog or catch-up is only read once the previous one has left
(`SSEResponse`, the WebSocket route). The bound per viewer is then ~`MAX_BUFFERED` + one write beyond the kernel's
buffer (measured: docs/performance.md "Stalled viewers").

A connection that makes no write progress (its unsent bytes do not shrink) for `stall_s` (`RUNCAST_VIEWER_STALL_S`)
is a stalled viewer: `wait_writable` raises `ViewerStalled` and the caller closes it in a way the client resumes from
(SSE: the transport is aborted and the client reconnects with Last-Event-ID; WebSocket: close 1013 "try again", or an
abort when even the close frame cannot go out). Aborting drops what the transport holds, so all of it is released.

uvicorn keeps no public handle on the transport; the protocol behind the server's own `send` (kept in the scope under
`direct.SERVER_SEND`) has it, the same way `direct.body_writer` finds the HTTP cycle. Any other server gets no outlet
(`None`) and is served as before, without the bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

MAX_BUFFERED = 64 * 1024
"""Unsent bytes a transport may hold before nothing more is written to it (uvicorn's own high-water mark)."""

WRITE_BYTES = 16 * 1024
"""The largest write made to a viewer's connection at once (a single bigger event still goes as one write)."""

LOW_WATER = 16 * 1024
"""A paused connection is written to again once it holds at most this much (uvloop's and asyncio's default)."""

POLL_S = 0.05
"""How often a wait re-checks a transport whose server gives no 'writable again' signal (backed up, not paused)."""

FLUSH_POLL_MAX_S = 2.0


class ViewerStalled(Exception):
    """The viewer's connection took nothing for `stall_s`: close it (resumably) and release what it holds."""


class Outlet(Protocol):
    def closed(self) -> bool: ...

    def buffered(self) -> int:
        """Bytes the transport holds that the kernel has not taken yet."""
        ...

    def backed_up(self) -> bool: ...

    async def drained(self) -> None:
        """Return when the transport may have drained below its low-water mark (or at the latest after a poll)."""
        ...

    def abort(self) -> None: ...


class TransportOutlet:
    """An `Outlet` over an asyncio transport; `paused`/`resumed`: the server's own flow control (uvicorn's protocols
    track pause_writing/resume_writing), used to wait without polling."""

    __slots__ = ("_paused", "_resumed", "limit", "transport")

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        paused: Callable[[], bool],
        resumed: Callable[[], Awaitable[Any]],
        limit: int = MAX_BUFFERED,
    ) -> None:
        self.transport = transport
        self._paused = paused
        self._resumed = resumed
        self.limit = limit
        # pause (and so wait) one write before `limit`, so that the write made once unpaused stays within it
        transport.set_write_buffer_limits(high=max(limit - WRITE_BYTES, 0), low=min(LOW_WATER, limit - WRITE_BYTES))

    def closed(self) -> bool:
        return self.transport.is_closing()

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def backed_up(self) -> bool:
        return self._paused() or self.transport.get_write_buffer_size() > self.limit

    async def drained(self) -> None:
        if self._paused():
            await self._resumed()
        else:
            await asyncio.sleep(POLL_S)

    def abort(self) -> None:
        self.transport.abort()


def http_outlet(server_send: object) -> TransportOutlet | None:
    """The outlet of the uvicorn HTTP/1.1 connection behind `server_send` (httptools or h11), or None."""
    cycle = getattr(server_send, "__self__", None)
    flow = getattr(cycle, "flow", None)
    transport = getattr(cycle, "transport", None)
    if flow is None or transport is None or not hasattr(flow, "drain"):
        return None
    return TransportOutlet(transport, lambda: bool(flow.write_paused), flow.drain)


def ws_outlet(server_send: object) -> TransportOutlet | None:
    """The outlet of the uvicorn WebSocket connection behind `server_send` (websockets-sansio or wsproto: both keep a
    `writable` event that pause_writing clears), or None."""
    protocol = getattr(server_send, "__self__", None)
    writable = getattr(protocol, "writable", None)
    transport = getattr(protocol, "transport", None)
    if not isinstance(writable, asyncio.Event) or transport is None:
        return None
    return TransportOutlet(transport, lambda: not writable.is_set(), writable.wait)


async def wait_writable(outlet: Outlet, stall_s: float, *, below: int | None = None) -> None:
    """Return once `outlet` can take a write (not backed up; with `below`: once it holds at most that many bytes), or
    it is closed. Raises `ViewerStalled` when what it holds has not shrunk for `stall_s`."""
    loop = asyncio.get_running_loop()
    poll = POLL_S
    size = outlet.buffered()
    since = loop.time()
    while not outlet.closed():
        if below is None:
            if not outlet.backed_up():
                return
        elif outlet.buffered() <= below:
            return
        left = since + stall_s - loop.time()
        if left <= 0:
            raise ViewerStalled
        if below is None:
            try:
                async with asyncio.timeout(left):
                    await outlet.drained()
            except TimeoutError:
                pass
        else:  # no signal for "empty": poll, less often the longer it takes
            await asyncio.sleep(min(poll, left))
            poll = min(poll * 2, FLUSH_POLL_MAX_S)
        now_size = outlet.buffered()
        if now_size < size:  # progress: the client reads (slowly); the stall clock restarts
            since = loop.time()
        size = now_size
