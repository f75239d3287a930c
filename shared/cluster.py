"""Blocking readers for the fan-out hub, on a plain Redis or a Redis Cluster.

The hub follows many runs with one `XREAD BLOCK` per *group* of runs. A Redis Cluster refuses any multi-key command
whose keys span hash slots (CROSSSLOT), even when one node serves all those slots, so on a cluster a group is one
slot; on a plain Redis every run is in the one group. Each run's keys carry the `{run_id}` hash tag, so slots are
spread uniformly: n active runs fill about 16384 * (1 - e^(-n/16384)) slots (1000 runs -> ~970 groups). On a cluster
the hub therefore keeps roughly one reader connection per active run and process (still one per run, however many
viewers), and one multiplexed reader per process on a plain Redis.

A `GroupReader` owns one dedicated connection (its own CLIENT ID, re-read on every reconnect), reads the group's
streams with `xread`, and can be woken from any task with `wake` (CLIENT UNBLOCK through a second connection to the
same server). On a cluster it follows the slot: MOVED -> refresh the slot map and reconnect to the new owner; ASK
(slot mid-migration) -> one `ASKING` + non-blocking XREAD on the importing node; TRYAGAIN -> short pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, Protocol

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import AskError, ConnectionError, MovedError, TimeoutError, TryAgainError

from runcast.shared.keys import events_key, run_id_from_events_key
from runcast.shared.streamlog import Entry, to_entries

Reply = dict[str, list[Entry]]
"""run_id -> the entries read for it (runs with nothing new are absent)."""

_RECONNECT_PAUSES = (0.05, 0.2, 0.5, 1.0)
_ASK_PAUSE_S = 0.05
_MAX_MOVES = 5
_WAKE_DEADLINE_S = 2.0


def run_slot(run_id: str) -> int:
    """The hash slot of all of a run's keys (the `{run_id}` tag); computed locally, no round trip."""
    return key_slot(events_key(run_id).encode())


