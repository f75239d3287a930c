"""A lean ASGI response for one SSE viewer: pre-encoded frames, a heartbeat, prompt end on disconnect and on shutdown.

Hand-written on purpose instead of sse-starlette's `EventSourceResponse`, which the gateway used before. Measured on
the hub read path (`bench/fanout.py`): an idle SSE viewer cost the gateway ~52 KiB RSS (raw ASGI on uvicorn: ~9 KiB),
and at 1,000 viewers of one run ~25 % of the gateway's CPU went to sse-starlette/Starlette send wrappers. Per
connection it runs an anyio task group of four tasks (the stream, a ping task, a disconnect listener, an exit-signal
listener) and wraps every send in its own timeout scope. Here a connection is its handler's own task plus
one helper task that waits on `receive()` (for `http.disconnect`) and sends the heartbeat when the stream was quiet;
every send is one plain `http.response.body` message, and the constant frames are pre-built bytes. Measured with
this class: ~29 KiB per idle viewer (5,000 idle viewers, hub).

Frames are encoded elsewhere (`runcast.gateway.wire.frames`, with sse-starlette's `ServerSentEvent`); this module only
moves bytes. With a `sink` (`runcast.gateway.wire.direct.DirectSink`), the hub writes the live frames to the connection
itself once the viewer is level with its run; the `frames` iterator then only yields what this response must send
itself (backlog, catch-up), and the heartbeat keeps counting from whichever wrote last.

Ending a stream from outside (the viewer went away, the server shuts down) cancels the handler's task with a marker
and takes the cancellation back (`Task.uncancel`, as `asyncio.timeout` does): wherever the task waits (usually inside
the feed's iterator, waiting for the next batch) the iterator is closed right there, so the hub unsubscribes at once.

Graceful shutdown: uvicorn runs the lifespan shutdown only after every open connection has finished, so an SSE stream
cannot wait for it. Each app has one `OpenStreams` registry (`open_streams(app)`); while streams are open, one task per
registry watches for the server starting to shut down (see `shutdown_requested`) and then ends them all
(`OpenStreams.close_all`, which anything else may call too, e.g. a drain endpoint or a custom signal handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from sse_starlette.sse import AppStatus
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from runcast.gateway import metrics
from runcast.gateway.wire.direct import SERVER_SEND, DirectSink
from runcast.gateway.wire.outlet import Outlet, ViewerStalled, http_outlet, wait_writable

PING_FRAME = b": ping\n\n"
"""The heartbeat (SPEC §6): an SSE comment, ignored by every client."""

RETRY_MS = 1000
"""Sent as a `retry:` field in the first event frame: browsers reconnect after 1 s instead of their default (Chrome:
~3 s). It rides on a frame that has data rather than going out alone: a data-less frame dispatches nothing in a
browser, but some client libraries (httpx-sse) surface it as an event with empty data, which would break a consumer
that parses every event's data as JSON."""

SHUTDOWN_POLL_S = 0.2

VIEWER_STALL_S = 60.0
"""Default `stall_s` (RUNCAST_VIEWER_STALL_S): a viewer whose connection takes nothing this long is closed."""

_PING: Message = {"type": "http.response.body", "body": PING_FRAME, "more_body": True}
_END: Message = {"type": "http.response.body", "body": b"", "more_body": False}
_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass every frame on at once
    (b"connection", b"keep-alive"),
)


