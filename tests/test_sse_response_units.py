"""`wire.sse_response.SSEResponse` as an ASGI callable, driven directly with scripted `receive`/`send`: one body
message per frame, pings only when idle, disconnects, shutdown of every open stream, cancellation, the subscriber's
wake-ups. (What goes on the wire from real uvicorn: tests/test_sse_response.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from runcast.gateway.hub.subscriber import Subscriber
from runcast.gateway.wire.sse_response import PING_FRAME, OpenStreams, SSEResponse
from tests.support.hub import RETRY_FIELD


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
