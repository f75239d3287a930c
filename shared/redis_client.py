"""One place that builds Redis clients, so every process uses the same options.

Two Redis roles: the *stream log* (run streams, meta hashes, the agents hash), which may be a Redis Cluster, and the
*job queue* (arq), which is always a plain Redis because arq's enqueue is a MULTI over keys in different slots.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis, RedisCluster

from runcast.shared.settings import Settings

AnyRedis: TypeAlias = Redis | RedisCluster
"""A stream-log client: a plain Redis or a Redis Cluster; runcast only sends single-slot commands through it."""

_OPTIONS: dict[str, object] = {"decode_responses": True, "health_check_interval": 30, "socket_keepalive": True}


def redis_from_url(url: str, **options: object) -> Redis:
    return Redis.from_url(url, **{**_OPTIONS, **options})  # type: ignore[arg-type]


def cluster_from_url(url: str, **options: object) -> RedisCluster:
    """A cluster client seeded by one node's URL; it discovers the other nodes and follows MOVED/ASK itself."""
    return RedisCluster.from_url(url, **{**_OPTIONS, **options})  # type: ignore[arg-type]


def stream_redis(settings: Settings) -> AnyRedis:
    """The client for run streams and meta: a cluster client when RUNCAST_REDIS_CLUSTER is set."""
    if settings.redis_cluster:
        return cluster_from_url(settings.redis_url)
    return redis_from_url(settings.redis_url)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)