def _uvicorn_server_exiting() -> bool:
    """True when the uvicorn server of this process has been told to exit (signal, or `server.should_exit = True`).

    uvicorn installs its bound `Server.handle_exit` as the SIGTERM/SIGINT handler while it serves (main thread), which
    is the only way to reach the server from the app; sse-starlette finds it the same way."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        server = getattr(signal.getsignal(signum), "__self__", None)
        if getattr(server, "should_exit", False) is True:
            return True
    return False


def shutdown_requested() -> bool:
    """The server is shutting down: uvicorn's `should_exit`, or sse-starlette's `AppStatus.should_exit` (set by its
    patched `Server.handle_exit`, or by hand)."""
    return AppStatus.should_exit or _uvicorn_server_exiting()


class OpenStreams:
    """The open SSE responses of one app. `close_all()` ends each of them now and every later one at once.

    While at least one stream is open, one task polls `shutdown_requested` every `poll_s` and calls `close_all()`:
    one cheap check per process per poll, instead of a listener per connection."""

    def __init__(
        self, shutdown_requested: Callable[[], bool] = shutdown_requested, poll_s: float = SHUTDOWN_POLL_S
    ) -> None:
        self.shutdown_requested = shutdown_requested
        self.poll_s = poll_s
        self.closing = False
        self._open: set[SSEResponse] = set()
        self._watcher: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._open)

    def add(self, response: SSEResponse) -> None:
        self._open.add(response)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="runcast-sse-shutdown-watch")

    def discard(self, response: SSEResponse) -> None:
        self._open.discard(response)

    def close_all(self) -> None:
        """End every open stream (each sends its end of body and returns), and every stream opened from now on."""
        self.closing = True
        for response in list(self._open):
            response.end()

    async def _watch(self) -> None:
        while self._open and not self.closing:
            if self.shutdown_requested():
                self.close_all()
                return
            await asyncio.sleep(self.poll_s)


def open_streams(app: Any) -> OpenStreams:
    """The app's registry of open SSE streams (made on first use)."""
    streams = getattr(app.state, "sse_streams", None)
    if streams is None:
        streams = app.state.sse_streams = OpenStreams()
    return streams


