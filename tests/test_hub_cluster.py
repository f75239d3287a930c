"""The hub on a real 3-master Redis Cluster: runs followed by SSUBSCRIBE on the shard that owns them, one reader
connection per shard however many runs, and a run whose slot moves mid-stream followed to its new owner with nothing
lost or doubled. Needs redis-server + redis-cli (a real cluster; never faked)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import RedisCluster

from runcast.gateway.hub.fanout import Hub
from runcast.gateway.hub.reader import READER_NAME
from runcast.shared.cluster import run_slot
from runcast.shared.ids import START_ID
from runcast.shared.keys import events_key, meta_key
from runcast.shared.streamlog import StreamLog
from tests.support.hub import collect, eventually, hub_metric, new_run, publish
from tests.support.redis_cluster import LocalCluster


@pytest.fixture
async def hub(cluster_client: RedisCluster) -> AsyncIterator[Hub]:
    hub = Hub(StreamLog(cluster_client, retention_s=600))
    yield hub
    await hub.close()


def reader_connections(cluster: LocalCluster) -> dict[int, int]:
    """Per node: connections named like the hub's reader (CLIENT LIST on every node)."""
    counts = {}
    for port in cluster.ports:
        with cluster.node(port) as node:
            counts[port] = sum(1 for c in node.client_list() if c.get("name") == READER_NAME)
    return counts


def shard_subscriptions(cluster: LocalCluster) -> dict[int, int]:
    """Per node: shard channels its clients subscribe to (PUBSUB SHARDNUMSUB is per channel; CLIENT LIST has ssub)."""
    counts = {}
    for port in cluster.ports:
        with cluster.node(port) as node:
            counts[port] = sum(int(c.get("ssub", 0)) for c in node.client_list() if c.get("name") == READER_NAME)
    return counts


async def test_60_runs_on_every_shard_are_followed_on_one_connection_per_shard_and_every_viewer_is_exact(
    hub: Hub, cluster_client: RedisCluster, redis_cluster: LocalCluster
):
    log = StreamLog(cluster_client, retention_s=600)
    runs = [await new_run(log) for _ in range(60)]
    owners = {int(cluster_client.get_node_from_key(events_key(run_id)).port) for run_id in runs}
    assert owners == set(redis_cluster.ports), "60 random runs should land on all 3 shards"
    plan = [run_id for run_id in runs for _ in range(2)]
    viewers = [asyncio.create_task(collect(hub.subscribe(run_id, START_ID))) for run_id in plan]
    await eventually(lambda: hub_metric("runcast_hub_runs_followed") == 60, within_s=10, what="60 runs followed")
    await eventually(lambda: sum(shard_subscriptions(redis_cluster).values()) == 60, what="60 SSUBSCRIBEs")
    connections = reader_connections(redis_cluster)
    print(f"60 runs (in ~60 slots) followed with reader connections per node {connections}")
    assert connections == dict.fromkeys(redis_cluster.ports, 1), "one reader connection per shard, no more"
    assert len(hub.readers) == 3
    sent = {run_id: await publish(log, run_id, 5) for run_id in runs}
    for run_id, (resets, got) in zip(plan, await asyncio.wait_for(asyncio.gather(*viewers), 20), strict=True):
        assert resets == [] and [entry.id for entry in got] == sent[run_id]
    await eventually(lambda: sum(reader_connections(redis_cluster).values()) == 0, what="readers closed")


async def test_a_run_whose_slot_moves_mid_stream_is_followed_on_its_new_shard_without_a_gap_or_a_duplicate(
    hub: Hub, cluster_client: RedisCluster, redis_cluster: LocalCluster
):
    log = StreamLog(cluster_client, retention_s=600)
    run_id = await new_run(log)
    slot, src = run_slot(run_id), int(cluster_client.get_node_from_key(events_key(run_id)).port)
    dst = next(port for port in redis_cluster.ports if port != src)
    viewers = [asyncio.create_task(collect(hub.subscribe(run_id, START_ID))) for _ in range(3)]
    before = await publish(log, run_id, 5, end=False)
    await eventually(lambda: run_id in hub.runs and hub.runs[run_id].cursor == before[-1], what="first events")
    assert set(hub.readers) == {f"127.0.0.1:{src}"}
    fills = hub_metric("runcast_hub_gap_fills_total")
    redis_cluster.move_slot(slot, src, dst, [events_key(run_id), meta_key(run_id)])
    await eventually(lambda: set(hub.readers) == {f"127.0.0.1:{dst}"}, what="the run re-routed to its new shard")
    after = await publish(log, run_id, 5)  # the client follows -MOVED; the script's SPUBLISH now runs on dst
    for resets, got in await asyncio.wait_for(asyncio.gather(*viewers), 20):
        assert resets == [] and [entry.id for entry in got] == before + after
    assert hub_metric("runcast_hub_gap_fills_total") > fills  # resubscribed on dst, then read what it missed
    assert hub.runs == {}
