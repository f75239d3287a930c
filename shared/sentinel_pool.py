"""Sentinel-managed connections that follow a failover promptly, wherever they were made.

redis-py asks the sentinels where the primary is only when it opens a connection. A connection that stays open to the
old primary goes on working when that primary was *demoted alive* (`SENTINEL FAILOVER` for maintenance, or a network
partition healing): its writes succeed there until Sentinel turns the node into a replica (up to ~10 s later), and are
then thrown away when it resyncs from the new primary. Measured in tests/test_faults_failover.py before this module:
a worker kept appending a run to the demoted primary; its viewers saw 506 events that the promoted primary never had.

- `ResolvingConnection`: every (re)connect attempt asks the sentinels; its retries re-resolve instead of redialling
  one address, and it registers itself with its pool.
- `TrackingSentinelPool`: knows every live connection made with its settings, including those made *outside* it from
  its connection kwargs (the gateway hub's own pool and its dedicated blocking readers copy them).
- `PrimaryWatch`: asks the sentinels every `interval_s` where the primary is and closes every tracked connection that
  is open elsewhere. Whatever was in flight on it fails with a ConnectionError, which runcast retries as transient
  (appends check whether the interrupted one landed, `runcast.worker.durable`); the retry connects to the new primary.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runcast.shared.resilience import Periodic

log = logging.getLogger("runcast.sentinel")

WATCH_INTERVAL_S = 0.5
"""How often each process asks the sentinels where the primary is (one `SENTINEL MASTERS` per Sentinel client)."""


class ResolvingConnection(SentinelManagedConnection):
    """A Sentinel-managed connection whose every retry asks the sentinels again where the primary is.

    redis-py's `SentinelManagedConnection` resolves the primary, then connects to that one address with the client's
    whole `Retry` budget before it asks again. A client whose retries cover refused connects (arq's queue: 30 retries
    on OSError, so the worker rides out a restart) kept dialling the dead primary for 26 s after a failover that took
    1.7 s (measured in tests/test_faults_failover.py). Here one resolved address gets one attempt; the retries
    re-resolve."""

    _ONE_ATTEMPT = Retry(NoBackoff(), 0)

    async def connect_to(self, address: tuple[str, int]) -> None:
        retry, self.retry = self.retry, self._ONE_ATTEMPT
        try:
            await super().connect_to(address)
        finally:
            self.retry = retry
        track = getattr(self.connection_pool, "track", None)
        if track is not None:
            track(self)


class TrackingSentinelPool(SentinelConnectionPool):
    """A SentinelConnectionPool that remembers (weakly) every connection opened with its settings."""

    def __init__(self, service_name: str, sentinel_manager: object, **kwargs: object) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)
        self.opened: weakref.WeakSet[SentinelManagedConnection] = weakref.WeakSet()

    def track(self, connection: SentinelManagedConnection) -> None:
        self.opened.add(connection)

    async def close_stale(self, primary: tuple[str, int]) -> int:
        """Close every connection open to another node than `primary`; returns how many."""
        stale = [c for c in list(self.opened) if c.is_connected and (c.host, c.port) != primary]
        for connection in stale:
            # nowait: do not wait for the stream to report itself closed. A connection whose socket another protocol
            # took over (the hub's subscription reader, `runcast.gateway.hub.reader`) never does, and waiting for it
            # stopped this watch for good after its first failover (found by tests/test_faults_failover.py).
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
        return len(stale)


class PrimaryWatch:
    """Follows the primary of each Sentinel-managed client given (others are ignored); `start()`/`await stop()`."""

    def __init__(
        self,
        clients: Iterable[object],
        interval_s: float = WATCH_INTERVAL_S,
        on_switch: Callable[[], None] | None = None,
    ) -> None:
        """`on_switch` is called when a primary changes (the worker's append writer then checks its runs' logs for
        acknowledged entries the promoted replica lacks, `runcast.worker.writer`)."""
        self.pools = [pool for client in clients if isinstance(pool := _pool_of(client), TrackingSentinelPool)]
        self.closed = 0
        self.on_switch = on_switch
        self._primaries: dict[int, tuple[str, int]] = {}
        # any failure is retried: the watch is what makes a demoted primary harmless, it must not die
        self._periodic = Periodic("runcast-sentinel-watch", self.check, interval_s, logger=log)

    def start(self) -> PrimaryWatch:
        if self.pools:
            self._periodic.start()
        return self

    async def stop(self) -> None:
        await self._periodic.stop()

    async def check(self) -> int:
        """Ask once; close the connections open to a node that is no longer the primary. Returns how many."""
        closed = 0
        for pool in self.pools:
            try:
                primary = await pool.sentinel_manager.discover_master(pool.service_name)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                continue  # no primary right now (failover running) or no sentinel reachable: ask again later
            stale = await pool.close_stale(primary)
            known = self._primaries.get(id(pool))
            self._primaries[id(pool)] = primary
            if (stale or (known is not None and known != primary)) and self.on_switch is not None:
                self.on_switch()
            if stale:
                log.warning(
                    "primary of %r is now %s:%s; closed %d connection(s) to the old one",
                    pool.service_name,
                    *primary,
                    stale,
                )
            closed += stale
        self.closed += closed
        return closed


def _pool_of(client: object) -> object:
    return client.connection_pool if isinstance(client, Redis) else None
