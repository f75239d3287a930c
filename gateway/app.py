"""The gateway's FastAPI app. `runcast.gateway.app:app` works under plain uvicorn; `create_app` is for tests and
the demo."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

from arq.connections import ArqRedis
from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.types import Receive, Scope, Send

from runcast.gateway.conversations import ConversationBusy, conversation_busy
from runcast.gateway.guards.middleware import BodySizeLimit, CreateRateLimit, ViewerLimit
from runcast.gateway.guards.redact import install_token_redaction
from runcast.gateway.hub.fanout import Hub
from runcast.gateway.hub.feed import DirectFeed, EventFeed
from runcast.gateway.routes import chat, conversations, events, runs
from runcast.gateway.schemas import Health, Readiness
from runcast.gateway.state import GatewayState, get_state
from runcast.gateway.sweeper import LostRunSweeper
from runcast.gateway.wire.direct import SERVER_SEND
from runcast.shared.redis_client import queue_redis, stream_redis
from runcast.shared.resilience import STORE_REFUSALS, describe
from runcast.shared.sentinel_pool import PrimaryWatch
from runcast.shared.settings import Settings, get_settings
from runcast.shared.streamlog import StreamLog

STATIC_DIR = Path(__file__).parent / "static"
FeedFactory = Callable[[StreamLog], EventFeed]


class GatewayApp(FastAPI):
    """FastAPI, plus the server's own `send` kept in each HTTP and WebSocket scope (`wire.direct.SERVER_SEND`): what
    lets the hub write a live SSE viewer's frames to its connection itself (`runcast.gateway.wire.direct`), and a
    viewer's response see how much its connection holds unsent (`runcast.gateway.wire.outlet`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[SERVER_SEND] = send
        await super().__call__(scope, receive, send)


def feed_for(settings: Settings) -> FeedFactory:
    """The read path RUNCAST_FEED names."""
    if settings.feed == "direct":
        return partial(DirectFeed, retry_s=settings.redis_retry_s)

    def hub(stream_log: StreamLog) -> EventFeed:
        return Hub(stream_log, queue_size=settings.hub_queue_size, history_size=settings.hub_history_size)

    return hub


def tune_gc(gen0: int) -> None:
    """Fewer garbage collections for a process whose heap is mostly long-lived: the hub keeps each followed run's
    last `hub_history_size` entries, hundreds of thousands of small tracked objects that every older-generation
    collection walks. Profiled at 200 runs x 1 viewer x 50 events/s, the collector took ~15 % of the gateway's CPU
    with Python's defaults (a young collection every 700 allocations, and a full walk every few hundred of those).
    `gc.freeze()` takes what start-up allocated out of every collection; a larger young threshold makes all of them
    rarer (the older thresholds count young collections, so they scale with it). Reference cycles are still found;
    only later."""
    gc.freeze()
    if gen0 > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0, gen1, gen2)


def create_app(
    settings: Settings | None = None,
    *,
    redis: Redis | None = None,
    queue: ArqRedis | None = None,
    feed_factory: FeedFactory | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conf = settings or get_settings()
        secret = conf.secret_bytes()  # refuse to start without RUNCAST_SECRET
        own_redis = redis is None
        client = redis if redis is not None else stream_redis(conf)
        arq_pool = queue if queue is not None else queue_redis(conf)  # connects lazily: /readyz tells when ready
        stream_log = StreamLog(client, maxlen=conf.stream_maxlen, retention_s=conf.retention_s)
        feed = (feed_factory or feed_for(conf))(stream_log)
        app.state.runcast = GatewayState(conf, client, stream_log, arq_pool, feed, secret)
        sweeper = LostRunSweeper(stream_log, interval_s=conf.sweep_every_s).start()
        watch = PrimaryWatch([client, arq_pool]).start()  # Sentinel only: leave a demoted primary promptly
        tune_gc(conf.gc_gen0)
        try:
            yield
        finally:
            await watch.stop()
            await sweeper.stop()
            await feed.close()
            if queue is None:
                await arq_pool.aclose()
            if own_redis:
                await client.aclose()

    app = GatewayApp(
        title="runcast gateway",
        summary="Durable, resumable streams of AI agent runs over SSE and WebSocket.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(runs.router)
    app.include_router(events.router)
    app.include_router(conversations.router)
    app.include_router(chat.router)
    install_guards(app, settings)

    @app.get(
        "/healthz", tags=["ops"], summary="Liveness", response_description="the process is up", response_model=Health
    )
    async def healthz() -> dict[str, str]:
        """The process is up (no dependency is checked)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        summary="Readiness",
        response_description="Redis answers",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Redis unreachable: take this gateway out of rotation"}},
    )
    async def readyz(state: Annotated[GatewayState, Depends(get_state)]) -> JSONResponse:
        """Ready when Redis answers a PING (what load balancers and compose health checks ask)."""
        try:
            await state.redis.ping()
        except (RedisError, OSError) as exc:
            return JSONResponse({"status": "not ready", "detail": f"redis: {exc}"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    )
    async def metrics() -> Response:
        """Viewers, deliveries, hub readers and Redis errors of this gateway process. Keep it on an internal
        network: it needs no token."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def demo_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/runcast.js", include_in_schema=False)
    async def runcast_js() -> FileResponse:
        """The browser client (ES module): `import { subscribe } from "/runcast.js"`."""
        return FileResponse(STATIC_DIR / "runcast.js", media_type="text/javascript")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app


def install_guards(app: FastAPI, settings: Settings | None) -> None:
    """Limits, Redis-outage answers and token redaction (README "Reliability" and "Security")."""
    app.add_middleware(ViewerLimit)
    app.add_middleware(CreateRateLimit)
    conf = settings or get_settings()
    app.add_middleware(BodySizeLimit, max_bytes=conf.max_body_bytes)
    if conf.cors_origins:  # outermost, so refusals (401, 413, 429, ...) reach a cross-origin page readable too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=conf.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["x-runcast-run-id", "x-runcast-run-token", "x-vercel-ai-ui-message-stream"],
            max_age=600,
        )
    app.add_exception_handler(RedisError, redis_unavailable)
    app.add_exception_handler(UnicodeEncodeError, not_unicode)
    app.add_exception_handler(ConversationBusy, conversation_busy)
    install_token_redaction()


async def redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis is down, restarting, or refusing writes: a retryable 503, not a 500 (clients and load balancers retry).

    A refusal (OOM at maxmemory, MISCONF) says so in words, since an operator has to act (give Redis memory, fix its
    disk) and it lasts longer than a restart: Retry-After 5 instead of 1. Reads keep working meanwhile."""
    if isinstance(exc, STORE_REFUSALS):
        detail, retry_after = f"{describe(exc)}: the event store takes no new writes; retry later", "5"
    else:
        detail, retry_after = f"the event store is unavailable ({type(exc).__name__}); retry shortly", "1"
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": retry_after})


async def not_unicode(request: Request, exc: Exception) -> JSONResponse:
    """JSON may carry lone surrogates (`"\\ud800"`) that are not Unicode text and cannot be stored: the client's
    mistake, so a 422 that says so rather than a 500 when the text is first encoded."""
    return JSONResponse(
        {"detail": "text fields must be valid Unicode (a lone surrogate such as \\ud800 is not)"}, status_code=422
    )


app = create_app()
