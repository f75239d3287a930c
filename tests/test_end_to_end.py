"""Issue 2 end to end: real `runcast worker` and `runcast gateway` processes, a real redis-server, real HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.sse import create_run, read_sse

TEXT = "The quick brown fox jumps over the lazy dog, and  then   rests."
TOKENS = [
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog,",
    " and",
    "  then",
    "   rests.",
]


@pytest.fixture(scope="module")
def deployment(gateway_proc: GatewayProcess, worker_proc: WorkerProcess) -> str:
    return gateway_proc.url


async def test_echo_run_streams_start_one_chunk_per_token_then_complete(deployment: str, http: httpx.AsyncClient):
    run = await create_run(http, deployment, "echo", TEXT)
    events = await read_sse(http, deployment, run["run_id"], run["token"])

    types = [e.event for e in events]
    assert types[0] == "start" and types[-1] == "complete"
    chunks = [e for e in events if e.event == "chunk"]
    assert [c.delta for c in chunks] == TOKENS
    assert chunks[-1].data["data"]["content"] == TEXT
    assert "".join(c.delta for c in chunks) == TEXT
    assert all(e.data["run_id"] == run["run_id"] for e in events)
    ids = [e.id for e in events]
    assert all(ids) and len(set(ids)) == len(ids)

    status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
    assert status["status"] == "completed"
    assert status["last_event_id"] == events[-1].id
    result = (await http.get(f"{run['status_url']}/result", params={"token": run["token"]})).json()
    assert result["content"] == TEXT and result["is_complete"] is True and result["error"] is None


@pytest.mark.parametrize("resume_via", ["header", "query"])
async def test_disconnect_after_k_events_and_resume_gets_exactly_the_rest(
    deployment: str, http: httpx.AsyncClient, resume_via: str
):
    run = await create_run(http, deployment, "echo", TEXT)
    whole = await read_sse(http, deployment, run["run_id"], run["token"])
    total = len(whole)
    for k in sorted({0, 1, 2, total // 2, total - 1, total}):
        first = await read_sse(http, deployment, run["run_id"], run["token"], limit=k)
        last_id = first[-1].id if first else None
        rest = await read_sse(
            http, deployment, run["run_id"], run["token"], last_event_id=last_id, resume_via=resume_via
        )
        assert first + rest == whole, f"resume after {k} events"


async def test_resume_mid_stream_while_the_run_is_live_has_no_gap_or_duplicate(
    deployment: str, http: httpx.AsyncClient
):
    run = await create_run(http, deployment, "echo", " ".join(f"w{i}" for i in range(40)))
    first = await read_sse(http, deployment, run["run_id"], run["token"], limit=5)
    status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
    assert status["status"] == "running"
    rest = await read_sse(http, deployment, run["run_id"], run["token"], last_event_id=first[-1].id)
    whole = await read_sse(http, deployment, run["run_id"], run["token"])
    assert first + rest == whole


async def test_viewer_arriving_after_the_run_finished_gets_the_whole_run(deployment: str, http: httpx.AsyncClient):
    run = await create_run(http, deployment, "echo", TEXT)
    live = await read_sse(http, deployment, run["run_id"], run["token"])
    late = await read_sse(http, deployment, run["run_id"], run["token"])
    assert late == live
    assert "".join(e.delta for e in late if e.event == "chunk") == TEXT


async def test_two_concurrent_viewers_get_identical_sequences(deployment: str, http: httpx.AsyncClient):
    run = await create_run(http, deployment, "echo", TEXT)
    one, two = await asyncio.gather(
        read_sse(http, deployment, run["run_id"], run["token"]),
        read_sse(http, deployment, run["run_id"], run["token"]),
    )
    assert one == two and one[-1].event == "complete"


async def test_first_chunk_reaches_the_client_while_the_run_is_still_running(deployment: str, http: httpx.AsyncClient):
    words = " ".join(f"token{i}" for i in range(60))  # 60 tokens x 20 ms: the run takes over a second
    run = await create_run(http, deployment, "echo", words)
    first_two = await read_sse(http, deployment, run["run_id"], run["token"], limit=2)
    assert [e.event for e in first_two] == ["start", "chunk"]
    status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
    assert status["status"] == "running", "the first chunk must arrive before the run ends"
    assert first_two[1].data["data"]["content"] == "token0"


async def test_resume_after_the_terminal_event_ends_immediately(deployment: str, http: httpx.AsyncClient):
    run = await create_run(http, deployment, "echo", "a b")
    whole = await read_sse(http, deployment, run["run_id"], run["token"])
    rest = await asyncio.wait_for(
        read_sse(http, deployment, run["run_id"], run["token"], last_event_id=whole[-1].id), 5
    )
    assert rest == []


async def test_a_plain_httpx_sse_consumer_gets_only_real_events(deployment: str, http: httpx.AsyncClient):
    """No data-less frame reaches a library that surfaces them (the `retry:` field rides on the first event)."""
    from httpx_sse import aconnect_sse

    run = await create_run(http, deployment, "echo", "a b c")
    url = f"{deployment}/v1/runs/{run['run_id']}/events"
    seen = []
    async with aconnect_sse(http, "GET", url, params={"token": run["token"]}) as source:
        async for sse in source.aiter_sse():
            seen.append(sse)
    assert seen and all(sse.data and sse.id and sse.event for sse in seen)
    assert seen[0].retry == 1000
    assert [sse.event for sse in seen][-1] == "complete"
