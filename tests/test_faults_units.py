"""The exactly-once pieces in isolation, on the real Redis: idempotent worker appends through a lost reply,
the lost-run sweep racing itself, and the job refusing to run a run twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from runcast.gateway.hub.feed import DirectFeed
from runcast.gateway.sweeper import LostRunSweeper
from runcast.shared.ids import new_run_id
from runcast.shared.keys import heartbeat_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.resilience import RUNNING_KEY
from runcast.shared.settings import Settings
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.shared.streamlog import Entry, Reset, StreamLog
from runcast.worker.durable import DurableStreamLog
from runcast.worker.heartbeat import run_heartbeat
from runcast.worker.job import run_agent
from runcast.worker.settings import build_state
from tests.support.faults import wait_until
from tests.support.redis_server import RedisServer
from tests.support.requirements import require_redis_server


@pytest.fixture
async def redis(redis_url: str | None) -> AsyncIterator[Redis]:
    if redis_url is None:
        require_redis_server()
    client = redis_from_url(redis_url)
    yield client
    await client.aclose()


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


def start(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "scripted", 0, 0, 0.0), run_id=run_id)


class FlakyScript:
    """Wraps the append script: on chosen calls the connection 'drops' before or after Redis ran the script."""

    def __init__(self, script: Any, fail: dict[int, str]) -> None:
        self.script, self.fail, self.calls = script, fail, 0

    async def __call__(self, **kwargs: Any) -> Any:
        self.calls += 1
        mode = self.fail.get(self.calls)
        if mode == "before":
            raise RedisConnectionError("connection lost before the reply (script not run)")
        result = await self.script(**kwargs)
        if mode == "after":
            raise RedisConnectionError("connection lost before the reply (script ran)")
        return result


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_durable_append_retried_after_a_lost_reply_publishes_the_event_exactly_once(redis: Redis, mode: str):
    log = DurableStreamLog(redis, retry_s=5)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    await log.append(run_id, start(run_id))
    log._append = FlakyScript(log._append, {1: mode})  # type: ignore[assignment]

    first = chunk(run_id, 1)
    entry_id = await log.append(run_id, first)
    await log.append(run_id, chunk(run_id, 2))

    entries = await log.read_all(run_id)
    assert [e.type for e in entries] == ["start", "chunk", "chunk"]
    assert entries[1].id == entry_id
    assert entries[1].event == first.to_json()


async def test_racing_sweepers_end_a_lost_run_exactly_once(redis: Redis):
    log = StreamLog(redis)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    await log.append(run_id, start(run_id))
    await redis.zadd(RUNNING_KEY, {run_id: 1})  # claimed, and its heartbeat key has already expired

    sweepers = [LostRunSweeper(log, interval_s=1) for _ in range(5)]
    ended = await asyncio.gather(*(s.sweep_once() for s in sweepers))

    assert sum(run_id in e for e in ended) == 1
    entries = await log.read_all(run_id)
    assert [e.type for e in entries] == ["start", "error"]
    assert '"worker_lost"' in entries[-1].event
    assert (await log.get_meta(run_id))["status"] == "failed"
    assert await redis.zscore(RUNNING_KEY, run_id) is None


async def test_sweeper_leaves_a_beating_run_alone(redis: Redis):
    log = StreamLog(redis)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    async with run_heartbeat(log, run_id, lost_s=0.3):
        await log.append(run_id, start(run_id))
        await asyncio.sleep(0.6)  # twice the TTL: only the refresh keeps it alive
        assert run_id not in await LostRunSweeper(log, interval_s=1).sweep_once()
        assert await redis.exists(heartbeat_key(run_id))
    assert (await log.get_meta(run_id))["status"] == "running"
    assert not await redis.exists(heartbeat_key(run_id))


async def test_the_job_refuses_to_run_a_run_that_already_started(redis: Redis, redis_url: str):
    """arq re-runs a job whose worker died or was stopped: the run's stream is half published, so the retry must
    not run the agent again on top of it (the lost-run sweep ends it instead)."""
    state = await build_state(Settings(redis_url=redis_url, scripted_delay_ms=0), redis)
    run_id = new_run_id()
    await state.stream_log.create_run(run_id, "echo", "one two")
    await state.stream_log.append(run_id, start(run_id))  # a previous try got this far

    assert await run_agent({"runcast": state}, run_id) == "running"
    assert [e.type for e in await state.stream_log.read_all(run_id)] == ["start"]


async def test_cancelling_a_job_ends_its_run_with_worker_shutdown(redis: Redis, redis_url: str):
    state = await build_state(Settings(redis_url=redis_url, scripted_delay_ms=50), redis)
    run_id = new_run_id()
    await state.stream_log.create_run(run_id, "echo", " ".join(["w"] * 100))
    job = asyncio.create_task(run_agent({"runcast": state}, run_id))
    await state.stream_log.tail(run_id, "0-0", block_ms=5000)  # the run has started publishing
    await asyncio.sleep(0.1)
    job.cancel()  # what arq does to running jobs after job_completion_wait on SIGTERM
    with pytest.raises(asyncio.CancelledError):
        await job
    entries = await state.stream_log.read_all(run_id)
    assert entries[-1].type == "error" and '"worker_shutdown"' in entries[-1].event
    assert (await state.stream_log.get_meta(run_id))["status"] == "failed"
    assert not await redis.exists(heartbeat_key(run_id))


async def collect(feed: DirectFeed, run_id: str, into: list[Entry]) -> None:
    async for batch in feed.subscribe(run_id, "0-0"):
        assert not isinstance(batch, Reset)
        into.extend(batch)


async def test_direct_feed_rides_through_killed_connections_from_its_last_id(
    redis: Redis, caplog: pytest.LogCaptureFixture
):
    log = StreamLog(redis)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    await log.append(run_id, start(run_id))
    feed = DirectFeed(StreamLog(redis_from_url(log_url(redis), client_name="feed")), block_ms=10_000, retry_s=5)
    got: list[Entry] = []
    reader = asyncio.create_task(collect(feed, run_id, got))
    for n in range(1, 4):
        await log.append(run_id, chunk(run_id, n))
    await wait_until(lambda: len(got) >= 4, 5, "the feed to deliver the first entries")
    killed = 0
    for client in await redis.client_list():  # the feed's connection, blocked in XREAD
        if client.get("name") == "feed":
            killed += await redis.client_kill_filter(_id=client["id"])
    for n in range(4, 7):
        await log.append(run_id, chunk(run_id, n))
    await log.append(run_id, StreamingEvent(StreamingEventType.COMPLETE, {"content": ""}, run_id=run_id))
    await asyncio.wait_for(reader, 10)
    await feed.stream_log.redis.aclose()

    assert killed >= 1
    assert any("redis unavailable" in r.getMessage() for r in caplog.records), "the retry path was not exercised"
    assert got == await log.read_all(run_id)


async def test_direct_feed_gives_up_after_retry_s_so_the_viewer_can_resume_elsewhere():
    require_redis_server()
    server = RedisServer().start()
    client = redis_from_url(server.url)
    try:
        log = StreamLog(client)
        run_id = new_run_id()
        await log.create_run(run_id, "echo", "x")
        await log.append(run_id, start(run_id))
        got: list[Entry] = []
        reader = asyncio.create_task(collect(DirectFeed(log, block_ms=200, retry_s=0.5), run_id, got))
        await wait_until(lambda: bool(got), 5, "the first entry")
        server.stop()
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(reader, 10)
        assert [e.type for e in got] == ["start"]
    finally:
        await client.aclose()
        server.cleanup()


def log_url(redis: Redis) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
