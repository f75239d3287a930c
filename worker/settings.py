"""arq WorkerSettings: `arq runcast.worker.settings.WorkerSettings` or `runcast worker`."""

from __future__ import annotations

import logging
from typing import Any

from arq.connections import RedisSettings
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from runcast.shared.keys import AGENTS_KEY
from runcast.shared.redis_client import stream_redis
from runcast.shared.resilience import TRANSIENT_ERRORS
from runcast.shared.settings import Settings, get_settings
from runcast.worker.agents import load_registry
from runcast.worker.durable import DurableStreamLog
from runcast.worker.job import WorkerState, run_agent
from runcast.worker.providers.base import ModelProvider
from runcast.worker.providers.scripted import ScriptedProvider

log = logging.getLogger("arq.worker")


def build_provider(settings: Settings) -> ModelProvider:
    if settings.model_provider == "scripted":
        return ScriptedProvider(delay_ms=settings.scripted_delay_ms)
    from runcast.worker.providers.openai import OpenAIProvider

    return OpenAIProvider.from_settings(settings)


async def build_state(settings: Settings, redis: Any = None) -> WorkerState:
    redis = redis if redis is not None else stream_redis(settings)
    registry = load_registry(settings.agents)
    await redis.hset(AGENTS_KEY, mapping={name: agent.description for name, agent in registry.items()})
    stream_log = DurableStreamLog(
        redis, maxlen=settings.stream_maxlen, retention_s=settings.retention_s, retry_s=settings.redis_retry_s
    )
    return WorkerState(
        stream_log=stream_log,
        registry=registry,
        provider=build_provider(settings),
        chunking=settings.stream_config(),
        settings=settings,
    )


async def startup(ctx: dict[str, Any]) -> None:
    if "runcast" not in ctx:
        ctx["runcast"] = await build_state(get_settings())
    log.info("runcast worker ready: agents %s", ", ".join(sorted(ctx["runcast"].registry)))


async def shutdown(ctx: dict[str, Any]) -> None:
    state: WorkerState | None = ctx.get("runcast")
    if state is not None:
        await state.runs.aclose()
        close = getattr(state.provider, "aclose", None)
        if close is not None:
            await close()
        await state.stream_log.redis.aclose()


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection, retried with backoff so the worker's poll loop survives a Redis restart."""
    conf = RedisSettings.from_dsn(settings.queue_url)
    conf.retry_on_error = list(TRANSIENT_ERRORS)  # type: ignore[arg-type]
    conf.retry = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=max(int(settings.redis_retry_s), 1))
    return conf


class WorkerSettings:
    functions = [run_agent]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = arq_redis_settings(get_settings())
    queue_name = get_settings().queue_name
    max_jobs = get_settings().worker_max_jobs
    job_timeout = 3600
    keep_result = 60
    allow_abort_jobs = True
    job_completion_wait = get_settings().job_completion_wait_s  # SIGTERM: running agents get this long to finish
