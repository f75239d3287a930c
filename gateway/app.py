"""The gateway's FastAPI app. `gateway.app:app` works under plain uvicorn; `create_app` is for tests and the demo."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from fastapi import Depends, FastAPI, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway import routes_events, routes_runs
from gateway.feed import DirectFeed, EventFeed
from gateway.hub import Hub
from gateway.state import GatewayState, get_state
from shared.redis_client import stream_redis
from shared.settings import Settings, get_settings
from shared.streamlog import StreamLog

STATIC_DIR = Path(__file__).parent / "static"
FeedFactory = Callable[[StreamLog], EventFeed]


def feed_for(settings: Settings) -> FeedFactory:
    """The read path RUNCAST_FEED names."""
    if settings.feed == "direct":
        return DirectFeed

    def hub(stream_log: StreamLog) -> EventFeed:
        return Hub(stream_log, queue_size=settings.hub_queue_size, history_size=settings.hub_history_size)

    return hub


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
        arq_pool = queue if queue is not None else await create_pool(RedisSettings.from_dsn(conf.queue_url))
        stream_log = StreamLog(client, maxlen=conf.stream_maxlen, retention_s=conf.retention_s)
        feed = (feed_factory or feed_for(conf))(stream_log)
        app.state.runcast = GatewayState(conf, client, stream_log, arq_pool, feed, secret)
        try:
            yield
        finally:
            await feed.close()
            if queue is None:
                await arq_pool.aclose()
            if own_redis:
                await client.aclose()

    app = FastAPI(
        title="runcast gateway",
        summary="Durable, resumable streams of AI agent runs over SSE and WebSocket.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.include_router(routes_runs.router)
    app.include_router(routes_events.router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses={503: {"description": "Redis unreachable"}})
    async def readyz(state: Annotated[GatewayState, Depends(get_state)]) -> JSONResponse:
        try:
            await state.redis.ping()
        except (RedisError, OSError) as exc:
            return JSONResponse({"status": "not ready", "detail": f"redis: {exc}"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
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


app = create_app()
