"""One place that builds Redis clients, so every process uses the same options.

Two Redis roles: the *stream log* (run streams, meta hashes, the agents hash), which may be a Redis Cluster, and the
*job queue* (arq), which is always a plain Redis because arq's enqueue is a MULTI over keys in different slots.

Either role may be a primary watched by Redis Sentinel, named by a `redis+sentinel://` URL
(`runcast.shared.sentinel`); every function here accepts one wherever it accepts a `redis://` URL.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from arq.connections import ArqRedis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import DataError, ReadOnlyError
from redis.utils import HIREDIS_AVAILABLE

from runcast.shared.resilience import TRANSIENT_ERRORS
from runcast.shared.sentinel import SentinelUrl
from runcast.shared.settings import Settings

AnyRedis: TypeAlias = Redis | RedisCluster
"""A stream-log client: a plain Redis or a Redis Cluster; runcast only sends single-slot commands through it."""

_OPTIONS: dict[str, object] = {"decode_responses": True, "health_check_interval": 30, "socket_keepalive": True}

_READONLY_RECONNECTS: dict[str, object] = {"retry_on_error": [ReadOnlyError], "retry": Retry(NoBackoff(), 0)}
"""A connection that gets `READONLY` is closed (no command is retried here: appends must not be re-sent blindly, see
`runcast.worker.durable`), so the caller's retry opens a new one: after a failover behind a DNS name or a proxy
(managed Redis services do that), a pooled connection to the demoted primary would otherwise get READONLY for ever."""


if HIREDIS_AVAILABLE:
    import hiredis

    class HiredisPackingConnection(Connection):
        """A TCP connection that packs commands with hiredis, as redis-py's sync client does (its asyncio one packs
        in Python). Same bytes on the wire; ~8x less CPU for a worker's append call of a few thousand arguments,
        which was ~10% of a worker's CPU per event (measured with py-spy)."""

        def pack_command(self, *args: Any) -> list[bytes]:
            if isinstance(args[0], str):  # a command name like "CLIENT ID" goes out as two arguments
                args = (*args[0].encode().split(), *args[1:])
            elif b" " in args[0]:
                args = (*args[0].split(), *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError as exc:
                raise DataError(str(exc)) from exc

    _CONNECTION: dict[str, object] = {"connection_class": HiredisPackingConnection}
else:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    _CONNECTION = {}


def _packing(url: str) -> dict[str, object]:
    return _CONNECTION if url.startswith("redis://") else {}  # TLS and unix sockets keep their own classes


def redis_from_url(url: str, **options: object) -> Redis:
    """A client for `redis://`, `rediss://`, `unix://` or `redis+sentinel://` (the current primary) URLs."""
    merged = {**_OPTIONS, **_READONLY_RECONNECTS, **options}
    target = SentinelUrl.parse(url)
    if target is not None:
        return target.master(**merged)
    return Redis.from_url(url, **{**merged, **_packing(url)})  # type: ignore[arg-type]


def cluster_from_url(url: str, **options: object) -> RedisCluster:
    """A cluster client seeded by one node's URL; it discovers the other nodes and follows MOVED/ASK itself."""
    return RedisCluster.from_url(url, **{**_OPTIONS, **_packing(url), **options})  # type: ignore[arg-type]


def stream_redis(settings: Settings) -> AnyRedis:
    """The client for run streams and meta: a cluster client when RUNCAST_REDIS_CLUSTER is set."""
    if settings.redis_cluster:
        return cluster_from_url(settings.redis_url)
    return redis_from_url(settings.redis_url)


def queue_retry(settings: Settings) -> dict[str, Any]:
    """arq's connection options: commands retried with backoff through a lost connection or a failover, so the
    worker's poll loop, job bookkeeping and the gateway's enqueue survive a Redis restart."""
    return {
        "retry_on_error": list(TRANSIENT_ERRORS),
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=max(int(settings.redis_retry_s), 1)),
        "socket_connect_timeout": 1.0,
    }


def queue_redis(settings: Settings) -> ArqRedis:
    """The arq job-queue client (bytes, not decoded: arq pickles jobs) for the gateway's enqueue and the worker."""
    target = SentinelUrl.parse(settings.queue_url)
    if target is not None:
        return target.master(redis_class=ArqRedis, **queue_retry(settings))
    return ArqRedis.from_url(settings.queue_url, **queue_retry(settings))  # type: ignore[return-value]


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)
