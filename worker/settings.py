"""arq WorkerSettings: `arq runcast.worker.settings.WorkerSettings` or `runcast worker`."""

from __future__ import annotations

import logging
from typing import Any

from arq.connections import RedisSettings

from runcast.shared.keys import AGENTS_KEY
from runcast.shared.redis_client import queue_retry, stream_redis
from runcast.shared.sentinel import SentinelUrl
from runcast.shared.sentinel_pool import PrimaryWatch
from runcast.shared.settings import Settings, get_settings
from runcast.worker.agents import load_registry
from runcast.worker.conversation import conversation_store
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
        conversations=conversation_store(redis, settings),
        settings=settings,
    )


async def startup(ctx: dict[str, Any]) -> None:
    if "runcast" not in ctx:
        ctx["runcast"] = await build_state(get_settings())
    # With Sentinel: close connections left open to a demoted primary, and have the append writer check its runs'
    # logs for acknowledged entries the promoted replica lacks (a no-op for plain Redis).
    state: WorkerState = ctx["runcast"]
    ctx["runcast_sentinel_watch"] = PrimaryWatch(
        [state.stream_log.redis, ctx.get("redis")], on_switch=lambda: state.runs.writer.suspect_failover()
    ).start()
    log.info("runcast worker ready: agents %s", ", ".join(sorted(ctx["runcast"].registry)))


async def shutdown(ctx: dict[str, Any]) -> None:
    watch: PrimaryWatch | None = ctx.get("runcast_sentinel_watch")
    if watch is not None:
        await watch.stop()
    state: WorkerState | None = ctx.get("runcast")
    if state is not None:
        await state.runs.aclose()
        close = getattr(state.provider, "aclose", None)
        if close is not None:
            await close()
        await state.stream_log.redis.aclose()


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection for plain `arq runcast.worker.settings.WorkerSettings`, retried with backoff so the worker's
    poll loop survives a Redis restart. A Sentinel URL becomes arq's own Sentinel settings (arq does not pass its
    retry options to a Sentinel pool; `runcast worker` uses `runcast.shared.redis_client.queue_redis`, which does)."""
    target = SentinelUrl.parse(settings.queue_url)
    if target is None:
        conf = RedisSettings.from_dsn(settings.queue_url)
    else:
        conf = RedisSettings(
            host=target.sentinels,
            sentinel=True,
            sentinel_master=target.service,
            database=target.db,
            username=target.username,
            password=target.password,
        )
    retry = queue_retry(settings)
    conf.retry_on_error = retry["retry_on_error"]
    conf.retry = retry["retry"]
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
