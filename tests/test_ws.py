"""The WebSocket tail (`GET /v1/runs/{id}/ws`) on the hub: same events and resume semantics as SSE, close 1000 after
the terminal event, 4xxx close codes for bad input. Real uvicorn on loopback (the in-process stack), real Redis."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from runcast.shared.keys import events_key
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from tests.support.hub import new_run, publish
from tests.support.processes import TEST_SECRET
from tests.support.requirements import require_redis_server
from tests.support.sse import create_run, read_sse
from tests.support.stack import Stack

Message = dict[str, Any]


def ws_url(stack: Stack, run_id: str, token: str, **params: str) -> str:
    query = httpx.QueryParams({"token": token, **params})
    return f"{stack.url.replace('http://', 'ws://')}/v1/runs/{run_id}/ws?{query}"


async def read_ws(
    url: str, *, first_message: Message | None = None, limit: int | None = None
) -> tuple[list[Message], int | None]:
    """Messages received (at most `limit`, then hang up) and the server's close code (None when we hung up)."""
    messages: list[Message] = []
    async with connect(url) as ws:
        if first_message is not None:
            await ws.send(json.dumps(first_message))
        if limit == 0:
            return messages, None
        async for raw in ws:
            messages.append(json.loads(raw))
            if limit is not None and len(messages) >= limit:
                return messages, None
        return messages, ws.close_code


async def drain(ws: ClientConnection) -> list[str | bytes]:
    """Everything the server sends until it closes, whatever the close code."""
    received = []
    try:
        async for raw in ws:
            received.append(raw)
    except ConnectionClosedError:
        pass
    return received


FROM_START: Message = {"last_event_id": None}


async def test_ws_streams_every_event_like_sse_then_closes_1000(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", "one two three four five")
    messages, code = await read_ws(ws_url(stack, run["run_id"], run["token"]), first_message=FROM_START)
    sse = await read_sse(http, stack.url, run["run_id"], run["token"])
    assert code == 1000
    assert [(m["id"], m["event"]) for m in messages] == [(e.id, e.data) for e in sse]
    assert messages[-1]["event"]["type"] == "complete"


async def test_ws_without_a_first_message_streams_from_the_start(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", "quiet client")
    messages, code = await read_ws(ws_url(stack, run["run_id"], run["token"]))
    assert code == 1000
    assert messages[0]["event"]["type"] == "start"


@pytest.mark.parametrize("resume_via", ["first_message", "query"])
async def test_ws_resume_halves_join_to_one_uninterrupted_read(stack: Stack, http: httpx.AsyncClient, resume_via: str):
    run = await create_run(http, stack.url, "echo", " ".join(f"w{i}" for i in range(40)))
    url = ws_url(stack, run["run_id"], run["token"])
    first, _ = await read_ws(url, first_message=FROM_START, limit=5)  # while the run is live
    whole, _ = await read_ws(url, first_message=FROM_START)
    total = len(whole)
    for k in sorted({1, 5, total // 2, total - 1, total}):
        head = first if k == 5 else whole[:k]
        resume = head[-1]["id"]
        if resume_via == "query":
            rest, code = await read_ws(ws_url(stack, run["run_id"], run["token"], last_event_id=resume))
        else:
            rest, code = await read_ws(url, first_message={"last_event_id": resume})
        assert head + rest == whole, f"resume after {k} messages"
        assert code == 1000


async def test_ws_resume_after_trim_sends_a_reset_then_everything_kept(stack: Stack, redis_url: str | None):
    if redis_url is None:
        require_redis_server()  # XTRIM on the real redis-server
    log = StreamLog(stack.redis)
    run_id = await new_run(log)
    sent = await publish(log, run_id, 30)
    await stack.redis.xtrim(events_key(run_id), maxlen=5, approximate=False)
    token = issue_token(TEST_SECRET.encode(), run_id, 60)
    messages, code = await read_ws(ws_url(stack, run_id, token), first_message={"last_event_id": sent[0]})
    assert messages[0] == {
        "id": None,
        "event": {"type": "reset", "data": {"reason": "trimmed", "requested": sent[0], "first_available": sent[-5]}},
    }
    assert [m["id"] for m in messages[1:]] == sent[-5:]
    assert code == 1000


@pytest.mark.parametrize(
    ("first_message", "expected_code"),
    [
        ("not json", 4400),
        ([1, 2], 4400),
        ({"last_event_id": "banana"}, 4400),
        ({"last_event_id": 12}, 4400),
        ({"last_event_id": "99999999999999-0"}, 4400),  # after the run's last event
    ],
)
async def test_ws_bad_resume_points_close_4400_and_stream_nothing(
    stack: Stack, http: httpx.AsyncClient, first_message: Any, expected_code: int
):
    run = await create_run(http, stack.url, "echo", "x")
    await read_sse(http, stack.url, run["run_id"], run["token"])
    async with connect(ws_url(stack, run["run_id"], run["token"])) as ws:
        await ws.send(first_message if isinstance(first_message, str) else json.dumps(first_message))
        received = await drain(ws)
    assert received == []
    assert ws.close_code == expected_code


async def test_ws_needs_the_runs_token(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", "x")
    other = await create_run(http, stack.url, "echo", "y")
    codes = []
    for token in ("", "garbage", other["token"]):
        async with connect(ws_url(stack, run["run_id"], token)) as ws:
            received = await drain(ws)
        assert received == []
        codes.append(ws.close_code)
    assert all(code in (4401, 4403) for code in codes), codes