class SSEResponse(Response):
    """Streams `frames` (pre-encoded SSE bytes, or a list of such parts: one body write per item) until it ends, the
    client goes away, or `streams` closes. Puts `retry:` in the first frame and sends `PING_FRAME` after `ping_s`
    without a frame.

    On uvicorn, bounded per viewer (`wire/outlet.py`): each frame is sent only once the connection can take it, and
    the next one is asked of `frames` (a backlog page read, say) only once the last has left; a connection that takes
    nothing for `stall_s` is aborted (the client resumes with Last-Event-ID), which releases what it held."""

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[bytes | list[bytes]],
        *,
        ping_s: float = 15.0,
        streams: OpenStreams | None = None,
        retry_ms: int | None = RETRY_MS,
        headers: Mapping[str, str] | None = None,
        sink: DirectSink | None = None,
        stall_s: float = VIEWER_STALL_S,
    ) -> None:
        if ping_s <= 0:
            raise ValueError("ping_s must be positive")
        if stall_s <= 0:
            raise ValueError("stall_s must be positive")
        self.stall_s = stall_s
        self._outlet: Outlet | None = None  # the connection's write side (uvicorn), once the response has started
        self.stalled = False  # closed because the client stopped reading
        self.frames = frames
        self.sink = sink
        self.ping_s = ping_s
        self.streams = streams
        self.status_code = 200
        self.background: BackgroundTask | None = None  # FastAPI may attach its background tasks here
        extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        self.raw_headers = [*_HEADERS, *extra]  # Starlette's `headers` view (FastAPI may add a dependency's headers)
        self._first = f"retry: {retry_ms}\n".encode() if retry_ms is not None else b""  # prefix of the 1st frame
        self._task: asyncio.Task[Any] | None = None  # set while the frames loop runs: `end()` may interrupt it
        self._ended = False  # `end()` was called: the interruption is ours, not someone else's cancellation
        self._sending = False  # the handler is inside send(): the heartbeat is not needed now
        self._last_send = 0.0

    def _take_first(self) -> bytes:
        """The `retry:` line if no frame has gone yet (by this response or by the hub through the sink), once."""
        first, self._first = self._first, b""
        if self.sink is not None and self.sink.bound:
            first, self.sink.prefix = self.sink.prefix, b""
        return first

    def _last_write(self) -> float:
        """When bytes last went out: sent by this response, or written by the hub through the sink."""
        sink = self.sink
        return max(self._last_send, sink.last_write) if sink is not None and sink.bound else self._last_send

    def end(self) -> None:
        """Stop streaming now (from another task or a callback): the handler closes `frames` and ends the body."""
        if self._ended:
            return
        self._ended = True
        if self._task is not None:
            self._task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        frames = self.frames
        helper: asyncio.Task[None] | None = None
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            self._last_send = loop.time()
            self._outlet = http_outlet(scope.get(SERVER_SEND))
            if self.sink is not None:
                self.sink.bind(scope, prefix=self._first)
            if self.streams is not None:
                if self.streams.closing:
                    self._ended = True
                self.streams.add(self)
            helper = loop.create_task(self._listen(receive, send, loop))
            if not self._ended:
                self._task = task
                try:
                    async for frame in frames:
                        first = self._take_first()
                        parts = frame if isinstance(frame, list) else [frame]
                        if first:
                            parts = [first, *parts]
                        self._sending = True
                        await self._writable()
                        if not self._write(parts):
                            await send({"type": "http.response.body", "body": b"".join(parts), "more_body": True})
                        frame = parts = []  # only the transport holds them now: a stalled viewer must not hold two
                        self._last_send = loop.time()
                        await self._writable()  # the next frame (a log read, say) only once this one has left
                        self._sending = False
                except ViewerStalled:
                    self._abort()
                except asyncio.CancelledError:
                    # ours (end() was called) unless someone else cancelled too: then propagate
                    if not self._ended or task.uncancel() > 0:
                        raise
                finally:
                    self._task = None
                    self._sending = False
        finally:
            if self.sink is not None:
                self.sink.unbind()
            if self.streams is not None:
                self.streams.discard(self)
            if helper is not None:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper
            aclose = getattr(frames, "aclose", None)
            if aclose is not None:
                await aclose()  # no-op when the iterator already ended or the interruption closed it
        if not self.stalled:
            await self._end_body(send)
        if self.background is not None:
            await self.background()

    async def _writable(self, below: int | None = None) -> None:
        """Wait until the connection can take a write (`below`: holds at most that many bytes); ViewerStalled when
        it took nothing for `stall_s`. No wait off uvicorn (no outlet)."""
        outlet = self._outlet
        if outlet is not None:
            await wait_writable(outlet, self.stall_s, below=below)

    def _write(self, parts: list[bytes]) -> bool:
        """Body parts straight to the transport (uvicorn, through the sink's writer): the parts are the run's cached
        frames, shared by all its viewers, so what a backed-up connection holds is references, not copies."""
        sink = self.sink
        return sink is not None and sink.write_parts(parts)

    def _abort(self) -> None:
        """Close a stalled viewer's connection, dropping what it holds; the client resumes with Last-Event-ID."""
        if self.stalled:
            return
        self.stalled = True
        metrics.VIEWER_STALLS.inc()
        if self._outlet is not None:
            self._outlet.abort()

    async def _end_body(self, send: Send) -> None:
        """The end of the body, then (uvicorn) wait until the connection has sent everything: a client that stops
        reading after the terminal event must not keep the gateway holding its last bytes either."""
        if self._ended:  # the client went away, or the server is shutting down: no waiting
            await send(_END)  # a no-op for uvicorn when the client is gone
            return
        try:
            await self._writable()
            await send(_END)
            await self._writable(below=0)
        except ViewerStalled:
            self._abort()

    async def _listen(self, receive: Receive, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        """The one helper: waits for `http.disconnect` (then ends the stream) and sends the heartbeat when due.

        A heartbeat may be sent while the handler's task waits for the next frame, never while it is inside send().
        When the heartbeat is due and the connection is backed up (the hub wrote to it until it could take no more,
        and the run has been quiet since), nothing is sent: the helper waits for it to drain instead, and ends a
        stalled viewer after `stall_s`, as the handler does while it sends."""
        while True:
            due = self._last_write() + self.ping_s
            if loop.time() >= due:
                outlet = self._outlet
                if outlet is not None and outlet.backed_up():
                    if not self._sending:  # else the handler's own wait is on it
                        try:
                            await wait_writable(outlet, self.stall_s)
                        except ViewerStalled:
                            self._abort()
                            self.end()
                            return
                elif not self._sending:
                    await send(_PING)
                self._last_send = loop.time()
                continue
            try:
                async with asyncio.timeout_at(due):
                    message = await receive()
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                self.end()
                return
