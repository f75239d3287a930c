"""StreamLog and DirectFeed on a real 3-master Redis Cluster: every operation a run needs works with the run's keys on
whichever node its slot lives on. Needs redis-server + redis-cli (a real cluster; never faked)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import RedisCluster
from redis.crc import key_slot

from runcast.gateway.hub.feed import DirectFeed
from runcast.shared.ids import START_ID, new_run_id
from runcast.shared.keys import AGENTS_KEY, events_key, meta_key
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.shared.streamlog import Entry, Reset, RunEnded, StreamLog

RUNS = 12


def chunk(run_id: str, text: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(text, text, False, n), run_id=run_id)


def start(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "scripted"), run_id=run_id)


def complete(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.COMPLETE, StreamingMetadata("echo", "scripted"), run_id=run_id)


async def spread_runs(client: RedisCluster, count: int) -> list[str]:
    """`count` fresh run ids on at least two different masters (so the test means something): random ids all land on
    one of three masters now and then, so the last id is drawn until it lands elsewhere."""
    run_ids = [new_run_id() for _ in range(count)]
    first = client.get_node_from_key(events_key(run_ids[0])).name
    while all(client.get_node_from_key(events_key(run_id)).name == first for run_id in run_ids):
        run_ids[-1] = new_run_id()
    return run_ids


async def test_a_runs_keys_share_one_slot_and_runs_spread_over_the_masters(cluster_client: RedisCluster):
    run_ids = [new_run_id() for _ in range(60)]
    for run_id in run_ids[:5]:  # the server agrees with the client-side CRC16
        slot = await cluster_client.cluster_keyslot(events_key(run_id))
        assert slot == key_slot(events_key(run_id).encode()) == key_slot(meta_key(run_id).encode())
    masters = {node.name for node in cluster_client.get_primaries()}
    assert len(masters) == 3
    used = {cluster_client.get_node_from_key(events_key(run_id)).name for run_id in run_ids}
    assert used == masters  # 60 random runs on 3 masters: every master serves some (miss odds ~3e-11)


async def test_create_append_read_end_on_runs_across_nodes(cluster_client: RedisCluster):
    log = StreamLog(cluster_client, maxlen=10_000, retention_s=600)
    run_ids = await spread_runs(cluster_client, RUNS)
    for run_id in run_ids:
        await log.create_run(run_id, "echo", "a b c", {"k": "v"})
    ids: dict[str, list[str]] = {}
    for run_id in run_ids:
        await log.append(run_id, start(run_id))
        await log.append_many(run_id, [chunk(run_id, w, i) for i, w in enumerate(["a", " b", " c"], 1)])
        ids[run_id] = [entry.id for entry in await log.read_all(run_id)]
    for run_id in run_ids:
        assert len(ids[run_id]) == 4
        meta = await log.get_meta(run_id)
        assert meta is not None and meta["status"] == "running" and meta["last_event_id"] == ids[run_id][-1]
        after = await log.read_after(run_id, ids[run_id][1])
        assert [entry.id for entry in after] == ids[run_id][2:]
        assert [entry.type for entry in after] == ["chunk", "chunk"]
        end_id = await log.end_run(run_id, "cancelled", "test")
        assert end_id is not None
        assert await log.end_run(run_id, "worker_lost", "second try") is None  # exactly once, on every node
        with pytest.raises(RunEnded):
            await log.append(run_id, chunk(run_id, "late", 9))
        meta = await log.get_meta(run_id)
        assert meta is not None and meta["status"] == "cancelled" and meta["last_event_id"] == end_id
        assert 0 < await cluster_client.ttl(events_key(run_id)) <= 600
        assert 0 < await cluster_client.ttl(meta_key(run_id)) <= 600


async def test_create_run_sets_the_meta_and_its_ttl_in_one_step(cluster_client: RedisCluster):
    log = StreamLog(cluster_client, retention_s=321)
    run_id = new_run_id()
    await log.create_run(run_id, "demo", "2+2", None)
    meta = await log.get_meta(run_id)
    assert meta is not None
    assert (meta["agent"], meta["status"], meta["input"], meta["metadata"]) == ("demo", "queued", "2+2", "{}")
    assert 0 < await cluster_client.ttl(meta_key(run_id)) <= 321


async def test_check_gap_sees_trimming_through_xinfo_on_the_runs_node(cluster_client: RedisCluster):
    log = StreamLog(cluster_client, maxlen=10, retention_s=600)
    for run_id in await spread_runs(cluster_client, 6):
        await log.create_run(run_id, "echo", "x")
        await log.append(run_id, start(run_id))
        kept_whole = await log.check_gap(run_id, START_ID)
        assert kept_whole is None
        for base in range(0, 300, 50):  # MAXLEN ~ trims whole macro nodes: write enough to drop some
            await log.append_many(run_id, [chunk(run_id, "t", base + i) for i in range(50)])
        first = (await log.read_all(run_id))[0].id
        reset = await log.check_gap(run_id, START_ID)
        assert reset == Reset(requested=START_ID, first_available=first)


async def test_tail_blocks_on_the_runs_node_until_an_append(cluster_client: RedisCluster):
    log = StreamLog(cluster_client, retention_s=600)
    for run_id in await spread_runs(cluster_client, 4):
        await log.create_run(run_id, "echo", "x")
        first = await log.append(run_id, start(run_id))
        waiting = asyncio.create_task(log.tail(run_id, first, block_ms=5_000))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        second = await log.append(run_id, chunk(run_id, "hi", 1))
        got = await asyncio.wait_for(waiting, 5)
        assert [entry.id for entry in got] == [second]


async def test_direct_feed_resumes_mid_run_and_follows_live_on_every_node(cluster_client: RedisCluster):
    log = StreamLog(cluster_client, retention_s=600)
    feed = DirectFeed(log, block_ms=1_000)
    run_ids = await spread_runs(cluster_client, 6)

    async def follow(run_id: str, after: str) -> list[Entry]:
        got: list[Entry] = []
        async for batch in feed.subscribe(run_id, after):
            assert isinstance(batch, list)
            got.extend(batch)
        return got

    resume_at: dict[str, str] = {}
    for run_id in run_ids:
        await log.create_run(run_id, "echo", "x")
        await log.append(run_id, start(run_id))
        resume_at[run_id] = await log.append(run_id, chunk(run_id, "a", 1))
    readers = {run_id: asyncio.create_task(follow(run_id, resume_at[run_id])) for run_id in run_ids}
    for n in range(2, 6):
        for run_id in run_ids:
            await log.append(run_id, chunk(run_id, "x", n))
    for run_id in run_ids:
        await log.append(run_id, complete(run_id))
    for run_id, task in readers.items():
        got = await asyncio.wait_for(task, 10)
        everything = await log.read_all(run_id)
        assert got == everything[2:]  # exactly what followed the resume point: no gap, no duplicate
        assert got[-1].type == "complete"


async def test_global_agents_hash_works_on_a_cluster(cluster_client: RedisCluster):
    await cluster_client.hset(AGENTS_KEY, mapping={"echo": "streams its input back"})
    assert await cluster_client.hexists(AGENTS_KEY, "echo")
    assert (await cluster_client.hgetall(AGENTS_KEY))["echo"] == "streams its input back"
