"""The SSE route's own response (`wire.sse_response.SSEResponse`): what goes on the wire, the heartbeat, and how a
stream ends when the viewer leaves or the server shuts down.

Wire tests read the raw HTTP response over a plain socket (parsed with h11, so every chunk the gateway wrote is seen as
written) from real uvicorn: in-process (`running_stack`, hub read path, real redis-server) or a real `runcast gateway`
process for the signal. Unit tests drive the ASGI callable directly with scripted `receive`/`send`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import h11
import pytest
from redis.asyncio import Redis

from runcast.gateway.hub.subscriber import Subscriber
from runcast.gateway.wire.sse_response import PING_FRAME, OpenStreams, SSEResponse
from runcast.shared.keys import events_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from tests.support.hub import eventually, hub_metric, new_run, publish
from tests.support.processes import TEST_SECRET, GatewayProcess
from tests.support.stack import running_stack

RETRY_FIELD = b"retry: 1000\n"
"""Prefixed to the first event frame (never a data-less frame of its own)."""
SUBSCRIBERS = "runcast_hub_subscribers"


class RawStream:
    """One `GET /v1/runs/{id}/events` over a plain socket: the status, the headers, and every body chunk as written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.chunks: list[bytes] = []
        self.ended = False  # the final (empty) chunk arrived: the body ended cleanly
        self._partial = b""

    @classmethod
    async def open(cls, base_url: str, run_id: str, last_event_id: str | None = None) -> RawStream:
        url = urlsplit(base_url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        stream = cls(reader, writer)
        token = issue_token(TEST_SECRET.encode(), run_id, 3600)
        headers = [("host", url.netloc), ("accept", "text/event-stream")]
        if last_event_id is not None:
            headers.append(("last-event-id", last_event_id))
        request = h11.Request(method="GET", target=f"/v1/runs/{run_id}/events?token={token}", headers=headers)
        writer.write(stream.conn.send(request) + stream.conn.send(h11.EndOfMessage()))
        while not stream.status:
            await stream._step(10)
        return stream

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    async def _step(self, within_s: float) -> None:
        event = self.conn.next_event()
        while event is h11.NEED_DATA:
            data = await asyncio.wait_for(self.reader.read(65536), within_s)
            self.conn.receive_data(data)
            event = self.conn.next_event()
        if isinstance(event, h11.Response):
            self.status = event.status_code
            self.headers = {name: value for name, value in event.headers}
        elif isinstance(event, h11.Data):
            self._partial += bytes(event.data)
            if event.chunk_end:
                self.chunks.append(self._partial)
                self._partial = b""
        elif isinstance(event, h11.EndOfMessage):
            self.ended = True
        elif isinstance(event, h11.ConnectionClosed):
            raise ConnectionError("closed before the end of the body")

    async def read_until(self, done: object, within_s: float = 10.0) -> None:
        """Read chunks until `done(self)` is true (or the body ends)."""
        deadline = asyncio.get_running_loop().time() + within_s
        while not done(self) and not self.ended:  # type: ignore[operator]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"waited {within_s} s; body so far: {self.body!r}")
            await self._step(remaining)

    async def read_to_end(self, within_s: float = 10.0) -> None:
        await self.read_until(lambda s: s.ended, within_s)

    def close(self) -> None:
        self.writer.close()


def expected_frames(raw: list[tuple[str, dict[str, str]]]) -> bytes:
    """SPEC §6 by hand: `id`, `event`, `data` lines, a blank line after each event."""
    return b"".join(
        f"id: {entry_id}\nevent: {fields['type']}\ndata: {fields['event']}\n\n".encode() for entry_id, fields in raw
    )


@pytest.fixture
async def redis(real_redis_url: str) -> AsyncIterator[Redis]:
    client = redis_from_url(real_redis_url)
    yield client
    await client.aclose()


# -- on the wire (in-process uvicorn, hub read path, real Redis) -----------------------------------------------------


async def test_the_wire_carries_exactly_each_batch_of_frames_with_retry_in_the_first_then_a_clean_end(
    real_redis_url: str,
):
    async with running_stack(real_redis_url, worker=False, sse_ping_s=60) as stack:
        log = StreamLog(stack.redis)
        run_id = await new_run(log)
        early = await publish(log, run_id, 3, end=False)
        stream = await RawStream.open(stack.url, run_id)
        try:
            await stream.read_until(lambda s: len(s.chunks) >= 1)  # the backlog
            await eventually(lambda: hub_metric(SUBSCRIBERS) >= 1, what="the viewer to subscribe")
            late = await publish(log, run_id, 3, pause_s=0.05)
            await stream.read_to_end()
        finally:
            stream.close()
        raw = await stack.redis.xrange(events_key(run_id))

    assert stream.status == 200
    assert stream.headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert stream.headers[b"cache-control"] == b"no-cache"
    assert stream.headers[b"x-accel-buffering"] == b"no"
    assert stream.headers[b"connection"] == b"keep-alive"
    assert [entry_id for entry_id, _ in raw] == early + late
    assert stream.body == RETRY_FIELD + expected_frames(raw), "the body is exactly the frames, nothing else"
    assert stream.chunks[0] == RETRY_FIELD + expected_frames(raw[:3]), "the backlog is one write, retry: in front"
    for chunk in stream.chunks:  # never a frame split over two writes
        assert chunk.endswith(b"\n\n") and not chunk.startswith(b"\n")
    assert stream.ended, "the body ends with the final empty chunk after the terminal event"


async def test_an_idle_stream_gets_a_ping_comment_every_ping_period_and_nothing_else(real_redis_url: str):
    async with running_stack(real_redis_url, worker=False, sse_ping_s=0.3) as stack:
        run_id = await new_run(StreamLog(stack.redis))
        stream = await RawStream.open(stack.url, run_id)
        started = time.monotonic()
        try:
            await stream.read_until(lambda s: s.chunks.count(PING_FRAME) >= 3, within_s=10)
        finally:
            stream.close()
    elapsed = time.monotonic() - started
    assert PING_FRAME == b": ping\n\n"
    assert stream.chunks == [PING_FRAME, PING_FRAME, PING_FRAME], "no data-less retry frame of its own"
    assert elapsed >= 0.8, f"three pings came in {elapsed:.2f} s: faster than one per 0.3 s"


async def test_a_viewer_that_disconnects_is_unsubscribed_at_once_not_at_the_next_ping(real_redis_url: str):
    async with running_stack(real_redis_url, worker=False, sse_ping_s=300) as stack:
        run_id = await new_run(StreamLog(stack.redis))
        before = hub_metric(SUBSCRIBERS)
        streams = [await RawStream.open(stack.url, run_id) for _ in range(5)]
        await eventually(lambda: hub_metric(SUBSCRIBERS) == before + 5, what="five subscribers")
        for stream in streams[:3]:
            stream.close()
        await eventually(lambda: hub_metric(SUBSCRIBERS) == before + 2, within_s=3, what="three unsubscribed")
        for stream in streams[3:]:
            stream.close()
        await eventually(lambda: hub_metric(SUBSCRIBERS) == before, within_s=3, what="all unsubscribed")
        await eventually(lambda: hub_metric("runcast_hub_runs_followed") == 0, within_s=3, what="the run unfollowed")


async def test_sigterm_ends_open_streams_cleanly_and_the_gateway_exits_promptly(real_redis_url: str, redis: Redis):
    log = StreamLog(redis)
    run_id = await new_run(log)
    ids = await publish(log, run_id, 2, end=False)
    gateway = GatewayProcess(real_redis_url, RUNCAST_SSE_PING_S="300").start()
    streams: list[RawStream] = []
    try:
        streams = [await RawStream.open(gateway.url, run_id) for _ in range(3)]
        for stream in streams:
            await stream.read_until(lambda s: len(s.chunks) >= 1)  # the backlog (retry: in front)
        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        await asyncio.gather(*(stream.read_to_end(within_s=5) for stream in streams))
        ended_after = time.monotonic() - signalled
        code = await asyncio.to_thread(gateway.wait, 10)
        exited_after = time.monotonic() - signalled
    finally:
        for stream in streams:
            stream.close()
        gateway.stop()
    raw = await redis.xrange(events_key(run_id))
    for stream in streams:
        assert stream.ended, "each stream got the final chunk: a clean end the client reconnects after"
        assert stream.body == RETRY_FIELD + expected_frames(raw) and len(raw) == len(ids)
    assert ended_after < 3, f"streams ended {ended_after:.2f} s after SIGTERM"
    # uvicorn re-raises the signal it caught once its graceful shutdown is done: -SIGTERM is a clean exit here
    assert code in (0, -signal.SIGTERM), f"gateway exit code {code}; log:\n{gateway.log()}"
    assert exited_after < 5, f"gateway exited {exited_after:.2f} s after SIGTERM"


# -- the ASGI callable itself ----------------------------------------------------------------------------------------


class FakeClient:
    """Scripted ASGI `receive`/`send`: records every message; `leave()` makes `receive` report `http.disconnect`."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.sent_event = asyncio.Event()
        self._gone = asyncio.Event()
        self._requested = False

    async def receive(self) -> dict:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        self.sent_event.set()

    def leave(self) -> None:
        self._gone.set()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]

    async def wait_sent(self, count: int, within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while len(self.sent) < count:
                self.sent_event.clear()
                await self.sent_event.wait()


class Frames:
    """An async iterator of frames fed by the test; notes whether it was closed (the hub's unsubscribe)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False

    async def gen(self) -> AsyncIterator[bytes]:
        try:
            while (frame := await self.queue.get()) is not None:
                yield frame
        finally:
            self.closed = True


SCOPE = {"type": "http", "method": "GET", "path": "/"}


async def test_each_frame_is_one_body_message_and_the_end_is_one_empty_final_message():
    frames, client = Frames(), FakeClient()
    for frame in (b"id: 1-0\ndata: a\n\n", b"id: 2-0\ndata: b\n\nid: 3-0\ndata: c\n\n", None):
        frames.queue.put_nowait(frame)
    await SSEResponse(frames.gen(), ping_s=60)(SCOPE, client.receive, client.send)
    assert client.sent[0]["type"] == "http.response.start" and client.sent[0]["status"] == 200
    assert [(m["body"], m["more_body"]) for m in client.sent[1:]] == [
        (RETRY_FIELD + b"id: 1-0\ndata: a\n\n", True),
        (b"id: 2-0\ndata: b\n\nid: 3-0\ndata: c\n\n", True),
        (b"", False),
    ]
    assert frames.closed


async def test_no_ping_while_frames_flow_faster_than_the_ping_period():
    frames, client = Frames(), FakeClient()
    task = asyncio.create_task(SSEResponse(frames.gen(), ping_s=0.5)(SCOPE, client.receive, client.send))
    for i in range(12):  # a frame every 0.1 s for 1.2 s: more than two ping periods, never 0.5 s quiet
        frames.queue.put_nowait(b"data: %d\n\n" % i)
        await asyncio.sleep(0.1)
    frames.queue.put_nowait(None)
    await asyncio.wait_for(task, 5)
    assert PING_FRAME not in client.bodies


async def test_a_disconnect_closes_the_frames_and_returns_while_the_feed_is_waiting():
    frames, client = Frames(), FakeClient()
    task = asyncio.create_task(SSEResponse(frames.gen(), ping_s=300)(SCOPE, client.receive, client.send))
    frames.queue.put_nowait(b"data: x\n\n")
    await client.wait_sent(2)  # start, then the frame (retry: rides on it)
    client.leave()
    await asyncio.wait_for(task, 2)  # returned without an error, well before the 300 s ping
    assert frames.closed, "the iterator was closed: the hub unsubscribes"


async def open_responses(
    count: int, streams: OpenStreams
) -> tuple[list[Frames], list[FakeClient], list[asyncio.Task[None]]]:
    """`count` SSE responses registered with `streams`, each started and waiting in its frames loop."""
    feeds, clients = [Frames() for _ in range(count)], [FakeClient() for _ in range(count)]
    handlers = [
        asyncio.create_task(SSEResponse(f.gen(), ping_s=300, streams=streams)(SCOPE, c.receive, c.send))
        for f, c in zip(feeds, clients, strict=True)
    ]
    for client in clients:
        await client.wait_sent(1)  # the response has started
        await asyncio.sleep(0.01)  # ...and reached its frames loop
    return feeds, clients, handlers


async def test_each_connection_costs_its_own_task_plus_one_helper_and_leaves_none_behind():
    streams = OpenStreams(shutdown_requested=lambda: False)
    baseline = len(asyncio.all_tasks())
    feeds, clients, handlers = await open_responses(20, streams)
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) - baseline == 2 * 20 + 1, "handler + one helper each, one shutdown watcher"
    assert len(streams) == 20
    for client in clients:
        client.leave()
    await asyncio.wait_for(asyncio.gather(*handlers), 5)
    await asyncio.sleep(0.3)  # the watcher notices there is nothing left to watch
    assert len(asyncio.all_tasks()) == baseline
    assert len(streams) == 0 and all(f.closed for f in feeds)


async def test_close_all_ends_every_open_stream_with_a_clean_end_and_refuses_to_stream_new_ones():
    streams = OpenStreams(shutdown_requested=lambda: False)
    feeds, clients, handlers = await open_responses(3, streams)
    streams.close_all()
    await asyncio.wait_for(asyncio.gather(*handlers), 2)
    for feed, client in zip(feeds, clients, strict=True):
        assert feed.closed
        assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    late, client = Frames(), FakeClient()
    late.queue.put_nowait(b"data: never\n\n")
    await asyncio.wait_for(SSEResponse(late.gen(), streams=streams)(SCOPE, client.receive, client.send), 2)
    assert client.bodies == [b""], "a stream opened during shutdown ends at once"


async def test_the_shutdown_watcher_ends_streams_once_shutdown_is_requested():
    requested = False
    streams = OpenStreams(shutdown_requested=lambda: requested, poll_s=0.05)
    frames, client = Frames(), FakeClient()
    task = asyncio.create_task(
        SSEResponse(frames.gen(), ping_s=300, streams=streams)(SCOPE, client.receive, client.send)
    )
    await client.wait_sent(1)  # the response has started
    await asyncio.sleep(0.01)  # ...and reached its frames loop
    await asyncio.sleep(0.2)
    assert not task.done()
    requested = True
    await asyncio.wait_for(task, 2)
    assert frames.closed and client.bodies[-1] == b""


async def test_a_cancellation_from_outside_still_propagates_and_closes_the_frames():
    streams = OpenStreams(shutdown_requested=lambda: False)
    frames, client = Frames(), FakeClient()
    task = asyncio.create_task(
        SSEResponse(frames.gen(), ping_s=300, streams=streams)(SCOPE, client.receive, client.send)
    )
    await client.wait_sent(1)  # the response has started
    await asyncio.sleep(0.01)  # ...and reached its frames loop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert frames.closed and len(streams) == 0


# -- the hub subscriber's wake-up (a bare future instead of an asyncio.Event) ----------------------------------------


async def test_a_subscriber_woken_before_it_waits_returns_at_once_then_waits_again():
    sub = Subscriber(max_queue=8)
    sub.wake()
    await asyncio.wait_for(sub.wait(), 0.5)  # the earlier wake is not lost
    waiting = asyncio.create_task(sub.wait())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "one wake, one return: the second wait blocks"
    sub.offer([])
    await asyncio.wait_for(waiting, 0.5)


async def test_wakes_while_a_subscriber_is_being_resumed_do_not_make_a_spurious_wake_later():
    sub = Subscriber(max_queue=8)
    waiting = asyncio.create_task(sub.wait())
    await asyncio.sleep(0)
    sub.wake()
    sub.wake()  # before the waiting task ran: folded into the first, as Event.set would
    await asyncio.wait_for(waiting, 0.5)
    again = asyncio.create_task(sub.wait())
    await asyncio.sleep(0.05)
    assert not again.done()
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    sub.wake()  # a cancelled wait leaves no stale waiter behind: this wake is kept for the next wait
    await asyncio.wait_for(sub.wait(), 0.5)