def group_by_slot(run_ids: Iterable[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = {}
    for run_id in run_ids:
        groups.setdefault(run_slot(run_id), []).append(run_id)
    return groups


class GroupReader:
    """One dedicated connection doing one blocking XREAD at a time over one group's runs; `wake` cuts it short.

    Contract for the caller (the hub's reader task): build `streams` and call `xread` with no `await` in between,
    so a run added before `wake()` is either in the call being woken or in the next one.
    """

    def __init__(self, group: Hashable) -> None:
        self.group = group
        self.client_id: int | None = None
        self._conn: Redis | None = None
        self._started = 0
        self._finished = 0
        self._woken = asyncio.Event()

    async def xread(self, streams: Mapping[str, str], block_ms: int | None, count: int | None = None) -> Reply:
        """Entries after each run's last id, blocking up to `block_ms` (None = don't block). {} on timeout or wake."""
        if not streams:
            raise ValueError("xread needs at least one run")
        self._check_group(streams)
        self._started += 1
        self._woken.clear()
        try:
            keys = {events_key(run_id): last_id for run_id, last_id in streams.items()}
            return await self._read(keys, block_ms, count)
        finally:
            self._finished += 1

    async def wake(self) -> bool:
        """Make the `xread` in flight (if any) return {} now. Returns False when none was in flight.

        CLIENT UNBLOCK answers 0 when the server has not yet started blocking the call (it is still on the wire),
        so it is retried until the call is blocked-then-unblocked or has returned by itself.
        """
        target = self._started
        deadline = time.monotonic() + _WAKE_DEADLINE_S
        while self._finished < target:
            self._woken.set()  # cuts short a pause between redirects or reconnects
            if self.client_id is not None and await self._unblock(self.client_id):
                return True
            if time.monotonic() > deadline:
                return True  # the call will end by its own block timeout
            await asyncio.sleep(0.001)
        return False

    async def aclose(self) -> None:
        await self._drop()

    def _check_group(self, streams: Mapping[str, str]) -> None:
        return None

    async def _read(self, keys: dict[str, str], block_ms: int | None, count: int | None) -> Reply:
        conn = await self._connection()
        return parse_xread(await conn.xread(keys, block=block_ms, count=count))

    async def _connection(self) -> Redis:
        if self._conn is None:
            self._conn = await self._open()
        return self._conn

    async def _open(self) -> Redis:
        raise NotImplementedError

    async def _unblock(self, client_id: int) -> bool:
        raise NotImplementedError

    async def _drop(self) -> None:
        conn, self._conn, self.client_id = self._conn, None, None
        if conn is not None:
            await conn.aclose()
            await conn.connection_pool.disconnect()

    async def _pause(self, seconds: float) -> None:
        """Sleep, unless woken: the caller wants its new key set read now."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    def _dedicated(self, pool_kwargs: dict[str, Any], connection_class: type[AbstractConnection]) -> Redis:
        """A single-connection client whose CLIENT ID is re-read on every (re)connect."""

        async def on_connect(connection: AbstractConnection) -> None:
            await connection.on_connect()
            await connection.send_command("CLIENT", "ID")
            self.client_id = int(await connection.read_response())

        pool = ConnectionPool(connection_class=connection_class, **pool_kwargs, redis_connect_func=on_connect)
        return Redis(connection_pool=pool, single_connection_client=True)


class ReaderSource(Protocol):
    """How the hub groups runs and gets a reader per group: `readers_for(client)` picks the implementation."""

    def group_of(self, run_id: str) -> Hashable: ...

    def open_reader(self, group: Hashable) -> GroupReader: ...

    async def aclose(self) -> None: ...


class _SingleReader(GroupReader):
    def __init__(self, client: Redis) -> None:
        super().__init__(0)
        self._client = client

    async def _open(self) -> Redis:
        pool = self._client.connection_pool
        kwargs = {k: v for k, v in pool.connection_kwargs.items() if k != "redis_connect_func"}
        return self._dedicated(kwargs, pool.connection_class)

    async def _unblock(self, client_id: int) -> bool:
        return bool(await self._client.client_unblock(client_id))


class SingleNodeReaders:
    """A plain Redis: every run in one group, one reader for all of them."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    def group_of(self, run_id: str) -> Hashable:
        return 0

    def open_reader(self, group: Hashable) -> GroupReader:
        return _SingleReader(self.client)

    async def aclose(self) -> None:
        return None


class SlotReader(GroupReader):
    """A reader for one slot of a cluster, connected to whichever primary serves the slot now."""

    def __init__(self, source: ClusterReaders, slot: int) -> None:
        super().__init__(slot)
        self.slot = slot
        self._source = source
        self._address: tuple[str, int] | None = None  # set by MOVED; else the slot map decides
        self.node_name: str | None = None

    def _check_group(self, streams: Mapping[str, str]) -> None:
        stray = [run_id for run_id in streams if run_slot(run_id) != self.slot]
        if stray:
            raise ValueError(f"runs {stray} are not in slot {self.slot}: a cluster XREAD cannot span slots")

    async def _open(self) -> Redis:
        host, port = self._address or self._source.address_of_slot(self.slot)
        self.node_name = f"{host}:{port}"
        return self._dedicated(self._source.pool_kwargs(host, port), self._source.connection_class)

    async def _unblock(self, client_id: int) -> bool:
        if self.node_name is None:
            return False
        return bool(await self._source.side_client(self.node_name).client_unblock(client_id))

    async def _read(self, keys: dict[str, str], block_ms: int | None, count: int | None) -> Reply:
        failures = moves = 0
        while True:
            try:
                return await super()._read(keys, block_ms, count)
            except MovedError as exc:  # the slot has a new owner: follow it (and fix the shared slot map)
                moves += 1
                if moves > _MAX_MOVES:
                    raise
                await self._drop()
                self._address = self._source.remap(exc.host, exc.port)
                await self._source.refresh()
            except AskError as exc:  # mid-migration and our keys already moved: read them on the importing node
                reply = await self._read_asking(self._source.remap(exc.host, exc.port), keys, count)
                if reply or block_ms is None:
                    return reply
                await self._pause(_ASK_PAUSE_S if block_ms == 0 else min(block_ms / 1000, _ASK_PAUSE_S))
                return {}
            except TryAgainError:  # multi-key read while the slot's keys are split between two nodes
                await self._pause(_ASK_PAUSE_S)
                return {}
            except (ConnectionError, TimeoutError):
                await self._drop()
                self._address = None
                if failures == len(_RECONNECT_PAUSES):
                    raise
                await self._pause(_RECONNECT_PAUSES[failures])
                failures += 1
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await self._source.refresh()

    async def _read_asking(self, address: tuple[str, int], keys: dict[str, str], count: int | None) -> Reply:
        async with self._source.side_client(f"{address[0]}:{address[1]}").pipeline(transaction=False) as pipe:
            pipe.execute_command("ASKING")
            pipe.xread(keys, count=count)
            _ok, reply = await pipe.execute()
        return parse_xread(reply)


class ClusterReaders:
    """A Redis Cluster: one group per slot; readers connect to the slot's primary with the cluster client's options
    (auth, TLS, timeouts, decoding). Also keeps one small pooled client per node for CLIENT UNBLOCK and ASK reads."""

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster
        kwargs = dict(cluster.nodes_manager.connection_kwargs)
        self.connection_class: type[AbstractConnection] = kwargs.pop("connection_class")
        for internal in ("max_connections", "response_callbacks", "redis_connect_func"):
            kwargs.pop(internal, None)
        self._kwargs = kwargs
        self._side: dict[str, Redis] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshed_at = 0.0
        self._slot_node: dict[int, str] = {}  # where each slot's raw reader connection last connected
        self._owners: dict[tuple[int, int], tuple[str, int]] = {}  # slot range -> primary, once refreshed

    def group_of(self, run_id: str) -> Hashable:
        return run_slot(run_id)

    def open_reader(self, group: Hashable) -> SlotReader:
        if not isinstance(group, int) or not 0 <= group < 16384:
            raise ValueError(f"not a cluster slot: {group!r}")
        return SlotReader(self, group)

    def address_of_slot(self, slot: int) -> tuple[str, int]:
        for (start, end), owner in self._owners.items():
            if start <= slot <= end:
                return owner
        node = self.cluster.nodes_manager.get_node_from_slot(slot)  # read-only use of the client's map
        return node.host, int(node.port)

    def remap(self, host: str, port: int) -> tuple[str, int]:
        return self.cluster.nodes_manager.remap_host_port(host, int(port))

    def pool_kwargs(self, host: str, port: int) -> dict[str, Any]:
        return {**self._kwargs, "host": host, "port": port}

    def side_client(self, node_name: str) -> Redis:
        client = self._side.get(node_name)
        if client is None:
            host, _, port = node_name.rpartition(":")
            pool = ConnectionPool(connection_class=self.connection_class, **self.pool_kwargs(host, int(port)))
            client = self._side[node_name] = Redis.from_pool(pool)
        return client

    # -- for a hub that manages its own raw reader connections (gateway/hub_reader.StreamReader) -------------------

    def connection_for_slot(self, slot: int, **overrides: Any) -> AbstractConnection:
        """A new, unconnected connection for one slot's reader. Its `connect()` looks up the slot's primary at
        connect time, and refreshes the slot map first whenever this slot has connected before: a reader that
        reconnects after any error (a -MOVED reply included, which it sees as `MovedError`) lands on the new owner."""
        connection = _slot_connection_class(self.connection_class)(**{**self._kwargs, **overrides})
        connection.runcast_slot = slot
        connection.runcast_readers = self
        return connection

    def control_for_slot(self, slot: int) -> SlotControl:
        """`client_unblock(client_id)` sent to the node the slot's reader connection is on now."""
        return SlotControl(self, slot)

    async def _owner_for_connect(self, slot: int) -> tuple[str, int]:
        if slot in self._slot_node:
            await self.refresh()
        host, port = self.address_of_slot(slot)
        self._slot_node[slot] = f"{host}:{port}"
        return host, port

    async def refresh(self) -> None:
        """Reload the slot map (CLUSTER SLOTS) at most once per burst of redirects, however many readers ask.

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

    async def aclose(self) -> None:
        side, self._side = self._side, {}
        for client in side.values():
            await client.aclose()


class SlotControl:
    def __init__(self, readers: ClusterReaders, slot: int) -> None:
        self._readers = readers
        self._slot = slot

    async def client_unblock(self, client_id: int, error: bool = False) -> bool:
        node = self._readers._slot_node.get(self._slot)
        if node is None:
            return False
        return bool(await self._readers.side_client(node).client_unblock(client_id, error))


_SLOT_CONNECTION_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _slot_connection_class(base: type[AbstractConnection]) -> type[Any]:
    """`base` (plain or TLS connection) that picks its host and port from the slot map when it connects."""
    cls = _SLOT_CONNECTION_CLASSES.get(base)
    if cls is None:

        class SlotConnection(base):  # type: ignore[valid-type, misc]
            runcast_slot: int
            runcast_readers: ClusterReaders

            async def connect(self) -> None:
                if not self.is_connected:
                    self.host, self.port = await self.runcast_readers._owner_for_connect(self.runcast_slot)
                await super().connect()

        cls = _SLOT_CONNECTION_CLASSES[base] = SlotConnection
    return cls


def _host_port(primary: Any) -> tuple[str, int]:
    host, port = primary[0], primary[1]
    return (host.decode() if isinstance(host, bytes) else host), int(port)


def readers_for(client: Redis | RedisCluster) -> SingleNodeReaders | ClusterReaders:
    """The reader source for a stream-log client: per-slot groups on a cluster, one group on a plain Redis."""
    if isinstance(client, RedisCluster):
        return ClusterReaders(client)
    return SingleNodeReaders(client)


def parse_xread(reply: Any) -> Reply:
    """An XREAD reply (RESP2 list or RESP3 map; None on timeout/unblock) -> run_id -> entries."""
    if not reply:
        return {}
    if isinstance(reply, dict):  # RESP3: {key: [entries]}
        pairs = [(key, wrapped[0] if wrapped else []) for key, wrapped in reply.items()]
    else:  # RESP2: [[key, entries], ...]
        pairs = [(key, entries) for key, entries in reply]
    out: Reply = {}
    for key, entries in pairs:
        if entries:
            out[run_id_from_events_key(key)] = to_entries(entries)
    return out
