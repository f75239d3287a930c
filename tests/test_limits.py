"""Admission limits on real gateway processes (real Redis): viewer caps (503 + Retry-After), run creation per API
key across gateways (429 + Retry-After), request bodies refused before they are read (413), tokens kept out of the
access log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import websockets

from tests.support.faults import words
from tests.support.ports import free_port
from tests.support.processes import GatewayProcess, Process, WorkerProcess, runcast_env
from tests.support.stack import running_stack

# Fresh keys every session: the rate counts live in Redis (for an hour), and RUNCAST_TEST_REDIS_URL may be reused.
KEY, RATE_KEY, OTHER_RATE_KEY, LOG_KEY = (
    f"{name}-{uuid.uuid4().hex}" for name in ("viewers", "rate", "rate-other", "log")
)
AUTH = {"Authorization": f"Bearer {KEY}"}
RATE_LIMIT, RATE_WINDOW_S = 3, 3600  # a long window: the test cannot straddle a window boundary
LIMITS = {
    "RUNCAST_API_KEYS": f"{KEY},{RATE_KEY},{OTHER_RATE_KEY},{LOG_KEY}",
    "RUNCAST_MAX_VIEWERS_PER_RUN": "2",
    "RUNCAST_MAX_VIEWERS": "3",
    "RUNCAST_CREATE_RATE_LIMIT": str(RATE_LIMIT),
    "RUNCAST_CREATE_RATE_WINDOW_S": str(RATE_WINDOW_S),
    "RUNCAST_MAX_BODY_BYTES": "4096",
}


@pytest.fixture(scope="module")
def limited(module_redis_url: str, worker_proc: WorkerProcess) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(module_redis_url, log_level="info", **LIMITS).start()  # info: the access log is on
    yield proc
    proc.stop()


async def long_run(http: httpx.AsyncClient, base: str) -> dict:
    response = await http.post(f"{base}/v1/runs", json={"agent": "echo", "input": words(150)}, headers=AUTH)
    assert response.status_code == 202, response.text
    return response.json()


@contextlib.asynccontextmanager
async def open_viewer(http: httpx.AsyncClient, base: str, run: dict) -> AsyncIterator[httpx.Response]:
    """An SSE viewer that stays connected (it has read its first event) until the block exits."""
    url = f"{base}/v1/runs/{run['run_id']}/events"
    async with http.stream("GET", url, params={"token": run["token"]}) as response:
        lines = response.aiter_lines()  # kept referenced: a collected iterator would close the connection
        if response.status_code == 200:
            async for line in lines:
                if line.startswith("id:"):
                    break
        yield response
        await lines.aclose()


async def test_viewers_past_the_per_run_and_per_process_caps_get_503_with_retry_after(
    limited: GatewayProcess, http: httpx.AsyncClient
):
    a, b, c = [await long_run(http, limited.url) for _ in range(3)]
    async with contextlib.AsyncExitStack() as stack:
        for run in (a, a):
            assert (await stack.enter_async_context(open_viewer(http, limited.url, run))).status_code == 200
        third = await http.get(f"{limited.url}/v1/runs/{a['run_id']}/events", params={"token": a["token"]})
        assert third.status_code == 503 and third.headers["retry-after"] == "1"
        assert "this run has its maximum of 2" in third.json()["detail"]

        assert (await stack.enter_async_context(open_viewer(http, limited.url, b))).status_code == 200
        fourth = await http.get(f"{limited.url}/v1/runs/{c['run_id']}/events", params={"token": c["token"]})
        assert fourth.status_code == 503 and "this gateway has its maximum of 3" in fourth.json()["detail"]

        ws_url = f"{limited.url.replace('http', 'ws', 1)}/v1/runs/{c['run_id']}/ws?token={c['token']}"
        async with websockets.connect(ws_url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd.code == 1013  # try again later

    await asyncio.sleep(0.2)  # the slots are free again once those viewers have gone
    async with open_viewer(http, limited.url, c) as again:
        assert again.status_code == 200


async def test_run_creation_is_rate_limited_per_api_key_across_gateways(
    limited: GatewayProcess, module_redis_url: str, http: httpx.AsyncClient
):
    """Three creations per key per window, counted in Redis: a second gateway (here in-process, same Redis and
    settings) sees the first one's count."""
    settings = {
        "api_keys": [RATE_KEY, OTHER_RATE_KEY],
        "create_rate_limit": RATE_LIMIT,
        "create_rate_window_s": RATE_WINDOW_S,
    }
    async with running_stack(module_redis_url, worker=False, **settings) as other_gateway:
        body, auth = {"agent": "echo", "input": "hi"}, {"Authorization": f"Bearer {RATE_KEY}"}
        bases = (limited.url, other_gateway.url, limited.url)
        codes = [(await http.post(f"{base}/v1/runs", json=body, headers=auth)).status_code for base in bases]
        assert codes == [202, 202, 202]
        refused = await http.post(f"{other_gateway.url}/v1/runs", json=body, headers=auth)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= RATE_WINDOW_S
        assert f"at most {RATE_LIMIT} runs per {RATE_WINDOW_S} s" in refused.json()["detail"]
        assert (await http.post(f"{limited.url}/v1/runs", json=body, headers=auth)).status_code == 429
        other_key = {"Authorization": f"Bearer {OTHER_RATE_KEY}"}
        assert (await http.post(f"{limited.url}/v1/runs", json=body, headers=other_key)).status_code == 202
        wrong = await http.post(f"{limited.url}/v1/runs", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


async def raw_request(port: int, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a request by hand (headers, then some body, never finishing it) and read the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in body_chunks:
            writer.write(chunk)
        await writer.drain()
        return await asyncio.wait_for(_read_answer(reader), 5)
    finally:
        writer.close()


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """Headers and the body they announce (which may arrive in a later segment than the headers)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    return head + (await reader.readexactly(length) if length else b"")


async def test_a_declared_huge_body_is_refused_before_it_is_sent(limited: GatewayProcess):
    head = (
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer key-one\r\nContent-Length: 100000000\r\n\r\n"
    )
    answer = await raw_request(limited.port, head, [])  # the 100 MB never come: the answer must not wait for them
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"over the 4096-byte limit" in answer


async def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(limited: GatewayProcess):
    head = (
        b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer key-one\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"x" * 2048
    chunks = [b'1c\r\n{"agent": "echo", "input": "\r\n'] + [b"800\r\n" + piece + b"\r\n"] * 3  # ~6 KiB, unfinished
    answer = await raw_request(limited.port, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def test_tokens_never_reach_the_access_log(limited: GatewayProcess, http: httpx.AsyncClient):
    auth = {"Authorization": f"Bearer {LOG_KEY}"}  # each test its own key: the viewer test spends KEY's three
    run = (await http.post(f"{limited.url}/v1/runs", json={"agent": "echo", "input": "a b"}, headers=auth)).json()
    token = run["token"]
    await http.get(f"{limited.url}/v1/runs/{run['run_id']}", params={"token": token})
    await http.get(f"{limited.url}/v1/runs/{run['run_id']}/events", params={"token": token, "last_event_id": "0-0"})
    ws_url = f"{limited.url.replace('http', 'ws', 1)}/v1/runs/{run['run_id']}/ws?token={token}"
    async with websockets.connect(ws_url) as ws:
        async for message in ws:
            if json.loads(message)["event"]["type"] == "complete":
                break
    await asyncio.sleep(0.3)  # let the process flush its log

    log = limited.log()
    assert f"/v1/runs/{run['run_id']}?token=[redacted]" in log, "the access log must still show the request"
    assert "WebSocket" in log
    assert token not in log and token.split(".")[1] not in log


async def test_tokens_are_redacted_under_plain_uvicorn_too(
    module_redis_url: str, limited: GatewayProcess, http: httpx.AsyncClient
):
    """`uvicorn runcast.gateway.app:app` (no `runcast gateway`): the filter is installed when the app is created."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "runcast.gateway.app:app", "--port", str(port), "--log-level", "info"]
    proc = Process(args, runcast_env(module_redis_url)).start()
    try:
        auth = {"Authorization": f"Bearer {LOG_KEY}"}
        run = (await http.post(f"{limited.url}/v1/runs", json={"agent": "echo", "input": "a"}, headers=auth)).json()
        url = f"http://127.0.0.1:{port}/v1/runs/{run['run_id']}"
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            try:
                response = await http.get(url, params={"token": run["token"]})
                break
            except httpx.TransportError:
                assert asyncio.get_running_loop().time() < deadline, proc.log()
                await asyncio.sleep(0.1)
        assert response.status_code == 200
        await asyncio.sleep(0.3)
    finally:
        proc.stop()
    assert f"/v1/runs/{run['run_id']}?token=[redacted]" in proc.log()
    assert run["token"] not in proc.log()
