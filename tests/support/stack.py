"""An in-process gateway (real uvicorn on a loopback port) and arq worker: real HTTP, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from redis.asyncio import Redis

from runcast.demo import build_embedded, fake_clients, real_clients
from runcast.shared.settings import Settings
from tests.support.ports import free_port
from tests.support.processes import TEST_SECRET


@dataclass
class Stack:
    url: str
    redis: Redis
    settings: Settings
    server: uvicorn.Server


@contextlib.asynccontextmanager
async def running_stack(redis_url: str | None, *, worker: bool = True, **settings: Any) -> AsyncIterator[Stack]:
    """Gateway + worker on `redis_url`, or on fakeredis when it is None."""
    conf = Settings(
        secret=TEST_SECRET,
        scripted_delay_ms=settings.pop("scripted_delay_ms", 5),
        **({"redis_url": redis_url} if redis_url else {}),
        **settings,
    )
    redis, queue = real_clients(redis_url) if redis_url else fake_clients()
    app, arq_worker = await build_embedded(conf, redis, queue)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    server_task = asyncio.create_task(server.serve())
    worker_task = asyncio.create_task(arq_worker.async_run()) if worker else None
    while not server.started:
        if server_task.done():
            server_task.result()
        await asyncio.sleep(0.01)
    try:
        yield Stack(f"http://127.0.0.1:{port}", redis, conf, server)
    finally:
        server.should_exit = True
        if worker_task is not None:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
        # arq's close() cancels jobs still running and gathers them, re-raising their CancelledError.
        with contextlib.suppress(asyncio.CancelledError):
            await arq_worker.close()
        await server_task
        await redis.aclose()
