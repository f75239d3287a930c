"""The Python client (`runcast.AsyncClient`): streams a run, resumes by itself across server-side disconnects and
outages, surfaces resets, and raises a typed error for every refusal (in-process gateway + worker on the real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from runcast.shared.client import (
    AsyncClient,
    AuthenticationError,
    BadRequest,
    ConflictError,
    GatewayUnavailable,
    PermissionDenied,
    ResetEvent,
    RunNotFound,
    StreamItem,
)
from runcast.shared.ids import entry_key, new_run_id
from runcast.shared.keys import events_key
from runcast.shared.streaming import StreamingEvent
from runcast.shared.tokens import issue_token
from tests.support.ports import free_port
from tests.support.processes import TEST_SECRET
from tests.support.proxy import SeveringProxy
from tests.support.sse import read_sse
from tests.support.stack import Stack, running_stack

TEXT = " ".join(f"word{i}" for i in range(40))


@pytest.fixture
async def slow_stack(redis_url: str | None) -> AsyncIterator[Stack]:
    """Tokens 30 ms apart, so a run is still streaming while the test cuts its connection."""
    async with running_stack(redis_url, scripted_delay_ms=30) as running:
        yield running


@pytest.fixture
async def client(slow_stack: Stack) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(slow_stack.url) as runcast:
        yield runcast


def as_tuples(items: list[StreamItem]) -> list[tuple[str | None, str, dict]]:
    return [(item.id, item.type, item.event.to_dict()) for item in items if isinstance(item.event, StreamingEvent)]


async def test_stream_delivers_every_event_once_in_order_and_stops_after_the_terminal_event(
    client: AsyncClient, http: httpx.AsyncClient, slow_stack: Stack
):
    run = await client.create_run("echo", TEXT, metadata={"purpose": "test"})
    stream = client.stream(run.run_id, run.token)
    items = [item async for item in stream]

    reference = await read_sse(http, slow_stack.url, run.run_id, run.token)
    assert [(i.id, i.type) for i in items] == [(r.id, r.event) for r in reference]
    assert [i.event.to_dict() for i in items] == [r.data for r in reference]
    assert items[0].type == "start" and items[-1].type == "complete"
    entry_id, event = items[1]  # unpacks as (entry_id, StreamingEvent)
    assert entry_id == items[1].id and event.data.delta == "word0"
    assert stream.reconnects == 0 and stream.last_event_id == items[-1].id
    result = await client.result(run.run_id, run.token)
    assert result["content"] == TEXT and result["is_complete"] is True
    assert (await client.status(run.run_id, run.token))["status"] == "completed"


async def test_stream_resumes_after_the_server_cuts_the_connection_with_no_gap_or_duplicate(
    client: AsyncClient, http: httpx.AsyncClient, slow_stack: Stack
):
    run = await client.create_run("echo", TEXT)
    cut_after = {3, 9, 15}
    async with SeveringProxy(httpx.URL(slow_stack.url).port) as proxy, AsyncClient(proxy.url) as via_proxy:
        resumed_from: list[str | None] = []  # the stream's resume point each time it reconnected
        stream = via_proxy.stream(run.run_id, run.token, on_retry=lambda *_: resumed_from.append(stream.last_event_id))
        items: list[StreamItem] = []
        ids_at_cut: list[str] = []
        async for item in stream:
            items.append(item)
            if len(items) in cut_after:
                status = await client.status(run.run_id, run.token)
                assert status["status"] == "running", "the cut must happen while the run is live"
                ids_at_cut.append(item.id)
                proxy.sever()
        requests = list(proxy.requests)

    reference = await read_sse(http, slow_stack.url, run.run_id, run.token)
    assert as_tuples(items) == [(r.id, r.event, r.data) for r in reference]
    assert stream.reconnects == len(cut_after)
    # Each reconnection asked for exactly the events after the last one delivered. (That can be a little past the id
    # at the cut: events already read off the socket before the connection broke are still delivered.)
    resumed_with = [
        line for head in requests[1:] for line in head.decode().lower().splitlines() if "last-event-id" in line
    ]
    assert resumed_with == [f"last-event-id: {entry_id}" for entry_id in resumed_from]
    assert all(entry_key(str(at)) <= entry_key(str(back)) for at, back in zip(ids_at_cut, resumed_from, strict=True))
    assert "".join(i.event.data.delta for i in items if i.type == "chunk") == TEXT


async def test_stream_waits_out_a_gateway_outage_and_resumes(
    client: AsyncClient, http: httpx.AsyncClient, slow_stack: Stack
):
    run = await client.create_run("echo", TEXT)
    async with SeveringProxy(httpx.URL(slow_stack.url).port) as proxy, AsyncClient(proxy.url) as via_proxy:
        stream = via_proxy.stream(run.run_id, run.token, backoff_s=0.05, max_backoff_s=0.2)
        items: list[StreamItem] = []
        async for item in stream:
            items.append(item)
            if len(items) == 4:
                await proxy.down()  # connections refused for a while: the client must back off and retry
                asyncio.get_running_loop().call_later(0.6, lambda: asyncio.ensure_future(proxy.up()))
        await proxy.down()

    reference = await read_sse(http, slow_stack.url, run.run_id, run.token)
    assert as_tuples(items) == [(r.id, r.event, r.data) for r in reference]
    assert stream.connections > 2, "refused attempts are retried, not fatal"


async def test_stream_gives_up_with_gateway_unavailable_after_bounded_retries():
    async with AsyncClient(f"http://127.0.0.1:{free_port()}") as nowhere:
        stream = nowhere.stream(new_run_id(), "token", max_retries=3, backoff_s=0.01)
        with pytest.raises(GatewayUnavailable, match="gave up after 4 failed attempts"):
            async for _ in stream:
                pass
    assert stream.connections == 4


async def test_stream_from_a_last_event_id_gives_exactly_the_rest(client: AsyncClient):
    run = await client.create_run("echo", "one two three four five")
    whole = [item async for item in client.stream(run.run_id, run.token)]
    for k in range(len(whole)):
        rest = [item async for item in client.stream(run.run_id, run.token, last_event_id=whole[k].id)]
        assert whole[: k + 1] + rest == whole


async def test_stream_surfaces_a_reset_when_the_resume_point_was_trimmed(client: AsyncClient, slow_stack: Stack):
    run = await client.create_run("echo", "a b c d e f g h")
    whole = [item async for item in client.stream(run.run_id, run.token)]
    await slow_stack.redis.xtrim(events_key(run.run_id), maxlen=3, approximate=False)

    items = [item async for item in client.stream(run.run_id, run.token, last_event_id=whole[1].id)]
    reset = items[0].event
    assert isinstance(reset, ResetEvent) and items[0].id is None and items[0].type == "reset"
    assert (reset.requested, reset.first_available, reset.reason) == (whole[1].id, whole[-3].id, "trimmed")
    assert items[1:] == whole[-3:]


async def test_refusals_raise_typed_errors_without_retrying(client: AsyncClient):
    run = await client.create_run("echo", "x y")
    other = await client.create_run("echo", "z")

    bad_token = client.stream(run.run_id, run.token + "x")
    with pytest.raises(AuthenticationError) as excinfo:
        [item async for item in bad_token]
    assert excinfo.value.status_code == 401 and bad_token.connections == 1
    with pytest.raises(PermissionDenied):
        [item async for item in client.stream(run.run_id, other.token)]
    unknown = new_run_id()
    with pytest.raises(RunNotFound, match="no such run"):
        [item async for item in client.stream(unknown, issue_token(TEST_SECRET.encode(), unknown, 60))]
    with pytest.raises(BadRequest) as bad_id:
        await client.status("not-a-run-id", run.token)
    assert bad_id.value.status_code == 400
    with pytest.raises(RunNotFound, match="unknown agent"):
        await client.create_run("no-such-agent", "hi")
    with pytest.raises(BadRequest) as too_big:
        await client.create_run("echo", "x" * (64 * 1024 + 1))
    assert too_big.value.status_code == 413


async def test_result_of_a_live_run_is_a_conflict(client: AsyncClient):
    run = await client.create_run("echo", TEXT)
    async for item in client.stream(run.run_id, run.token):
        if item.type == "chunk":
            break
    with pytest.raises(ConflictError):
        await client.result(run.run_id, run.token)


async def test_api_key_is_sent_when_creating_runs(redis_url: str | None):
    async with running_stack(redis_url, api_keys=["k-123"]) as keyed:
        async with AsyncClient(keyed.url) as anonymous:
            with pytest.raises(AuthenticationError, match="API key"):
                await anonymous.create_run("echo", "hi")
        async with AsyncClient(keyed.url, api_key="k-123") as client:
            run = await client.create_run("echo", "hi there")
            items = [item async for item in client.stream(run.run_id, run.token)]
    assert items[-1].type == "complete"


def test_a_url_that_is_not_http_is_refused_up_front():
    with pytest.raises(BadRequest, match="http://host:port"):
        AsyncClient("127.0.0.1:8000")
