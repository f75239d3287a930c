"""`runcast demo`: gateway and worker in one process, on an embedded fakeredis unless a Redis URL is given."""

from __future__ import annotations

import asyncio
import contextlib
import secrets

import uvicorn
from arq.connections import ArqRedis
from arq.worker import Worker
from fastapi import FastAPI
from redis.asyncio import ConnectionPool, Redis

from runcast.gateway.app import create_app
from runcast.shared.redis_client import queue_redis, redis_from_url, stream_redis
from runcast.shared.settings import Settings
from runcast.worker.job import run_agent
from runcast.worker.resilient import ResilientWorker
from runcast.worker.settings import build_state


def fake_clients() -> tuple[Redis, ArqRedis]:
    """A fakeredis server shared by a decoding client (runcast) and a bytes client (arq's queue)."""
    import arq.worker
    import fakeredis
    from fakeredis.aioredis import FakeConnection

    async def _no_server_info(redis: object, log_func: object) -> None:
        """arq logs `INFO` at start; fakeredis has no INFO command and there is no server to describe."""

    arq.worker.log_redis_info = _no_server_info  # type: ignore[assignment]
    server = fakeredis.FakeServer()
    redis = Redis(connection_pool=ConnectionPool(connection_class=FakeConnection, server=server, decode_responses=True))
    queue = ArqRedis(connection_pool=ConnectionPool(connection_class=FakeConnection, server=server))
    return redis, queue


def real_clients(redis_url: str) -> tuple[Redis, ArqRedis]:
    return redis_from_url(redis_url), ArqRedis.from_url(redis_url)


def configured_clients(settings: Settings) -> tuple[Redis, ArqRedis]:
    """Streams on RUNCAST_REDIS_URL (a cluster when RUNCAST_REDIS_CLUSTER is set), the queue on its own URL."""
    return stream_redis(settings), queue_redis(settings)  # type: ignore[return-value]


async def build_embedded(settings: Settings, redis: Redis, queue: ArqRedis) -> tuple[FastAPI, Worker]:
    """A gateway app and an arq worker sharing one process and one Redis."""
    state = await build_state(settings, redis)
    worker = ResilientWorker(
        functions=[run_agent],
        redis_pool=queue,
        queue_name=settings.queue_name,
        ctx={"runcast": state},
        handle_signals=False,
        max_jobs=settings.worker_max_jobs,
        redis_retry_s=settings.redis_retry_s,
    )
    return create_app(settings, redis=redis, queue=queue), worker


async def serve_demo(host: str, port: int, redis_url: str | None) -> None:
    settings = Settings(secret=secrets.token_urlsafe(32), **({"redis_url": redis_url} if redis_url else {}))
    redis, queue = configured_clients(settings) if redis_url else fake_clients()
    app, worker = await build_embedded(settings, redis, queue)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))
    print(
        f"runcast demo on http://{host}:{port}/  (Redis: {redis_url or 'embedded fakeredis, nothing persists'})",
        flush=True,
    )
    worker_task = asyncio.create_task(worker.async_run())
    try:
        await server.serve()
    finally:
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await worker.close()
        await redis.aclose()
