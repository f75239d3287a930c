"""The publish API (`runcast.publisher`): a producer outside runcast's workers publishes a run into the same log, with
the same guarantees: claimed by one producer, heartbeat and `worker_lost`, nothing after the terminal event, the
order of its calls kept per run."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

import runcast
from runcast.shared.ids import new_run_id
from runcast.shared.keys import heartbeat_key
from runcast.shared.resilience import RUNNING_KEY
from runcast.shared.streamlog import RunEnded, StreamLog, UnknownRun
from runcast.worker.job import WorkerState, run_agent
from runcast.worker.producer import RunAlreadyClaimed, RunNotExternal
from runcast.worker.providers.scripted import ScriptedProvider
from tests.support.eventsource import ResumingViewer
from tests.support.faults import as_log, stored_log, wait_until
from tests.support.processes import GatewayProcess, Process, runcast_env
from tests.support.sse import create_run
from tests.support.stack import running_stack


async def external_run(log: StreamLog, agent: str = "support") -> str:
    run_id = new_run_id()
    await log.create_run(run_id, agent, "hello", external=True)
    return run_id


async def kinds_and_data(log: StreamLog, run_id: str) -> list[tuple[str, dict]]:
    return [(e.type, json.loads(e.event)["data"]) for e in await log.read_all(run_id)]


@pytest.fixture
async def publisher(redis: Redis) -> AsyncIterator[runcast.Publisher]:
    yield runcast.publisher(redis, lost_s=5)


async def test_a_producer_publishes_a_whole_run_with_the_runner_event_shapes(
    redis: Redis, log: StreamLog, publisher: runcast.Publisher
):
    run_id = await external_run(log)
    async with publisher.run(run_id, model_name="my-model") as run:
        assert await redis.exists(heartbeat_key(run_id)) == 1 and await redis.zscore(RUNNING_KEY, run_id) is not None
        await run.chunk("Hel")
        await run.chunk("lo")
        call_id = await run.tool_call("lookup_order", {"order_id": "A-42"})
        await run.tool_result("lookup_order", call_id, {"status": "shipped"}, execution_time_ms=3.5)
        await run.agent_switch("billing", "refunds go to billing")
        run.new_turn()
        run.usage(42)
        await run.chunk("Done.")
    events = await kinds_and_data(log, run_id)
    assert [kind for kind, _ in events] == [
        "start", "chunk", "chunk", "tool_call", "tool_result", "agent_switch", "chunk", "metadata", "complete",
    ]  # fmt: skip
    assert events[0][1]["agent_name"] == "support" and events[0][1]["model_name"] == "my-model"
    assert events[2][1] == {"content": "Hello", "delta": "lo", "is_complete": False, "token_count": 2}
    assert events[3][1] == {"tool_name": "lookup_order", "arguments": {"order_id": "A-42"}, "call_id": call_id,
                            "status": "started"}  # fmt: skip
    assert events[4][1]["result"] == {"status": "shipped"} and events[4][1]["status"] == "completed"
    assert events[5][1] == {"from_agent": "support", "to_agent": "billing", "reason": "refunds go to billing"}
    assert events[6][1]["content"] == "Hello\n\nDone." and events[6][1]["delta"] == "\n\nDone."
    assert events[7][1]["agent_name"] == "billing" and events[7][1]["total_tokens"] == 42
    assert events[8][1] == {"content": "Hello\n\nDone."}
    meta = await log.get_meta(run_id)
    assert meta is not None and meta["status"] == "completed"
    assert await redis.exists(heartbeat_key(run_id)) == 0 and await redis.zscore(RUNNING_KEY, run_id) is None


async def test_publishing_after_the_terminal_event_is_refused(log: StreamLog, publisher: runcast.Publisher):
    run_id = await external_run(log)
    async with publisher.run(run_id) as run:
        await run.chunk("all")
        await run.complete()
        with pytest.raises(RunEnded, match="nothing can be published after its terminal event"):
            await run.chunk("more")
        with pytest.raises(RunEnded):
            await run.error("agent_error", "too late")
    assert [kind for kind, _ in await kinds_and_data(log, run_id)] == ["start", "chunk", "metadata", "complete"]


async def test_a_run_cancelled_from_outside_refuses_the_producers_next_event(
    log: StreamLog, publisher: runcast.Publisher
):
    run_id = await external_run(log)
    with pytest.raises(RunEnded, match="already ended"):
        async with publisher.run(run_id) as run:
            await run.chunk("first")
            await log.end_run(run_id, "cancelled", "the run was cancelled by a client")
            await run.chunk("second")  # refused by the append script: the producer learns it must stop
    events = await kinds_and_data(log, run_id)
    assert [kind for kind, _ in events] == ["start", "chunk", "error"]
    assert events[-1][1]["error_type"] == "cancelled"


async def test_leaving_the_block_with_an_exception_ends_the_run_with_its_message(
    redis: Redis, log: StreamLog, publisher: runcast.Publisher
):
    run_id = await external_run(log)
    with pytest.raises(ValueError, match="the backend broke"):
        async with publisher.run(run_id) as run:
            await run.chunk("partial")
            raise ValueError("the backend broke")
    events = await kinds_and_data(log, run_id)
    assert [kind for kind, _ in events] == ["start", "chunk", "error"]
    assert events[-1][1] == {"error_type": "agent_error", "detail": "ValueError: the backend broke"}
    assert (await log.get_meta(run_id) or {})["status"] == "failed"
    assert await redis.exists(heartbeat_key(run_id)) == 0


async def test_a_cancelled_producer_ends_the_run_like_a_stopped_worker(log: StreamLog, publisher: runcast.Publisher):
    run_id = await external_run(log)
    started = asyncio.Event()

    async def produce() -> None:
        async with publisher.run(run_id) as run:
            await run.chunk("working")
            started.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(produce())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    events = await kinds_and_data(log, run_id)
    assert [kind for kind, _ in events] == ["start", "chunk", "error"]
    assert events[-1][1]["error_type"] == "worker_shutdown"


async def test_only_one_producer_may_publish_a_run_and_only_an_external_one(
    log: StreamLog, publisher: runcast.Publisher
):
    run_id = await external_run(log)
    async with publisher.run(run_id):
        with pytest.raises(RunAlreadyClaimed):
            async with publisher.run(run_id):
                pass
    with pytest.raises(RunEnded):  # completed: nothing more can be published, by anyone
        async with publisher.run(run_id):
            pass
    worker_run = new_run_id()
    await log.create_run(worker_run, "echo", "hi")
    with pytest.raises(RunNotExternal, match="external=true"):
        async with publisher.run(worker_run):
            pass
    assert await log.read_all(worker_run) == []
    with pytest.raises(UnknownRun):
        async with publisher.run(new_run_id()):
            pass


async def test_calls_not_awaited_one_by_one_keep_their_order_in_each_run(log: StreamLog, publisher: runcast.Publisher):
    first, second = await external_run(log), await external_run(log)
    async with publisher.run(first) as a, publisher.run(second) as b:
        calls = []
        for n in range(200):
            calls += [a.chunk(f"a{n} "), b.chunk(f"b{n} ")]
        await asyncio.gather(*calls)
    for run_id, prefix in ((first, "a"), (second, "b")):
        chunks = [data for kind, data in await kinds_and_data(log, run_id) if kind == "chunk"]
        assert [c["delta"] for c in chunks] == [f"{prefix}{n} " for n in range(200)]
        assert [c["token_count"] for c in chunks] == list(range(1, 201))


async def test_the_publisher_needs_a_decoding_client(real_redis_url: str):
    raw = Redis.from_url(real_redis_url)
    try:
        with pytest.raises(ValueError, match="decode_responses=True"):
            runcast.publisher(raw)
    finally:
        await raw.aclose()
    async with runcast.publisher(real_redis_url) as owned:  # a URL: the publisher makes and closes its client
        assert await owned.redis.ping()


async def test_a_worker_never_runs_an_external_run(redis: Redis, log: StreamLog):
    run_id = await external_run(log, agent="echo")
    state = WorkerState(log, {}, ScriptedProvider(delay_ms=0))
    assert await run_agent({"runcast": state}, run_id) == "queued"
    assert await log.read_all(run_id) == []


async def test_an_external_run_is_created_through_the_gateway_and_never_enqueued(
    real_redis_url: str, http: httpx.AsyncClient
):
    queue = f"runcast:test:{new_run_id()}"
    async with running_stack(real_redis_url, queue_name=queue) as stack:
        client = runcast.AsyncClient(stack.url)
        handle = await client.create_run("my-backend-agent", "hi", external=True)  # not a worker's agent: a label
        assert await stack.redis.zcard(queue) == 0  # arq's queue: nothing enqueued
        response = await http.post(f"{stack.url}/v1/runs", json={"agent": "my-backend-agent", "input": "hi"})
        assert response.status_code == 404, "without external=true the agent must be a worker's"
        async with runcast.publisher(stack.redis).run(handle.run_id) as run:
            await run.chunk("from my own process")
        received = [item async for item in client.stream(handle.run_id, handle.token)]
        assert [item.event.type.value for item in received] == ["start", "chunk", "metadata", "complete"]
        result = (await http.get(f"{stack.url}/v1/runs/{handle.run_id}/result", params={"token": handle.token})).json()
        assert result["content"] == "from my own process"
        await client.aclose()


LOST_S = 2.0
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweeping_gateway(module_redis_url: str) -> Iterator[GatewayProcess]:
    gateway = GatewayProcess(module_redis_url, RUNCAST_WORKER_LOST_S=str(LOST_S)).start(timeout=60)
    yield gateway
    gateway.stop()


@pytest.mark.slow
async def test_a_producer_killed_mid_run_ends_the_run_with_worker_lost_for_its_viewers(
    module_redis_url: str, sweeping_gateway: GatewayProcess, http: httpx.AsyncClient
):
    run = await create_run(http, sweeping_gateway.url, "support", "hi", external=True)
    producer = Process(
        [sys.executable, "-m", "tests.support.producer_proc", module_redis_url, run["run_id"], "20"],
        runcast_env(module_redis_url, RUNCAST_WORKER_LOST_S=str(LOST_S)),
        cwd=ROOT,
    ).start()
    viewers = [ResumingViewer([sweeping_gateway.url], run["run_id"], run["token"]) for _ in range(3)]
    tasks = [asyncio.create_task(viewer.run(http, timeout_s=60)) for viewer in viewers]
    try:
        await wait_until(lambda: all(len(v.received) >= 5 for v in viewers), 60, "viewers mid-run")
        producer.kill()
        killed_at = time.monotonic()
        await asyncio.gather(*tasks)
    finally:
        producer.kill()
        for task in tasks:
            task.cancel()
    waited = time.monotonic() - killed_at
    log = await stored_log(module_redis_url, run["run_id"])
    assert log[-1][1] == "error" and log[-1][2]["data"]["error_type"] == "worker_lost"
    assert sum(kind in ("complete", "error") for _, kind, _ in log) == 1
    for viewer in viewers:
        assert as_log(viewer.received) == log
    print(f"\n[publish] producer SIGKILL: {len(viewers)} viewers ended with worker_lost {waited:.2f}s after the kill")
