"""`runcast.Client`, the blocking client: the same stream as the async one, resuming by itself after a cut, and typed
errors. It runs in a thread here because the gateway under test runs on this test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from runcast import AuthenticationError, Client, RunNotFound, StreamItem
from runcast.shared.ids import new_run_id
from tests.support.proxy import SeveringProxy
from tests.support.sse import read_sse
from tests.support.stack import Stack, running_stack

TEXT = " ".join(f"word{i}" for i in range(30))


@pytest.fixture
async def slow_stack(redis_url: str | None) -> AsyncIterator[Stack]:
    async with running_stack(redis_url, scripted_delay_ms=30) as running:
        yield running


async def test_sync_client_streams_a_run_exactly_as_sse_readers_see_it(slow_stack: Stack, http: httpx.AsyncClient):
    def use_client() -> tuple[str, str, list[StreamItem], dict, list[dict[str, str]]]:
        with Client(slow_stack.url) as client:
            run = client.create_run("echo", TEXT)
            items = list(client.stream(run.run_id, run.token))
            return run.run_id, run.token, items, client.result(run.run_id, run.token), client.agents()

    run_id, token, items, result, agents = await asyncio.to_thread(use_client)
    reference = await read_sse(http, slow_stack.url, run_id, token)
    assert [(i.id, i.type, i.event.to_dict()) for i in items] == [(r.id, r.event, r.data) for r in reference]
    assert result["content"] == TEXT
    assert {agent["name"] for agent in agents} >= {"echo", "demo", "triage"}


async def test_sync_client_resumes_after_the_connection_is_cut(slow_stack: Stack, http: httpx.AsyncClient):
    loop = asyncio.get_running_loop()
    async with SeveringProxy(httpx.URL(slow_stack.url).port) as proxy:

        def use_client() -> tuple[str, str, list[StreamItem], int]:
            with Client(proxy.url) as client:
                run = client.create_run("echo", TEXT)
                stream = client.stream(run.run_id, run.token)
                items = []
                for item in stream:
                    items.append(item)
                    if len(items) in (4, 12):
                        asyncio.run_coroutine_threadsafe(_sever(proxy), loop).result()
                return run.run_id, run.token, items, stream.reconnects

        run_id, token, items, reconnects = await asyncio.to_thread(use_client)
    reference = await read_sse(http, slow_stack.url, run_id, token)
    assert [i.id for i in items] == [r.id for r in reference]
    assert reconnects == 2


async def _sever(proxy: SeveringProxy) -> None:
    proxy.sever()


async def test_sync_client_raises_typed_errors(slow_stack: Stack):
    def unknown_run() -> None:
        with Client(slow_stack.url) as client:
            client.status(new_run_id(), "not-a-token")

    with pytest.raises(AuthenticationError):
        await asyncio.to_thread(unknown_run)

    def unknown_agent() -> None:
        with Client(slow_stack.url) as client:
            client.create_run("no-such-agent", "x")

    with pytest.raises(RunNotFound):
        await asyncio.to_thread(unknown_agent)


def test_sync_client_refuses_to_run_inside_an_event_loop():
    async def inside() -> None:
        Client("http://127.0.0.1:1")

    with pytest.raises(RuntimeError, match="AsyncClient"):
        asyncio.run(inside())
