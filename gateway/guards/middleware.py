"""Pure ASGI middlewares that guard the gateway before a route runs: body size, viewer caps, create rate.

They are ASGI (not `BaseHTTPMiddleware`) so they never buffer a body or a streaming response, and they read the
gateway's state (`app.state.runcast`, built in the lifespan) at request time.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any

from fastapi import HTTPException
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runcast.gateway.guards.auth import bearer
from runcast.gateway.guards.limits import CreateRateLimiter, ViewerLimits, key_identity, retry_after_header

VIEWER_PATH = re.compile(r"^/v1/runs/([^/]{1,64})/(events|ws)$")
CHAT_RESUME_PATH = re.compile(r"^/v1/chat/[^/]+/([^/]{1,128})/stream$")
CHAT_SEND_PATH = re.compile(r"^/v1/chat/[^/]+/?$")
"""`POST /v1/chat/{agent}` creates a run (rate-limited like `POST /v1/runs`) and streams it (a viewer)."""


def viewer_key(scope: Scope) -> str | None:
    """What a streaming request counts as for the viewer caps: its run (SSE/WebSocket), its chat (a chat resume), a
    new run of its own (a chat send); None when it is not a viewer."""
    path, method = scope.get("path", ""), scope.get("method", "GET")
    if scope["type"] not in ("http", "websocket"):
        return None
    if method == "GET" and (match := VIEWER_PATH.match(path) or CHAT_RESUME_PATH.match(path)):
        prefix = "chat:" if match.re is CHAT_RESUME_PATH else ""
        return prefix + match.group(1)
    if scope["type"] == "http" and method == "POST" and CHAT_SEND_PATH.match(path):
        return f"new:{id(scope)}"
    return None


def creates_run(scope: Scope) -> bool:
    path = scope["path"]
    return scope["method"] == "POST" and (path.rstrip("/") == "/v1/runs" or CHAT_SEND_PATH.match(path) is not None)


async def send_json_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


DRAIN_MAX_BYTES = 8 * 1024 * 1024
"""An over-limit body declared up to this size is read and thrown away (never kept) before the 413, because most
HTTP clients only read a response once they have sent their body; bigger ones get the 413 at once."""


async def _discard_body(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


class BodySizeLimit:
    """413 for a body over `max_bytes`: at once from Content-Length, or as soon as a streamed body passes the limit
    (the body is counted as it arrives, never read whole first)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            await send_json_error(send, 400, "bad Content-Length", {"connection": "close"})
            return
        if declared is not None and int(declared) > limit:
            if int(declared) <= DRAIN_MAX_BYTES:  # cheap to swallow: lets an ordinary client read the 413
                await _discard_body(receive)
            await send_json_error(send, 413, f"request body is over the {limit}-byte limit", {"connection": "close"})
            return
        seen = 0

        async def counted_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body is over the {limit}-byte limit")
            return message

        await self.app(scope, counted_receive, send)


class ViewerLimit:
    """Caps open SSE/WebSocket viewers per run and per process: 503 + Retry-After (WebSocket: close 1013)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.limits: ViewerLimits | None = None

    def _limits(self, scope: Scope) -> ViewerLimits:
        if self.limits is None:
            settings = scope["app"].state.runcast.settings
            self.limits = ViewerLimits(per_run=settings.max_viewers_per_run, per_process=settings.max_viewers)
        return self.limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run_id = viewer_key(scope)
        if run_id is None:
            await self.app(scope, receive, send)
            return
        limits = self._limits(scope)
        refused = limits.try_acquire(run_id)
        if refused is not None:
            await self._refuse(scope, receive, send, refused)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limits.release(run_id)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
        if scope["type"] == "http":
            await send_json_error(send, 503, detail, {"retry-after": "1"})
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1013, "reason": detail[:120]})  # 1013: try again later


def _known_key(given: str | None, keys: list[str]) -> bool:
    return given is not None and any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


class CreateRateLimit:
    """`POST /v1/runs` and `POST /v1/chat/{agent}` at most RUNCAST_CREATE_RATE_LIMIT times per API key per window
    (all gateways): else 429. Only when RUNCAST_API_KEYS is set: open creation (development, the demo, benchmarks) is
    not limited."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.limiter: CreateRateLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not creates_run(scope):
            await self.app(scope, receive, send)
            return
        state: Any = scope["app"].state.runcast
        settings = state.settings
        key = bearer(_header(scope, b"authorization"))
        if settings.create_rate_limit == 0 or key is None or not _known_key(key, settings.api_keys):
            await self.app(scope, receive, send)  # no limit, open creation, or no valid key (the route answers 401)
            return
        if self.limiter is None:
            self.limiter = CreateRateLimiter(
                state.redis, limit=settings.create_rate_limit, window_s=settings.create_rate_window_s
            )
        try:
            wait_s = await self.limiter.hit(key_identity(key))
        except RedisError:
            wait_s = None  # fail open: without Redis the route itself answers 503
        if wait_s is not None:
            detail = f"at most {settings.create_rate_limit} runs per {settings.create_rate_window_s} s; slow down"
            await send_json_error(send, 429, detail, {"retry-after": retry_after_header(wait_s)})
            return
        await self.app(scope, receive, send)
