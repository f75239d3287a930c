"""Tail a run: Server-Sent Events and WebSocket, both resumable from a stream entry id."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, WebSocket, WebSocketDisconnect

from runcast.gateway import metrics
from runcast.gateway.guards.auth import readable_run, resume_id, valid_run_id
from runcast.gateway.routes.runs import load_meta
from runcast.gateway.schemas import READ_ERRORS, error_responses
from runcast.gateway.state import GatewayState, get_state
from runcast.gateway.wire.direct import SERVER_SEND, DirectSink
from runcast.gateway.wire.frames import sse_live, sse_parts, sse_reset_frame, ws_message, ws_reset_message
from runcast.gateway.wire.outlet import WRITE_BYTES, Outlet, ViewerStalled, wait_writable, ws_outlet
from runcast.gateway.wire.sse_response import SSEResponse, open_streams
from runcast.shared.ids import START_ID, BadEntryId, entry_key, parse_entry_id
from runcast.shared.streamlog import Reset

router = APIRouter(prefix="/v1", tags=["events"])

WS_FIRST_MESSAGE_WAIT_S = 1.0
"""How long the WebSocket waits for an optional `{"last_event_id": ...}` before streaming from the start."""

WS_STALLED = 1013
"""Close code for a WebSocket viewer that took nothing for RUNCAST_VIEWER_STALL_S: "try again later" (resume with
`last_event_id`); clients already retry on it (it is also the viewer cap's code)."""
WS_STALLED_REASON = "viewer stalled: reconnect with last_event_id"
WS_CLOSE_GRACE_S = 5.0
"""How long the close frame of a stalled WebSocket may wait to go out before the connection is aborted."""


def start_point(meta: dict[str, str], requested: str | None) -> str:
    """Where to start reading; a resume id past the run's last event can only be a client's mistake."""
    if requested is None:
        return START_ID
    last = meta.get("last_event_id") or START_ID
    if entry_key(requested) > entry_key(last):
        raise HTTPException(400, f"Last-Event-ID {requested} is after this run's last event ({last})")
    return requested


async def sse_stream(
    state: GatewayState, run_id: str, after_id: str, sink: DirectSink | None = None
) -> AsyncIterator[bytes | list[bytes]]:
    """Body writes of at most `WRITE_BYTES` (whole frames, as the cached frames themselves) per batch, so a long
    backlog is never one big write (the response sends each once the connection can take it). Closing this iterator
    closes the feed's at once (the hub unsubscribes). With a `sink`, the hub writes live batches to the connection
    itself; this yields what the response must send."""
    async with aclosing(state.feed.subscribe(run_id, after_id, sink=sink)) as batches:
        async for batch in batches:
            if isinstance(batch, Reset):
                yield sse_reset_frame(batch)
            else:
                for part in sse_parts(batch, WRITE_BYTES):
                    yield part  # the run's cached frames: written as they are, shared by every viewer


@router.get(
    "/runs/{run_id}/events",
    name="run_events",
    summary="Follow a run (Server-Sent Events)",
    response_class=SSEResponse,
    status_code=200,
    responses={
        200: {
            "description": "one SSE event per stream entry: `id:` the entry id, `event:` its type, `data:` the event",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **READ_ERRORS,
        **error_responses((503, "Redis unreachable, or a viewer limit reached: retry after `Retry-After`")),
    },
    openapi_extra={
        "parameters": [
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "resume after this event id (what browsers' EventSource sends when it reconnects)",
                "schema": {"type": "string", "maxLength": 64},
            }
        ]
    },
)
async def run_events(
    request: Request,
    run_id: Annotated[str, Depends(readable_run)],
    state: Annotated[GatewayState, Depends(get_state)],
    last_event_id: Annotated[str | None, Depends(resume_id)],
) -> SSEResponse:
    """The run's events from the start, or after `Last-Event-ID` (header) / `last_event_id` (query), then live until
    the terminal event (`complete` or `error`), after which the response ends. `: ping` comments keep an idle
    connection open (RUNCAST_SSE_PING_S). A resume id older than anything kept gets an `event: reset` first."""
    meta = await load_meta(state, run_id)
    after_id = start_point(meta, last_event_id)
    sink = DirectSink(sse_live)  # the wire format (as sse_batch); another format brings its own encode
    return SSEResponse(
        sse_stream(state, run_id, after_id, sink),
        ping_s=state.settings.sse_ping_s,
        streams=open_streams(request.app),
        sink=sink,
        stall_s=state.settings.viewer_stall_s,
    )


def _ws_close_code(status: int) -> int:
    """HTTP-like failures before streaming close the socket with 4000 + the HTTP status (4400, 4401, ...)."""
    return 4000 + status


async def _ws_resume_id(websocket: WebSocket) -> str | None:
    """The resume point from `?last_event_id=` or the optional first message `{"last_event_id": "..."}`."""
    query_value = websocket.query_params.get("last_event_id")
    if query_value:
        return query_value
    try:
        frame = await asyncio.wait_for(websocket.receive(), WS_FIRST_MESSAGE_WAIT_S)
    except TimeoutError:
        return None
    if frame["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(frame.get("code", 1000))
    text = frame.get("text")
    if text is None:  # a binary frame
        raise HTTPException(400, 'first message must be a text frame: JSON like {"last_event_id": "<id>"}')
    try:
        message = json.loads(text)
    except ValueError:
        raise HTTPException(400, 'first message must be JSON like {"last_event_id": "<id>"}') from None
    if not isinstance(message, dict):
        raise HTTPException(400, "first message must be a JSON object")
    value = message.get("last_event_id")
    if value is not None and not isinstance(value, str):
        raise HTTPException(400, "last_event_id must be a string")
    return value or None


@router.websocket("/runs/{run_id}/ws", name="run_ws")
async def run_ws(websocket: WebSocket, run_id: str) -> None:
    state: GatewayState = websocket.app.state.runcast
    await websocket.accept()
    try:
        await valid_run_id(run_id)
        await readable_run(run_id, state, websocket.query_params.get("token"), websocket.headers.get("authorization"))
        requested = await _ws_resume_id(websocket)
        if requested is not None:
            try:
                parse_entry_id(requested)
            except BadEntryId as exc:
                raise HTTPException(400, f"bad last_event_id: {exc}") from None
        after_id = start_point(await load_meta(state, run_id), requested)
    except HTTPException as exc:
        await websocket.close(_ws_close_code(exc.status_code), str(exc.detail)[:120])
        return
    except WebSocketDisconnect:
        return
    outlet = ws_outlet(websocket.scope.get(SERVER_SEND))
    stall_s = state.settings.viewer_stall_s
    sender = asyncio.create_task(_ws_send(websocket, state, run_id, after_id, outlet, stall_s))
    receiver = asyncio.create_task(_ws_drain(websocket))
    done, pending = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if sender in done and sender.exception() is None:
        await websocket.close(1000)
    elif sender in done and isinstance(sender.exception(), ViewerStalled):
        await _ws_close_stalled(websocket, outlet)


async def _ws_send(
    websocket: WebSocket, state: GatewayState, run_id: str, after_id: str, outlet: Outlet | None, stall_s: float
) -> None:
    """One message per entry, each sent once the connection can take it (`wire/outlet.py`): the next batch (a log
    read, say) is only asked for once the last one has left. ViewerStalled when the client took nothing for
    `stall_s`."""
    async with aclosing(state.feed.subscribe(run_id, after_id)) as batches:
        async for batch in batches:
            if isinstance(batch, Reset):
                if outlet is not None:
                    await wait_writable(outlet, stall_s)
                await websocket.send_text(ws_reset_message(batch))
                continue
            for entry in batch:
                if outlet is not None:
                    await wait_writable(outlet, stall_s)
                await websocket.send_text(ws_message(entry))


async def _ws_close_stalled(websocket: WebSocket, outlet: Outlet | None) -> None:
    """Close 1013 with a reason once the close frame can go out, within WS_CLOSE_GRACE_S; else abort the connection
    (the client sees an abnormal closure). Either way the client resumes with `last_event_id` and the gateway keeps
    nothing of this viewer."""
    metrics.VIEWER_STALLS.inc()
    try:
        async with asyncio.timeout(WS_CLOSE_GRACE_S):
            await websocket.close(WS_STALLED, WS_STALLED_REASON)
    except Exception:  # the close frame could not go out in time (or the client is gone meanwhile)
        if outlet is not None:
            outlet.abort()


async def _ws_drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends after the first message, so a disconnect is noticed."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
