"""Retention and trimming (real Redis, real HTTP): a finished run's keys expire after RUNCAST_RETENTION_S and it is
then a 404; a resume point older than the oldest entry kept gets the `reset` event of SPEC §6 first, then exactly
what is still kept — never a silent gap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from runcast.shared.keys import events_key, heartbeat_key, meta_key
from tests.support.faults import stored_log, words
from tests.support.redis_server import RedisServer
from tests.support.requirements import real_redis_server
from tests.support.sse import create_run, read_sse
from tests.support.stack import Stack, running_stack

pytestmark = real_redis_server

RETENTION_S, MAXLEN = 1, 8


@pytest.fixture(scope="module")
def small_nodes_redis() -> Iterator[RedisServer]:
    """`XADD MAXLEN ~` trims whole radix-tree nodes: small nodes make the approximate cap bite on a short run."""
    server = RedisServer(extra=["--stream-node-max-entries", "4"]).start()
    yield server
    server.cleanup()


@pytest.fixture
async def stack(small_nodes_redis: RedisServer) -> AsyncIterator[Stack]:
    async with running_stack(small_nodes_redis.url, retention_s=RETENTION_S, stream_maxlen=MAXLEN) as running:
        yield running


async def test_a_finished_runs_keys_expire_after_retention_and_it_is_then_404(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", "short lived")
    events = await read_sse(http, stack.url, run["run_id"], run["token"])
    assert events[-1].event == "complete"
    redis: Redis = stack.redis
    for key in (events_key(run["run_id"]), meta_key(run["run_id"])):
        assert 0 < await redis.pttl(key) <= RETENTION_S * 1000
    assert not await redis.exists(heartbeat_key(run["run_id"]))

    await asyncio.sleep(RETENTION_S + 0.5)

    assert not await redis.exists(events_key(run["run_id"]), meta_key(run["run_id"]))
    for path in ("", "/events", "/result"):
        response = await http.get(f"{run['status_url']}{path}", params={"token": run["token"]})
        assert response.status_code == 404 and "expired" in response.json()["detail"]
    ws_url = f"{run['ws_url']}?token={run['token']}"
    async with websockets.connect(ws_url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd.code == 4404


async def test_resume_from_a_trimmed_id_gets_reset_then_everything_still_kept(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", words(60))
    early = await read_sse(http, stack.url, run["run_id"], run["token"], limit=2)  # a viewer that left early
    whole_live = await read_sse(http, stack.url, run["run_id"], run["token"])
    kept = await stored_log(stack.settings.redis_url, run["run_id"])
    assert len(kept) < 30, "the stream was not trimmed; the test would prove nothing"
    assert kept[-1][1] == "complete"

    resumed = await read_sse(http, stack.url, run["run_id"], run["token"], last_event_id=early[-1].id)

    reset, rest = resumed[0], resumed[1:]
    assert reset.event == "reset" and reset.id is None
    assert reset.data == {"reason": "trimmed", "requested": early[-1].id, "first_available": kept[0][0]}
    assert [(r.id, r.event, r.data) for r in rest] == kept
    assert whole_live[-1].id == kept[-1][0]


async def test_a_new_viewer_of_a_trimmed_run_is_told_too(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", words(60))
    await read_sse(http, stack.url, run["run_id"], run["token"])
    kept = await stored_log(stack.settings.redis_url, run["run_id"])

    fresh = await read_sse(http, stack.url, run["run_id"], run["token"])

    assert fresh[0].event == "reset" and fresh[0].data["first_available"] == kept[0][0]
    assert [r.id for r in fresh[1:]] == [entry_id for entry_id, _, _ in kept]


async def test_websocket_resume_from_a_trimmed_id_gets_reset_first(stack: Stack, http: httpx.AsyncClient):
    run = await create_run(http, stack.url, "echo", words(60))
    early = await read_sse(http, stack.url, run["run_id"], run["token"], limit=1)
    await read_sse(http, stack.url, run["run_id"], run["token"])
    kept = await stored_log(stack.settings.redis_url, run["run_id"])

    async with websockets.connect(f"{run['ws_url']}?token={run['token']}") as ws:
        await ws.send(json.dumps({"last_event_id": early[0].id}))
        messages = [json.loads(m) async for m in ws]

    assert messages[0] == {
        "id": None,
        "event": {
            "type": "reset",
            "data": {"reason": "trimmed", "requested": early[0].id, "first_available": kept[0][0]},
        },
    }
    assert [m["id"] for m in messages[1:]] == [entry_id for entry_id, _, _ in kept]
