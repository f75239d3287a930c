"""Writing a streaming response's body straight to its uvicorn connection, from the hub's one pass over a run.

Why: delivering one event to N viewers through ASGI costs, per viewer, a task wake-up, the async-generator chain of the
route, the response's loop, Starlette's and our middlewares' `send` wrappers and uvicorn's `send` coroutine, before
the one `transport.write` that is the actual work (README "Performance": ~75 % of a delivery was that overhead). A
`DirectSink` lets the hub do only the write: `hub/subscriber.py` describes when it may (the viewer is level with the
run) and what happens when the connection is backed up (the viewer goes back to its own task and catches up).

What is bypassed, and why that is safe: only `http.response.body` messages with `more_body=True`, after the response
start went through the normal `send` (status, headers, access log, chunked framing decided) and before its end (the
final empty body goes through `send` too, after the hub has let go of the viewer). For those messages uvicorn's `send`
does exactly this: wait while the transport is paused (we refuse instead: the viewer is detached to catch-up), return
if the client is gone, frame the bytes as one HTTP/1.1 chunk (httptools: by hand; h11: `Connection.send(Data)`) and
`transport.write` them. Middlewares that rewrite a body (GZip) must not wrap a route that uses a sink; runcast's
middlewares never touch bodies. Any other server, or uvicorn with a send wrapper (`--log-level trace`), gets no writer:
the viewer is served through `send` as before (`DirectSink.ready` stays False).

The bound per viewer: a write is refused when the transport would then hold more than `MAX_BUFFERED` unsent bytes (or
uvicorn paused writing), so what the gateway holds for a stalled viewer through the hub is at most that, beyond the
kernel's socket buffer; from there the viewer's own task catches up from memory or the log through `send`, one
bounded write at a time, each once the connection can take it (`wire/outlet.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

import h11

from runcast.gateway.hub.subscriber import Encode
from runcast.gateway.wire.outlet import MAX_BUFFERED

SERVER_SEND = "runcast.server_send"
"""Scope key under which the app keeps the server's own `send` (see `GatewayApp`): the route's `send` is wrapped by
Starlette's middlewares, and only the server's own one leads to the connection."""


class BodyWriter(Protocol):
    def closed(self) -> bool: ...

    def backed_up(self) -> bool: ...

    def write(self, data: bytes) -> bool:
        """Write `data` as body bytes now; False (nothing written) when the transport is backed up or closed."""
        ...

    def write_parts(self, parts: list[bytes]) -> bool:
        """Write `parts` as one chunk of body bytes now, whatever the transport holds (the caller waited until it
        could take them); False (nothing written) when it is closed."""
        ...


class _UvicornBody:
    """The state of one uvicorn HTTP/1.1 response cycle that decides whether body bytes may be written now."""

    __slots__ = ("cycle", "flow", "max_buffered", "transport")

    def __init__(self, cycle: Any, max_buffered: int) -> None:
        self.cycle = cycle
        self.transport = cycle.transport
        self.flow = cycle.flow
        self.max_buffered = max_buffered

    def closed(self) -> bool:
        return bool(self.cycle.disconnected or self.cycle.response_complete or self.transport.is_closing())

    def backed_up(self) -> bool:
        return bool(self.flow.write_paused or self.transport.get_write_buffer_size() > self.max_buffered)


class _HttptoolsBody(_UvicornBody):
    """uvicorn's httptools protocol (`uvicorn[standard]`, the default): chunked framing is `%x\\r\\n<data>\\r\\n`."""

    __slots__ = ()

    def write(self, data: bytes) -> bool:
        cycle, transport = self.cycle, self.transport  # closed() and backed_up() inlined: once per viewer per event
        if cycle.disconnected or cycle.response_complete or transport.is_closing():
            return False
        if self.flow.write_paused or transport.get_write_buffer_size() + len(data) > self.max_buffered:
            return False
        # `data` is the same object for every direct viewer of this pass: the transport keeps a reference to it, not
        # a copy, so viewers whose connections are backed up share what they hold
        transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        return True

    def write_parts(self, parts: list[bytes]) -> bool:
        if self.closed():
            return False
        # the parts (cached frames) are shared by every viewer of the run: referenced by the transport, not copied
        self.transport.writelines([b"%x\r\n" % sum(map(len, parts)), *parts, b"\r\n"])
        return True


