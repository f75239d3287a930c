"""The hub's cluster building blocks (shared/cluster.py) on a real 3-master cluster: run -> slot group, a dedicated
reader on the node serving the slot, waking it with CLIENT UNBLOCK, and following the slot through MOVED and ASK
when it migrates. Needs redis-server + redis-cli (a real cluster; never faked)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import MovedError

from runcast.shared.cluster import ClusterReaders, SingleNodeReaders, SlotReader, group_by_slot, readers_for, run_slot
from runcast.shared.ids import START_ID, new_run_id
from runcast.shared.keys import events_key, meta_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import StreamLog
from tests.support.redis_cluster import LocalCluster


@pytest.fixture
async def readers(cluster_client: RedisCluster) -> AsyncIterator[ClusterReaders]:
    source = readers_for(cluster_client)
    assert isinstance(source, ClusterReaders)
    yield source
    await source.aclose()


@pytest.fixture
def log(cluster_client: RedisCluster) -> StreamLog:
    return StreamLog(cluster_client, retention_s=600)


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


async def new_run(log: StreamLog, events: int = 1) -> tuple[str, list[str]]:
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    return run_id, [await log.append(run_id, chunk(run_id, n)) for n in range(events)]


def same_slot_pair() -> tuple[str, str]:
    """Two run ids whose keys hash to one slot (found by the birthday bound: ~160 ids per hit)."""
    seen: dict[int, str] = {}
    for _ in itertools.count():
        run_id = new_run_id()
        other = seen.setdefault(run_slot(run_id), run_id)
        if other != run_id:
            return other, run_id
    raise AssertionError("unreachable")


def port_of(client: RedisCluster, run_id: str) -> int:
    return int(client.get_node_from_key(events_key(run_id)).port)


async def test_run_slot_is_the_servers_keyslot_and_groups_are_slots(cluster_client: RedisCluster):
    run_ids = [new_run_id() for _ in range(5)]
    for run_id in run_ids:
        assert run_slot(run_id) == await cluster_client.cluster_keyslot(events_key(run_id))
        assert run_slot(run_id) == await cluster_client.cluster_keyslot(meta_key(run_id))
    a, b = same_slot_pair()
    groups = group_by_slot([*run_ids, a, b])
    assert groups[run_slot(a)][-2:] == [a, b]
    assert sum(len(members) for members in groups.values()) == 7
    assert all(run_slot(r) == slot for slot, members in groups.items() for r in members)


async def test_a_slot_reader_reads_on_the_node_serving_its_slot(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, readers: ClusterReaders, log: StreamLog
):
    by_node: dict[int, str] = {}
    while len(by_node) < 3:  # one run on each master
        run_id, _ = await new_run(log, events=2)
        by_node.setdefault(port_of(cluster_client, run_id), run_id)
    for port, run_id in by_node.items():
        reader = readers.open_reader(readers.group_of(run_id))
        try:
            got = await reader.xread({run_id: START_ID}, block_ms=None)
            assert [entry.id for entry in got[run_id]] == [entry.id for entry in await log.read_all(run_id)]
            assert reader.node_name == f"127.0.0.1:{port}"
            with redis_cluster.node(port) as node:  # its CLIENT ID names a live connection on that very node
                assert f"id={reader.client_id} " in node.execute_command("CLIENT", "LIST", "ID", reader.client_id)
        finally:
            await reader.aclose()


async def test_one_xread_covers_every_run_of_its_slot(readers: ClusterReaders, log: StreamLog):
    a, b = same_slot_pair()
    for run_id in (a, b):
        await log.create_run(run_id, "echo", "x")
        await log.append(run_id, chunk(run_id, 0))
    reader = readers.open_reader(run_slot(a))
    try:
        got = await reader.xread({a: START_ID, b: START_ID}, block_ms=None)
        assert set(got) == {a, b}
    finally:
        await reader.aclose()


async def test_a_slot_reader_refuses_runs_of_another_slot(readers: ClusterReaders):
    run_a = new_run_id()
    run_b = next(r for r in iter(new_run_id, None) if run_slot(r) != run_slot(run_a))
    reader = readers.open_reader(run_slot(run_a))
    with pytest.raises(ValueError, match="cannot span slots"):
        await reader.xread({run_a: START_ID, run_b: START_ID}, block_ms=None)
    with pytest.raises(ValueError):
        readers.open_reader(16384)
    await reader.aclose()


async def test_a_blocked_reader_returns_the_next_append(readers: ClusterReaders, log: StreamLog):
    run_id, ids = await new_run(log)
    reader = readers.open_reader(run_slot(run_id))
    try:
        waiting = asyncio.create_task(reader.xread({run_id: ids[-1]}, block_ms=10_000))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        new_id = await log.append(run_id, chunk(run_id, 1))
        got = await asyncio.wait_for(waiting, 5)
        assert [entry.id for entry in got[run_id]] == [new_id]
    finally:
        await reader.aclose()


async def test_wake_ends_a_blocked_xread_at_once_even_right_after_it_was_sent(readers: ClusterReaders, log: StreamLog):
    run_id, ids = await new_run(log)
    reader = readers.open_reader(run_slot(run_id))
    try:
        assert await reader.wake() is False  # nothing in flight: nothing to do
        # First call: woken while still connecting (no CLIENT ID yet, not blocked on the server: a single CLIENT
        # UNBLOCK would miss it); second call: woken once blocked on the server.
        for settle in (0.0, 0.1):
            waiting = asyncio.create_task(reader.xread({run_id: ids[-1]}, block_ms=30_000))
            await asyncio.sleep(settle)
            assert await asyncio.wait_for(reader.wake(), 5) is True
            assert await asyncio.wait_for(waiting, 5) == {}
    finally:
        await reader.aclose()


async def test_a_blocked_reader_follows_its_slot_to_the_new_owner_via_moved(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, readers: ClusterReaders, log: StreamLog
):
    run_id, ids = await new_run(log)
    slot, src = run_slot(run_id), port_of(cluster_client, run_id)
    dst = next(port for port in redis_cluster.ports if port != src)
    reader = readers.open_reader(slot)
    try:
        waiting = asyncio.create_task(reader.xread({run_id: ids[-1]}, block_ms=30_000))
        await asyncio.sleep(0.1)
        assert reader.node_name == f"127.0.0.1:{src}"
        redis_cluster.move_slot(slot, src, dst, [events_key(run_id), meta_key(run_id)])
        await asyncio.sleep(0.3)  # the old owner answers the blocked XREAD with -MOVED; the reader re-blocks on dst
        assert not waiting.done()
        new_id = await log.append(run_id, chunk(run_id, 1))  # lands on dst
        got = await asyncio.wait_for(waiting, 10)
        assert [entry.id for entry in got[run_id]] == [new_id]
        assert reader.node_name == f"127.0.0.1:{dst}"
        assert readers.address_of_slot(slot) == ("127.0.0.1", dst)  # the shared slot map was refreshed too
    finally:
        await reader.aclose()


async def test_a_reader_reads_through_ask_while_its_slot_is_migrating(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, readers: ClusterReaders, log: StreamLog
):
    run_id, ids = await new_run(log, events=3)
    slot, src = run_slot(run_id), port_of(cluster_client, run_id)
    dst = next(port for port in redis_cluster.ports if port != src)
    reader = readers.open_reader(slot)
    try:
        assert len((await reader.xread({run_id: START_ID}, block_ms=None))[run_id]) == 3  # connected to src
        redis_cluster.begin_migration(slot, src, dst, [events_key(run_id), meta_key(run_id)])
        got = await asyncio.wait_for(reader.xread({run_id: ids[0]}, block_ms=1_000), 5)  # src: -ASK -> dst
        assert [entry.id for entry in got[run_id]] == ids[1:]
        assert await asyncio.wait_for(reader.xread({run_id: ids[-1]}, block_ms=1_000), 5) == {}  # waits, no spin
        redis_cluster.finish_migration(slot, dst)
        new_id = await log.append(run_id, chunk(run_id, 3))
        got = await asyncio.wait_for(reader.xread({run_id: ids[-1]}, block_ms=5_000), 10)  # src: -MOVED -> dst
        assert [entry.id for entry in got[run_id]] == [new_id]
        assert reader.node_name == f"127.0.0.1:{dst}"
    finally:
        await reader.aclose()


async def test_a_plain_redis_is_one_group_read_by_one_xread(real_redis_url: str):
    client: Redis = redis_from_url(real_redis_url)
    source = readers_for(client)
    assert isinstance(source, SingleNodeReaders)
    log = StreamLog(client, retention_s=600)
    run_ids = [(await new_run(log))[0] for _ in range(3)]
    assert {source.group_of(run_id) for run_id in run_ids} == {0}
    reader = source.open_reader(0)
    try:
        got = await reader.xread(dict.fromkeys(run_ids, START_ID), block_ms=None)
        assert set(got) == set(run_ids)
        waiting = asyncio.create_task(reader.xread(dict.fromkeys(run_ids, "$"), block_ms=30_000))
        await asyncio.sleep(0.05)
        assert await asyncio.wait_for(reader.wake(), 5) is True
        assert await asyncio.wait_for(waiting, 5) == {}
    finally:
        await reader.aclose()
        await client.aclose()


async def test_slot_readers_are_what_readers_for_gives_a_cluster_client(readers: ClusterReaders):
    assert isinstance(readers.open_reader(0), SlotReader)


async def test_a_reader_whose_connection_is_killed_reconnects_with_its_new_client_id(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, readers: ClusterReaders, log: StreamLog
):
    run_id, ids = await new_run(log)
    reader = readers.open_reader(run_slot(run_id))
    try:
        assert await reader.xread({run_id: START_ID}, block_ms=None)
        old_id = reader.client_id
        with redis_cluster.node(port_of(cluster_client, run_id)) as node:
            assert node.execute_command("CLIENT", "KILL", "ID", old_id) == 1
        waiting = asyncio.create_task(reader.xread({run_id: ids[-1]}, block_ms=30_000))
        await asyncio.sleep(0.2)
        assert reader.client_id not in (None, old_id)
        assert await asyncio.wait_for(reader.wake(), 5) is True  # CLIENT UNBLOCK reaches the new connection
        assert await asyncio.wait_for(waiting, 5) == {}
        new_id = await log.append(run_id, chunk(run_id, 1))
        got = await asyncio.wait_for(reader.xread({run_id: ids[-1]}, block_ms=5_000), 10)
        assert [entry.id for entry in got[run_id]] == [new_id]
    finally:
        await reader.aclose()


async def test_raw_reader_connections_for_a_slot_follow_it_after_a_move(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, readers: ClusterReaders, log: StreamLog
):
    """The hub-reader flow on raw connections: CLIENT ID, XREAD BLOCK woken by the slot's control, a -MOVED reply
    once the slot has moved, and the replacement connection for the slot going straight to the new owner."""
    run_id, ids = await new_run(log)
    slot, src = run_slot(run_id), port_of(cluster_client, run_id)
    dst = next(port for port in redis_cluster.ports if port != src)
    control = readers.control_for_slot(slot)
    assert await control.client_unblock(1) is False  # no connection for the slot yet: nothing to wake

    async def connect() -> tuple[Any, int]:
        conn = readers.connection_for_slot(slot, client_name="runcast-hub-reader", socket_timeout=None)
        await conn.connect()
        await conn.send_command("CLIENT", "ID")
        return conn, int(await conn.read_response())

    conn, client_id = await connect()
    try:
        assert conn.port == src
        await conn.send_command("XREAD", "BLOCK", 30_000, "STREAMS", events_key(run_id), ids[-1])
        await asyncio.sleep(0.05)
        assert await control.client_unblock(client_id) is True
        assert await asyncio.wait_for(conn.read_response(), 5) is None
        await conn.send_command("XREAD", "BLOCK", 30_000, "STREAMS", events_key(run_id), ids[-1])
        await asyncio.sleep(0.05)
        redis_cluster.move_slot(slot, src, dst, [events_key(run_id), meta_key(run_id)])
        with pytest.raises(MovedError):
            await asyncio.wait_for(conn.read_response(), 5)
    finally:
        await conn.disconnect()
    conn, client_id = await connect()  # a reconnect refreshes the slot map before picking the node
    try:
        assert conn.port == dst
        await conn.send_command("XREAD", "BLOCK", 30_000, "STREAMS", events_key(run_id), ids[-1])
        new_id = await log.append(run_id, chunk(run_id, 1))
        reply = await asyncio.wait_for(conn.read_response(), 5)
        assert reply[0][1][0][0] == new_id
        await conn.send_command("XREAD", "BLOCK", 30_000, "STREAMS", events_key(run_id), new_id)
        await asyncio.sleep(0.05)
        assert await control.client_unblock(client_id) is True  # the control follows the slot too
        assert await asyncio.wait_for(conn.read_response(), 5) is None
    finally:
        await conn.disconnect()
