"""Where a run lives on a real 3-master Redis Cluster (`shared/cluster.py`): its slot computed locally is the server's,
all its keys and its live channel share it, and the slot map the hub routes its subscriptions by follows a slot that
moved to its new owner. Needs redis-server + redis-cli (a real cluster; never faked)."""

from __future__ import annotations

from redis.asyncio import RedisCluster

from runcast.gateway.hub.reader import READER_NAME
from runcast.shared.cluster import ClusterSlots, run_slot
from runcast.shared.ids import new_run_id
from runcast.shared.keys import cancel_key, events_key, heartbeat_key, live_channel, meta_key
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import StreamLog
from tests.support.redis_cluster import LocalCluster

RUN_NAMES = (events_key, meta_key, live_channel, heartbeat_key, cancel_key)


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


async def xrange_on(slots: ClusterSlots, address: tuple[str, int], run_id: str) -> list[str]:
    """XRANGE of the run's stream on a raw connection to `address` (a wrong node answers -MOVED: an error)."""
    conn = slots.connection(*address, client_name=READER_NAME)
    try:
        await conn.connect()
        await conn.send_command("XRANGE", events_key(run_id), "-", "+")
        return [as_str(entry[0]) for entry in await conn.read_response()]
    finally:
        await conn.disconnect()


def as_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_run_slot_is_the_servers_keyslot_of_every_key_and_the_channel_of_a_run(cluster_client: RedisCluster):
    for run_id in [new_run_id() for _ in range(5)]:
        slots = {await cluster_client.cluster_keyslot(name(run_id)) for name in RUN_NAMES}
        assert slots == {run_slot(run_id)}


async def test_the_slot_map_names_each_runs_owner_and_connects_there_with_the_clients_options(
    cluster_client: RedisCluster,
):
    slots = ClusterSlots(cluster_client)
    log = StreamLog(cluster_client, retention_s=600)
    by_owner: dict[tuple[str, int], str] = {}
    while len(by_owner) < 3:  # one run on each master
        run_id = new_run_id()
        await log.create_run(run_id, "echo", "x")
        await log.append(run_id, chunk(run_id, 0))
        node = cluster_client.get_node_from_key(events_key(run_id))
        by_owner.setdefault((node.host, int(node.port)), run_id)
    await slots.refresh()  # the same answers from our own map as from the client's
    for owner, run_id in by_owner.items():
        assert slots.address_of_slot(run_slot(run_id)) == owner
        assert await xrange_on(slots, owner, run_id) == [entry.id for entry in await log.read_all(run_id)]


async def test_refresh_follows_a_slot_that_moved_without_touching_the_shared_clients_map(
    redis_cluster: LocalCluster, cluster_client: RedisCluster
):
    slots = ClusterSlots(cluster_client)
    log = StreamLog(cluster_client, retention_s=600)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    ids = [await log.append(run_id, chunk(run_id, n)) for n in range(3)]
    slot = run_slot(run_id)
    src = slots.address_of_slot(slot)
    dst = next(("127.0.0.1", port) for port in redis_cluster.ports if port != src[1])
    redis_cluster.move_slot(slot, src[1], dst[1], [events_key(run_id), meta_key(run_id)])
    assert slots.address_of_slot(slot) == src  # nothing told us yet

    await slots.refresh()
    assert slots.address_of_slot(slot) == dst
    assert await xrange_on(slots, dst, run_id) == ids
    client_node = cluster_client.nodes_manager.get_node_from_slot(slot)
    assert (client_node.host, int(client_node.port)) == src  # the client learns by its own -MOVED, not from us
