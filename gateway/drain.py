"""Ending SSE streams cleanly when the gateway shuts down (SIGTERM).

sse-starlette 3 notices uvicorn's shutdown by itself; it sets the response's `shutdown_event`, waits up to
`shutdown_grace_period`, then cancels the stream. A cancelled stream is cut off mid-response (the client sees a
broken connection). `until_shutdown` lets the stream instead *return* at the next batch after the event is set, so
the response ends properly (last chunk sent) without a terminal event: the viewer's EventSource reconnects, to
another gateway, with its Last-Event-ID. The check costs nothing per event (no extra task per batch); a stream with
no event during the grace period is still cancelled by sse-starlette, which is just as safe for the viewer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

import anyio

T = TypeVar("T")


async def until_shutdown(shutdown: anyio.Event, source: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        async for item in source:
            yield item
            if shutdown.is_set():
                return
    finally:
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            await aclose()
