"""One place that builds Redis clients, so every process uses the same options."""

from __future__ import annotations

from redis.asyncio import Redis


def redis_from_url(url: str, **options: object) -> Redis:
    return Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_keepalive=True,
        **options,  # type: ignore[arg-type]
    )
