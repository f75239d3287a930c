"""AI SDK chat streams go through the gateway's fan-out hub like SSE viewers: a real `runcast gateway` process on a
real Redis, a run the test publishes itself, many tabs resuming the same chat. Redis stream reads do not grow with
the number of tabs, and every tab receives the same bytes."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from runcast.shared.conversations import ConversationStore, run_meta_fields
from runcast.shared.ids import new_run_id
from runcast.shared.streaming import StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.shared.streamlog import StreamLog
from tests.support.hub import parse_metrics, publish, server_stream_reads
from tests.support.processes import GatewayProcess


@pytest.fixture
async def tabs_client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
        yield client


async def subscribers(http: httpx.AsyncClient, base: str) -> float:
    sample = parse_metrics((await http.get(f"{base}/metrics")).text)
    return sample.get(("runcast_hub_subscribers", ()), 0.0)


async def read_tab(http: httpx.AsyncClient, url: str) -> bytes:
    async with http.stream("GET", url) as response:
        assert response.status_code == 200 and response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        return b"".join([chunk async for chunk in response.aiter_raw()])


async def _tabs_of_one_chat(base: str, log: StreamLog, redis: Redis, http: httpx.AsyncClient, tabs: int) -> int:
    """`tabs` resumes of one chat whose run the test publishes; the server's stream reads meanwhile."""
    chat, run_id = f"chat-{uuid.uuid4().hex[:12]}", new_run_id()
    await log.create_run(run_id, "echo", "scripted by the test", extra=run_meta_fields(chat))
    store = ConversationStore(redis, ttl_s=600, max_messages=10)
    assert (await store.claim(chat, run_id, expected_holder=None, expected_length=0)).ok
    await log.append(run_id, StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "test"), run_id=run_id))
    await publish(log, run_id, 20, end=False)
    before = await server_stream_reads(redis)
    baseline = await subscribers(http, base)
    url = f"{base}/v1/chat/echo/{chat}/stream"
    reads = [asyncio.create_task(read_tab(http, url)) for _ in range(tabs)]
    for _ in range(1000):  # every tab subscribed before the run goes on
        if await subscribers(http, base) >= baseline + tabs:
            break
        await asyncio.sleep(0.02)
    await publish(log, run_id, 60, pause_s=0.005)
    bodies = await asyncio.wait_for(asyncio.gather(*reads), 30)
    assert len(set(bodies)) == 1, "every tab must receive the same stream"
    frames = [f for f in bodies[0].decode().split("\n\n") if f.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    deltas = [json.loads(f[6:])["delta"] for f in frames[:-1] if '"text-delta"' in f]
    assert "".join(deltas) == "".join(f" w{i}" for i in range(20)) + "".join(f" w{i}" for i in range(60))
    return await server_stream_reads(redis) - before


async def test_chat_tabs_share_the_hubs_reads_however_many_they_are(
    gateway_proc: GatewayProcess, log: StreamLog, redis: Redis, tabs_client: httpx.AsyncClient
):
    few = await _tabs_of_one_chat(gateway_proc.url, log, redis, tabs_client, 5)
    many = await _tabs_of_one_chat(gateway_proc.url, log, redis, tabs_client, 100)
    print(f"Redis stream reads: 5 tabs {few}, 100 tabs {many}")
    assert many <= few * 1.5 + 5, "20x the tabs must not mean more Redis reads"
    assert many < 100
