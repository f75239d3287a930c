"""The SSE route's own response (`wire.sse_response.SSEResponse`): what goes on the wire, the heartbeat, and how a
stream ends when the viewer leaves or the server shuts down.

These tests read the raw HTTP response over a plain socket (parsed with h11, so every chunk the gateway wrote is seen as
written) from real uvicorn: in-process (`running_stack`, hub read path, real redis-server) or a real `runcast gateway`
process for the signal. The ASGI callable driven directly: tests/test_sse_response_units.py.
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

from runcast.gateway.wire.sse_response import PING_FRAME
from runcast.shared.keys import events_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from tests.support.hub import RETRY_FIELD, eventually, hub_metric, new_run, publish
from tests.support.processes import TEST_SECRET, GatewayProcess
from tests.support.stack import running_stack

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
