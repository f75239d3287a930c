"""Which reader group follows a run, and how that group's reader connects: one group on a plain Redis, one per
shard (the primary that owns the run's slot) on a Redis Cluster. A cluster's shard channels are per slot like keys,
but one connection to a node may SSUBSCRIBE channels of every slot the node owns, so the hub keeps one reader
connection per shard however many runs (and slots) it follows."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection

from runcast.gateway.hub.reader import READER_NAME
from runcast.shared.cluster import ClusterSlots, run_slot

READER_OPTIONS: dict[str, Any] = {
    "client_name": READER_NAME,
    "health_check_interval": 0,
    "socket_timeout": None,
    "protocol": 2,  # the reader parses RESP2 pub/sub replies itself
}
"""A reader's connection waits for messages indefinitely (its own PING tells a dead one) and never health-checks."""


class Routing(Protocol):
    sharded: bool

    def group_of(self, run_id: str) -> Hashable: ...

    def connection(self, group: Hashable) -> AbstractConnection: ...

    async def refresh(self) -> None:
        """Re-read where runs live (a cluster's slot map) before re-routing runs whose subscription failed."""

    async def aclose(self) -> None: ...


class SingleRedis:
    sharded = False

    def __init__(self, client: Redis) -> None:
        pool = client.connection_pool
        self.connection_class = pool.connection_class
        self.kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "redis_connect_func"}

    def group_of(self, run_id: str) -> Hashable:
        return "main"

    def connection(self, group: Hashable) -> AbstractConnection:
        return self.connection_class(**{**self.kwargs, **READER_OPTIONS})

    async def refresh(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ClusterShards:
    """Groups are primaries, named `host:port` as the slot map has them (SSUBSCRIBE per run, on its slot's owner)."""

    sharded = True

    def __init__(self, cluster: RedisCluster) -> None:
        self.slots = ClusterSlots(cluster)

    def group_of(self, run_id: str) -> Hashable:
        host, port = self.slots.address_of_slot(run_slot(run_id))
        return f"{host}:{port}"

    def connection(self, group: Hashable) -> AbstractConnection:
        host, _, port = str(group).rpartition(":")
        return self.slots.connection(host, int(port), **READER_OPTIONS)

    async def refresh(self) -> None:
        await self.slots.refresh()

    async def aclose(self) -> None:
        return None  # the readers own their connections; the slot map holds none


def routing_for(client: Redis | RedisCluster) -> SingleRedis | ClusterShards:
    return ClusterShards(client) if isinstance(client, RedisCluster) else SingleRedis(client)