class _H11Body(_UvicornBody):
    """uvicorn's h11 protocol (no httptools installed, or `--http h11`): h11 frames the data."""

    __slots__ = ()

    def write(self, data: bytes) -> bool:
        if self.closed() or self.backed_up() or self.transport.get_write_buffer_size() + len(data) > self.max_buffered:
            return False
        self.transport.write(self.cycle.conn.send(h11.Data(data=data)))
        return True

    def write_parts(self, parts: list[bytes]) -> bool:
        if self.closed():
            return False
        self.transport.write(self.cycle.conn.send(h11.Data(data=b"".join(parts))))
        return True


def body_writer(server_send: object, max_buffered: int = MAX_BUFFERED) -> BodyWriter | None:
    """A writer for the response whose start `server_send` has just sent, or None when this is not a connection the
    hub knows how to write to (then the route's own task sends everything, as it always did)."""
    cycle = getattr(server_send, "__self__", None)
    if cycle is None or getattr(cycle, "response_started", False) is not True:
        return None
    module = type(cycle).__module__
    if module == "uvicorn.protocols.http.httptools_impl":
        if cycle.chunked_encoding is True and cycle.scope.get("method") != "HEAD":
            return _HttptoolsBody(cycle, max_buffered)
        return None
    if module == "uvicorn.protocols.http.h11_impl":
        if cycle.conn.our_state is h11.SEND_BODY and cycle.scope.get("method") != "HEAD":
            return _H11Body(cycle, max_buffered)
    return None


class DirectSink:
    """The hub's `Sink` (hub/subscriber.py) for one streaming response in format `encode` (e.g. `sse_batch`).

    Unbound until the response has started (`bind`); unbound, `ready` is False and the hub never writes to it.
    A new format plugs in by passing its own `encode` (entries -> bytes, per-entry results cached); viewers of a run
    that share a format share the encoded bytes of each pass. What the response shares with the hub's writes lives
    here, as plain attributes (this is the per-viewer hot path): `prefix`, bytes owed before the first write (SSE's
    `retry:` line; whoever writes first takes it), and `last_write`, the loop time of the last write (the response's
    heartbeat counts from it)."""

    __slots__ = ("_clock", "_writer", "encode", "last_write", "prefix")

    def __init__(self, encode: Encode) -> None:
        self.encode = encode
        self._writer: BodyWriter | None = None
        self._clock: Callable[[], float] = time.monotonic
        self.prefix = b""
        self.last_write = 0.0

    def bind(self, scope: MutableMapping[str, Any], prefix: bytes = b"") -> bool:
        """Call once the response start has been sent through the server's `send`."""
        self._writer = body_writer(scope.get(SERVER_SEND))
        self._clock = asyncio.get_running_loop().time  # kept: get_running_loop() costs a getpid() per call
        self.prefix = prefix
        return self._writer is not None

    def write_parts(self, parts: list[bytes]) -> bool:
        """The response's own write of body `parts` (backlog, catch-up: it waited until the connection could take
        them), straight to the transport like the hub's; False when unbound or closed (then it sends as usual)."""
        writer = self._writer
        if writer is None or not writer.write_parts(parts):
            return False
        self.last_write = self._clock()
        return True

    def unbind(self) -> None:
        self._writer = None

    @property
    def bound(self) -> bool:
        return self._writer is not None

    @property
    def ready(self) -> bool:
        """Bound, open and not backed up: the hub may start writing (until a write is refused)."""
        writer = self._writer
        return writer is not None and not writer.closed() and not writer.backed_up()

    @property
    def closed(self) -> bool:
        return self._writer is not None and self._writer.closed()

    @property
    def backed_up(self) -> bool:
        """Bound and holding more unsent bytes than it may (its client is not reading, or not fast enough)."""
        writer = self._writer
        return writer is not None and writer.backed_up()

    def write(self, data: bytes) -> bool:
        writer = self._writer
        if writer is None:
            return False
        prefix = self.prefix
        if not writer.write(prefix + data if prefix else data):
            return False
        if prefix:
            self.prefix = b""
        self.last_write = self._clock()
        return True
