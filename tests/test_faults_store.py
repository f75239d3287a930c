"""Redis refusing writes (memory full: OOM at maxmemory with noeviction; failing saves: MISCONF) kills no runcast
process and loses or duplicates no event (issue #15 item 1). Real redis-servers, real gateway and worker processes:
- a refusal shorter than RUNCAST_REDIS_RETRY_S: every run completes, every viewer gets every event exactly once,
  creates meanwhile get a clear 503 (or 202, and then the run completes), runs accepted but not started start when
  writes are taken again, reads keep working;
- longer than RUNCAST_REDIS_RETRY_S: the running run ends with ERROR `store_unavailable` once Redis takes writes,
  every viewer sees exactly one terminal event, and the next run streams cleanly;
- the writer (unit, real Redis): an OOM refusal then success appends the same ids exactly once;
- arq's own writes (a job's end-of-job MULTI, the next job's claim) refused: the worker keeps polling and starts the
  waiting job when memory is back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from httpx_sse import ServerSentEvent, aconnect_sse

from runcast.shared.ids import new_run_id
from runcast.shared.keys import meta_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.resilience import StoreUnavailable
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.worker.durable import DurableStreamLog
from runcast.worker.ending import end_when_writable
from runcast.worker.resilient import ResilientWorker
from runcast.worker.writer import AppendWriter
from tests.support.eventsource import ResumingViewer
from tests.support.faults import (
    as_log,
    assert_a_new_run_streams_cleanly,
    assert_every_viewer_exact,
    start_together,
    stored_log,
    wait_until,
    words,
)
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.redis_server import RedisServer
from tests.support.requirements import real_redis_server
from tests.support.sse import create_run
from tests.support.store import FailingDisk, FullMemory, full_memory_server

pytestmark = [
    pytest.mark.slow,
    real_redis_server,  # maxmemory, MISCONF
]

TOKENS = 60  # 60 tokens x 20 ms: a run streams for ~1.2 s, the fault starts while it does


@pytest.fixture(scope="module")
def patient() -> Iterator[tuple[RedisServer, GatewayProcess, WorkerProcess]]:
    """Retries (6 s) outlast the faults. The heartbeat limit (2.5 s) is shorter than the OOM fault (3.5 s): a full
    Redis must not make the sweeper think the worker is lost (heartbeats go on with PEXPIRE, which OOM allows). MISCONF
    refuses every write, heartbeats too: its fault (1 s) stays under the limit. Two runs at a time, so later runs
    wait in the queue through the fault."""
    yield from deployment(RUNCAST_REDIS_RETRY_S="6", RUNCAST_WORKER_LOST_S="2.5", RUNCAST_WORKER_MAX_JOBS="2")


@pytest.fixture(scope="module")
def impatient() -> Iterator[tuple[RedisServer, GatewayProcess, WorkerProcess]]:
    """Retries give up after 1.5 s: a longer fault ends the running run with store_unavailable."""
    yield from deployment(RUNCAST_REDIS_RETRY_S="1.5", RUNCAST_WORKER_LOST_S="3")


def deployment(**env: str) -> Iterator[tuple[RedisServer, GatewayProcess, WorkerProcess]]:
    server = full_memory_server().start()
    gateway, worker = GatewayProcess(server.url, **env), WorkerProcess(server.url, **env)
    start_together(gateway, worker)
    yield server, gateway, worker
    gateway.stop()
    worker.stop()
    server.cleanup()


async def start_runs(http: httpx.AsyncClient, gateway: GatewayProcess, count: int, viewers: int) -> tuple[list, list]:
    runs = [await create_run(http, gateway.url, "echo", words(TOKENS, f"r{i}-")) for i in range(count)]
    watching = [ResumingViewer([gateway.url], r["run_id"], r["token"]) for r in runs for _ in range(viewers)]
    return runs, watching


async def first_events(http: httpx.AsyncClient, gateway: GatewayProcess, run: dict, n: int) -> list[ServerSentEvent]:
    url = f"{gateway.url}/v1/runs/{run['run_id']}/events"
    got: list[ServerSentEvent] = []
    async with aconnect_sse(http, "GET", url, params={"token": run["token"]}) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            got.append(sse)
            if len(got) == n:
                break
    return got


async def try_creates(http: httpx.AsyncClient, gateway: GatewayProcess, n: int) -> list[httpx.Response]:
    """`n` plain creates, one in a conversation and one AI SDK chat message (`POST /v1/chat/{agent}`)."""
    url = f"{gateway.url}/v1/runs"
    plain = [await http.post(url, json={"agent": "echo", "input": f"during {i}"}) for i in range(n)]
    talk = await http.post(url, json={"agent": "echo", "input": "hi", "conversation_id": f"c-{uuid.uuid4().hex}"})
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
    chat = {
        "id": f"chat-{uuid.uuid4().hex[:12]}",
        "messages": [message],
        "trigger": "submit-message",
        "messageId": None,
    }
    return [*plain, talk, await http.post(f"{gateway.url}/v1/chat/echo", json=chat)]


def assert_clear_refusals(responses: list[httpx.Response], words_in_detail: str) -> list[dict]:
    """Each create during the fault got 503 with a detail naming the cause and a Retry-After, or 202; the 202s."""
    accepted = []
    for response in responses:
        if response.status_code == 202:
            accepted.append(response.json())
            continue
        if response.status_code == 200:  # a chat answered with its stream: it was accepted (and ran to its end)
            assert response.text.rstrip().endswith("data: [DONE]"), response.text[-300:]
            continue
        assert response.status_code == 503, response.text
        assert words_in_detail in response.json()["detail"] and response.headers["retry-after"] == "5", response.text
    return accepted


async def watch_to_the_end(http: httpx.AsyncClient, gateway: GatewayProcess, runs: list[dict]) -> None:
    """Runs accepted during the fault reach their terminal event: completed, once."""
    for run in runs:
        viewer = ResumingViewer([gateway.url], run["run_id"], run["token"])
        await viewer.run(http, timeout_s=30)
        assert viewer.received[-1].event == "complete"
        assert sum(r.event in ("complete", "error") for r in viewer.received) == 1


async def test_memory_full_for_less_than_the_retry_limit_loses_and_duplicates_nothing(
    patient: tuple[RedisServer, GatewayProcess, WorkerProcess], http: httpx.AsyncClient
):
    server, gateway, worker = patient
    memory = FullMemory(server)
    runs, viewers = await start_runs(http, gateway, count=4, viewers=5)  # 2 run, 2 wait for a slot
    tasks = [asyncio.create_task(v.run(http, timeout_s=60)) for v in viewers]
    await wait_until(lambda: sum(len(v.received) >= 3 for v in viewers) >= 10, 20, "two runs mid-stream")
    await asyncio.to_thread(memory.fill)
    creates = await try_creates(http, gateway, 5)
    status = await http.get(runs[0]["status_url"], params={"token": runs[0]["token"]})  # reads keep working
    fresh = await first_events(http, gateway, runs[0], 3)  # and so does a new SSE connection
    await asyncio.sleep(3.5)
    memory.assert_refusing()
    await asyncio.to_thread(memory.give_back)
    await asyncio.gather(*tasks)

    assert status.status_code == 200, status.text
    assert [e.event for e in fresh] == ["start", "chunk", "chunk"], fresh
    accepted = assert_clear_refusals(creates, "out of memory")
    await watch_to_the_end(http, gateway, accepted)
    delivered = await assert_every_viewer_exact(server.url, runs, viewers, TOKENS)
    assert "OutOfMemoryError" in worker.log(), "the fault did not reach the worker's appends"
    assert worker.alive() and gateway.alive(), worker.log()[-3000:]
    await assert_a_new_run_streams_cleanly(http, gateway.url, server.url)
    print(f"\n[fault] OOM 3.5 s: {len(viewers)} viewers, {delivered} events, lost 0, duplicated 0; {codes(creates)}")


async def test_misconf_for_less_than_the_retry_limit_loses_and_duplicates_nothing(
    patient: tuple[RedisServer, GatewayProcess, WorkerProcess], http: httpx.AsyncClient
):
    server, gateway, worker = patient
    disk = FailingDisk(server)
    runs, viewers = await start_runs(http, gateway, count=2, viewers=5)
    tasks = [asyncio.create_task(v.run(http, timeout_s=60)) for v in viewers]
    await wait_until(lambda: all(len(v.received) >= 3 for v in viewers), 20, "every viewer mid-stream")
    await asyncio.to_thread(disk.break_disk)
    creates = await try_creates(http, gateway, 3)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(disk.fix_disk)
    await asyncio.gather(*tasks)

    accepted = assert_clear_refusals(creates, "MISCONF")
    await watch_to_the_end(http, gateway, accepted)
    delivered = await assert_every_viewer_exact(server.url, runs, viewers, TOKENS)
    assert "MisconfError" in worker.log(), "the fault did not reach the worker"
    assert worker.alive() and gateway.alive(), worker.log()[-3000:]
    await assert_a_new_run_streams_cleanly(http, gateway.url, server.url)
    print(f"\n[fault] MISCONF 1 s: {len(viewers)} viewers, {delivered} events, lost 0, duplicated 0")


async def test_memory_full_for_longer_than_the_retry_limit_ends_the_run_with_store_unavailable(
    impatient: tuple[RedisServer, GatewayProcess, WorkerProcess], http: httpx.AsyncClient
):
    server, gateway, worker = impatient
    memory = FullMemory(server)
    run = await create_run(http, gateway.url, "echo", words(200))  # 4 s of tokens: still running when it is refused
    viewers = [ResumingViewer([gateway.url], run["run_id"], run["token"]) for _ in range(5)]
    tasks = [asyncio.create_task(v.run(http, timeout_s=60)) for v in viewers]
    await wait_until(lambda: all(len(v.received) >= 3 for v in viewers), 20, "every viewer mid-stream")
    await asyncio.to_thread(memory.fill)
    await wait_until(lambda: "giving up on" in worker.log(), 15, "the worker to give up on the run's appends")
    await asyncio.sleep(0.5)
    memory.assert_refusing()  # still full: the run's end waits for Redis
    await asyncio.to_thread(memory.give_back)
    back = time.monotonic()
    await asyncio.gather(*tasks)
    released_s = time.monotonic() - back

    log = await stored_log(server.url, run["run_id"])
    types = [t for _, t, _ in log]
    assert types[-1] == "error" and types.count("error") + types.count("complete") == 1, types[-3:]
    error = log[-1][2]["data"]
    assert error["error_type"] == "store_unavailable" and "out of memory" in error["detail"], error
    for viewer in viewers:
        assert as_log(viewer.received) == log  # exactly one terminal event, nothing after it, nothing twice
    client = redis_from_url(server.url)
    meta = await client.hgetall(meta_key(run["run_id"]))
    await client.aclose()
    assert meta.get("status") == "failed", meta
    assert worker.alive() and gateway.alive(), worker.log()[-3000:]
    await assert_a_new_run_streams_cleanly(http, gateway.url, server.url)
    print(
        f"\n[fault] OOM past the 1.5 s retry limit: {len(log)} events, ended store_unavailable, 1 terminal event, "
        f"{len(viewers)} viewers released {released_s:.2f} s after memory was given back"
    )


def codes(responses: list[httpx.Response]) -> str:
    return json.dumps({str(c): [r.status_code for r in responses].count(c) for c in {r.status_code for r in responses}})


# The writer on its own (a real redis-server that really answers OOM).


@pytest.fixture
def full_server() -> Iterator[RedisServer]:
    server = full_memory_server().start()
    yield server
    server.cleanup()


def start_event(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "scripted"), run_id=run_id)


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


async def test_an_append_refused_for_oom_is_resent_with_the_same_ids_exactly_once(full_server: RedisServer):
    redis = redis_from_url(full_server.url)
    log = DurableStreamLog(redis, retry_s=30)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    writer = AppendWriter(log)
    channel = writer.open(run_id)
    memory = FullMemory(full_server)
    await asyncio.to_thread(memory.fill)
    channel.put([start_event(run_id), *(chunk(run_id, n) for n in range(1, 6))])
    ids = [entry_id for entry_id, _, _ in channel.pending]
    flushed = asyncio.create_task(channel.flush())
    await wait_until(lambda: writer.resends >= 2, 10, "the writer to meet OOM twice")
    assert not flushed.done()
    await asyncio.to_thread(memory.give_back)
    assert await flushed == ids[-1]

    stored = await stored_log(full_server.url, run_id)
    assert [entry_id for entry_id, _, _ in stored] == ids  # the ids chosen before the refusal, each once
    channel.close()
    await writer.aclose()
    await redis.aclose()


async def test_a_run_refused_past_the_retry_limit_fails_with_store_unavailable_and_ends_once_writable(
    full_server: RedisServer,
):
    redis = redis_from_url(full_server.url)
    log = DurableStreamLog(redis, retry_s=0.5)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    writer = AppendWriter(log)
    channel = writer.open(run_id)
    memory = FullMemory(full_server)
    await asyncio.to_thread(memory.fill)
    channel.put([start_event(run_id)])
    with pytest.raises(StoreUnavailable, match="out of memory"):
        await channel.flush()
    ending = asyncio.create_task(end_when_writable(log, run_id, "store_unavailable", "Redis was full"))
    await asyncio.sleep(1.0)
    assert not ending.done(), "the end was written although Redis is full"
    await asyncio.to_thread(memory.give_back)
    assert await asyncio.wait_for(ending, 10) is True
    assert await end_when_writable(log, run_id, "store_unavailable", "again") is False  # the run has ended

    stored = await stored_log(full_server.url, run_id)
    assert [t for _, t, _ in stored] == ["error"]  # nothing of the refused batch, one terminal event
    assert (await log.get_meta(run_id) or {})["status"] == "failed"
    channel.close()
    await writer.aclose()
    await redis.aclose()


# arq's own writes (in-process ResilientWorker, real redis-server): claims and end-of-job bookkeeping refused.

RAN: list[str] = []


async def job_that_fills_memory(ctx: dict[str, Any], tag: str) -> str:
    """The first job fills Redis as it ends: its end-of-job MULTI (and the next job's claim) meets OOM."""
    RAN.append(tag)
    if tag == "first":
        await asyncio.to_thread(ctx["memory"].fill)
    return tag


async def test_the_worker_outlives_oom_in_arqs_own_writes_and_starts_the_waiting_job_when_memory_returns(
    full_server: RedisServer,
):
    RAN.clear()
    memory = FullMemory(full_server)
    name = f"runcast:test-oom:{uuid.uuid4().hex}"
    queue = ArqRedis.from_url(full_server.url)
    await queue.enqueue_job("job_that_fills_memory", "first", _job_id=f"first-{name}", _queue_name=name)
    await queue.enqueue_job("job_that_fills_memory", "second", _job_id=f"second-{name}", _queue_name=name, _defer_by=1)
    worker = ResilientWorker(
        functions=[job_that_fills_memory],
        redis_pool=ArqRedis.from_url(full_server.url),
        queue_name=name,
        handle_signals=False,
        ctx={"memory": memory},
        redis_retry_s=0.5,  # a lost Redis stops the poll after 0.5 s; a refusing one must not
        poll_delay=0.1,
    )
    main = asyncio.create_task(worker.async_run())
    try:
        await wait_until(lambda: RAN == ["first"], 10, "the first job to run")
        await asyncio.sleep(2.0)  # the second job is due meanwhile: its claim is refused, so is the first's finish
        memory.assert_refusing()
        assert not main.done(), main.exception() if main.done() else None
        assert RAN == ["first"]
        await asyncio.to_thread(memory.give_back)
        await wait_until(lambda: RAN == ["first", "second"], 10, "the waiting job to start once memory is back")
        for _ in range(200):  # both jobs' bookkeeping recorded (off the queue, not in progress): neither runs again
            if not await queue.zcard(name) and not await queue.exists(
                *(f"{in_progress_key_prefix}{t}-{name}" for t in RAN)
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the jobs' end-of-job bookkeeping was never recorded")
        assert not main.done()
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await main
        await worker.close()
        await queue.aclose()
