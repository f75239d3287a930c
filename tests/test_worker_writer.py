"""The worker's per-process services on a real Redis: one append writer for all runs (batches, lost replies,
severed connections, conflicts, refusal after the end), the cancel watch and the shared heartbeats."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from runcast.shared.append import IdClock
from runcast.shared.ids import entry_key, new_run_id
from runcast.shared.keys import heartbeat_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.resilience import RUNNING_KEY
from runcast.shared.settings import Settings
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.shared.streamlog import RunEnded, StreamLog
from runcast.worker.agents import default_registry
from runcast.worker.batcher import CommandBatcher
from runcast.worker.durable import DurableStreamLog
from runcast.worker.heartbeat import Heartbeats
from runcast.worker.job import WorkerState, run_agent
from runcast.worker.providers.scripted import ScriptedProvider
from runcast.worker.watch import EndWatch
from runcast.worker.writer import AppendWriter
from tests.support.faults import assert_clean_run, stored_log, words
from tests.support.proxy import SeveringProxy


def start(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "scripted"), run_id=run_id)


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


async def new_runs(log: StreamLog, count: int) -> list[str]:
    run_ids = [new_run_id() for _ in range(count)]
    for run_id in run_ids:
        await log.create_run(run_id, "echo", "x")
    return run_ids


class LoseReplies:
    """Wraps `append_runs`: on the chosen calls the connection 'drops' before or after Redis ran the call."""

    def __init__(self, log: StreamLog, fail: dict[int, str]) -> None:
        self.real, self.fail, self.calls = log.append_runs, fail, 0
        log.append_runs = self  # type: ignore[method-assign]

    async def __call__(self, appends: Any) -> Any:
        self.calls += 1
        mode = self.fail.get(self.calls)
        if mode == "before":
            raise RedisConnectionError("connection lost before the call reached Redis")
        replies = await self.real(appends)
        if mode == "after":
            raise RedisConnectionError("connection lost before the reply (the call ran)")
        return replies


async def test_one_call_carries_the_events_of_every_run_ready_in_the_same_tick(redis: Redis):
    log = DurableStreamLog(redis, retry_s=5)
    run_ids = await new_runs(log, 30)
    writer = AppendWriter(log)
    channels = [writer.open(run_id) for run_id in run_ids]
    for run_id, channel in zip(run_ids, channels, strict=True):
        channel.put([start(run_id), chunk(run_id, 1)])
    last_ids = await asyncio.gather(*(channel.flush() for channel in channels))
    assert writer.calls == 1
    for run_id, last_id in zip(run_ids, last_ids, strict=True):
        entries = await log.read_all(run_id)
        assert [e.type for e in entries] == ["start", "chunk"] and entries[-1].id == last_id
    for channel in channels:
        channel.close()


@pytest.mark.parametrize("mode", ["before", "after"])
async def test_a_many_run_batch_whose_reply_is_lost_is_resent_without_duplicates(redis: Redis, mode: str):
    log = DurableStreamLog(redis, retry_s=5)
    run_ids = await new_runs(log, 10)
    flaky = LoseReplies(log, {2: mode})
    writer = AppendWriter(log)
    channels = [writer.open(run_id) for run_id in run_ids]
    for run_id, channel in zip(run_ids, channels, strict=True):
        channel.put([start(run_id)])
    await asyncio.gather(*(channel.flush() for channel in channels))
    for run_id, channel in zip(run_ids, channels, strict=True):
        channel.put([chunk(run_id, 1), chunk(run_id, 2)])  # the call that loses its reply
    await asyncio.gather(*(channel.flush() for channel in channels))
    for run_id, channel in zip(run_ids, channels, strict=True):
        channel.put([chunk(run_id, 3)])
        await channel.flush()
        channel.close()
    assert flaky.calls >= 3 and writer.resends == 1
    for run_id in run_ids:
        entries = await log.read_all(run_id)
        assert [e.type for e in entries] == ["start", "chunk", "chunk", "chunk"]
        assert [StreamingEvent.from_json(e.event).data.token_count for e in entries[1:]] == [1, 2, 3]


async def test_severed_redis_connections_while_many_runs_stream_duplicate_and_lose_nothing(real_redis_url: str):
    port = int(real_redis_url.rsplit(":", 1)[1].split("/")[0])
    async with SeveringProxy(port) as proxy:
        redis = redis_from_url(f"redis://127.0.0.1:{proxy.port}/0")
        log = DurableStreamLog(redis, retry_s=20)
        settings = Settings(worker_write_interval_ms=0)
        state = WorkerState(log, default_registry, ScriptedProvider(delay_ms=5), settings=settings)
        text = words(60)
        run_ids = await new_runs(log, 25)
        for run_id in run_ids:
            await redis.hset(f"runcast:{{{run_id}}}:meta", "input", text)
        jobs = [asyncio.create_task(run_agent({"runcast": state}, run_id)) for run_id in run_ids]
        for _ in range(8):  # cut every connection (the writer's among them) while the runs stream
            await asyncio.sleep(0.04)
            proxy.sever()
        results = await asyncio.wait_for(asyncio.gather(*jobs), 60)
        await state.runs.aclose()
        await redis.aclose()
    assert results == ["completed"] * len(run_ids)
    assert state.runs.writer.resends > 0, "no append call was interrupted: the test did not exercise the resend"
    for run_id in run_ids:
        assert_clean_run(await stored_log(real_redis_url, run_id), text)


async def test_a_run_ended_from_outside_refuses_further_events_and_ends_its_channel(redis: Redis):
    log = DurableStreamLog(redis, retry_s=5)
    (run_id,) = await new_runs(log, 1)
    writer = AppendWriter(log)
    channel = writer.open(run_id)
    channel.put([start(run_id)])
    await channel.flush()
    await StreamLog(redis).end_run(run_id, "cancelled", "by a client")
    channel.put([chunk(run_id, 1)])
    with pytest.raises(RunEnded):
        await channel.flush()
    assert channel.ended.done()
    with pytest.raises(RunEnded):
        channel.put([chunk(run_id, 2)])
    assert [e.type for e in await log.read_all(run_id)] == ["start", "error"]
    channel.close()


async def test_events_behind_a_foreign_entry_are_renumbered_after_it_not_lost(redis: Redis):
    log = DurableStreamLog(redis, retry_s=5)
    (run_id,) = await new_runs(log, 1)
    foreign = await StreamLog(redis).append_many(run_id, [start(run_id)])  # Redis's clock
    writer = AppendWriter(log)
    writer.ids = IdClock(clock=lambda: 1.0)  # this worker's clock is far behind Redis's
    channel = writer.open(run_id)
    channel.put([chunk(run_id, 1), chunk(run_id, 2)])
    last = await channel.flush()
    entries = await log.read_all(run_id)
    assert [e.type for e in entries] == ["start", "chunk", "chunk"] and entries[-1].id == last
    assert entry_key(entries[1].id) > entry_key(foreign)
    channel.close()


async def test_per_run_order_holds_while_events_keep_arriving_during_calls(redis: Redis):
    log = DurableStreamLog(redis, retry_s=5)
    run_ids = await new_runs(log, 5)
    writer = AppendWriter(log, interval_s=0.002)
    channels = [writer.open(run_id) for run_id in run_ids]
    for n in range(1, 41):
        for run_id, channel in zip(run_ids, channels, strict=True):
            channel.put([chunk(run_id, n)])
        if n % 7 == 0:
            await asyncio.sleep(0.003)
    await asyncio.gather(*(channel.flush() for channel in channels))
    assert 1 < writer.calls < 40  # batched across runs and ticks
    for run_id in run_ids:
        entries = await log.read_all(run_id)
        assert [StreamingEvent.from_json(e.event).data.token_count for e in entries] == list(range(1, 41))


async def test_the_watch_reads_the_status_of_quiet_runs_only_and_ends_those_cancelled(redis: Redis):
    log = StreamLog(redis)
    quiet_id, busy_id = await new_runs(log, 2)
    writer = AppendWriter(log)
    quiet, busy = writer.open(quiet_id), writer.open(busy_id)
    for run_id, channel in ((quiet_id, quiet), (busy_id, busy)):
        channel.put([start(run_id)])
        await channel.flush()
    watch = EndWatch(redis, every_s=0.05)
    watch.channels = {quiet_id: quiet, busy_id: busy}  # watched, without the background task
    await log.end_run(quiet_id, "cancelled", "by a client")
    await asyncio.sleep(0.06)
    busy.put([chunk(busy_id, 1)])
    await busy.flush()  # a reply just now: the busy run is not polled
    assert await watch.check_once() == [quiet_id]
    assert watch.checks == 1 and quiet.ended.done() and not busy.ended.done()
    quiet.close()
    busy.close()


async def test_heartbeats_of_all_runs_share_one_round_trip_and_keep_beating(redis: Redis):
    batcher = CommandBatcher(redis)
    beats = Heartbeats(redis, lost_s=0.3, batcher=batcher)
    run_ids = [new_run_id() for _ in range(20)]
    await asyncio.gather(*(beats.add(run_id) for run_id in run_ids))
    assert batcher.pipelines == 1
    await asyncio.sleep(0.7)  # over twice the TTL: only the shared refresh keeps the keys
    assert all([await redis.exists(heartbeat_key(run_id)) for run_id in run_ids])
    assert set(await redis.zrange(RUNNING_KEY, 0, -1)) >= set(run_ids)
    await asyncio.gather(*(beats.remove(run_id) for run_id in run_ids))
    assert not any([await redis.exists(heartbeat_key(run_id)) for run_id in run_ids])
    assert not set(await redis.zrange(RUNNING_KEY, 0, -1)) & set(run_ids)
    await beats.aclose()


async def test_the_batcher_returns_each_callers_replies_and_its_errors(redis: Redis):
    batcher = CommandBatcher(redis)
    await redis.set("batcher:k", "v")
    ok, wrong = await asyncio.gather(
        batcher.run(lambda pipe: (pipe.get("batcher:k"), pipe.exists("batcher:k"))),
        batcher.run(lambda pipe: pipe.hgetall("batcher:k")),  # WRONGTYPE
        return_exceptions=True,
    )
    assert ok == ["v", 1] and isinstance(wrong, Exception)
    assert batcher.pipelines == 1
