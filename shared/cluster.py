"""Where a run lives on a Redis Cluster, for connections that the cluster client does not make itself.

Every key of a run and its live channel carry the `{run_id}` hash tag, so they all hash to one slot (`run_slot`).
Commands go through the shared `RedisCluster` client, which routes them itself. The hub's subscription connections
do not: it keeps one per shard (`gateway/hub/routing.py`), so it must know which primary owns a run's slot and must
connect there with the cluster client's own options (auth, TLS, timeouts, decoding). `ClusterSlots` answers both, and
re-reads the slot map when a slot has moved (the hub asks after the old owner dropped a run's shard channel).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from runcast.shared.keys import events_key

_CLIENT_INTERNALS = ("connection_class", "max_connections", "response_callbacks", "redis_connect_func")
"""Options of the cluster client's node connections that are the client's own business, not a new connection's."""


def run_slot(run_id: str) -> int:
    """The hash slot of all of a run's keys and its channel (the `{run_id}` tag); computed locally, no round trip."""
    return key_slot(events_key(run_id).encode())


class ClusterSlots:
    """A cluster's slot map (slot -> primary) and new connections to a node with the cluster client's options."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        kwargs = dict(cluster.nodes_manager.connection_kwargs)
        self.connection_class: type[AbstractConnection] = kwargs["connection_class"]
        self._kwargs = {key: value for key, value in kwargs.items() if key not in _CLIENT_INTERNALS}
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self._owners: dict[tuple[int, int], tuple[str, int]] = {}  # slot range -> primary, once refreshed

    def connection(self, host: str, port: int, **options: Any) -> AbstractConnection:
        """A new, unconnected connection to one node, configured like the cluster client's (`options` override)."""
        return self.connection_class(**{**self._kwargs, "host": host, "port": port, **options})

    def address_of_slot(self, slot: int) -> tuple[str, int]:
        """The primary that owns `slot`: from our own map once refreshed, else from the client's (read-only)."""
        for (start, end), owner in self._owners.items():
            if start <= slot <= end:
                return owner
        node = self.cluster.nodes_manager.get_node_from_slot(slot)
        return node.host, int(node.port)

    def remap(self, host: str, port: int) -> tuple[str, int]:
        """A node's address as announced by the cluster -> as reachable from here (the client's `address_remap`)."""
        return self.cluster.nodes_manager.remap_host_port(host, int(port))

    async def refresh(self) -> None:
        """Reload the slot map (CLUSTER SLOTS) at most once per burst of requests, however many callers ask.

        The map is our own: re-initialising the shared client's NodesManager from here would race with the
        commands it has in flight (it swaps and disconnects node objects outside the client's own lock)."""
        asked_at = time.monotonic()
        async with self._refresh_lock:
            if self._refreshed_at >= asked_at:
                return
            slots = await self.cluster.cluster_slots()
            self._owners = {
                (int(start), int(end)): self.remap(*_host_port(info["primary"])) for (start, end), info in slots.items()
            }
            self._refreshed_at = time.monotonic()


def _host_port(primary: Any) -> tuple[str, int]:
    host, port = primary[0], primary[1]
    return (host.decode() if isinstance(host, bytes) else host), int(port)
