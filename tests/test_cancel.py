"""Cancelling runs: `POST /v1/runs/{id}/cancel` on a real gateway and worker (in-process stack, real redis-server)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime

import httpx
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job
from httpx_sse import aconnect_sse

from runcast.shared.ids import new_run_id
from runcast.shared.streaming import StreamingEvent
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from runcast.worker.agents import Agent, CalculatorArgs, Tool, default_registry
from tests.support.processes import TEST_SECRET
from tests.support.runs import start_job, wait_for_entry, worker_state
from tests.support.sse import create_run, dispatched, read_sse
from tests.support.stack import Stack, running_stack

TOOL_LOG: dict[str, float] = {}


def own_queue() -> str:
    """A queue of this test's own: runs other tests left queued must not reach this test's worker (or vice versa)."""
    return f"runcast:test:{uuid.uuid4().hex}"


async def _slow_tool(args: CalculatorArgs) -> str:
    TOOL_LOG["started"] = time.time()
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        TOOL_LOG["cancelled"] = time.time()
        raise
    return "too late"


REGISTRY = {
    **default_registry,
    "slowtool": Agent("slowtool", tools=(Tool("calculator", "takes its time", CalculatorArgs, _slow_tool, 60),)),
}


class Viewer:
    """Reads a run's SSE stream in the background, noting when each event arrived."""

    def __init__(self, http: httpx.AsyncClient, stack: Stack, run: dict) -> None:
        self.received: list[tuple[float, str, dict]] = []
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._read(http, f"{stack.url}/v1/runs/{run['run_id']}/events", run["token"]))

    async def _read(self, http: httpx.AsyncClient, url: str, token: str) -> None:
        async with aconnect_sse(http, "GET", url, params={"token": token}) as source:
            async for sse in dispatched(source):
                self.received.append((time.time(), sse.event, json.loads(sse.data)))
                self.changed.set()
                if sse.event in ("complete", "error"):
                    return

    async def wait_for(self, event: str, count: int = 1) -> None:
        async with asyncio.timeout(10):
            while sum(e == event for _, e, _ in self.received) < count:
                self.changed.clear()
                await self.changed.wait()

    async def finished(self) -> list[tuple[float, str, dict]]:
        await asyncio.wait_for(self.task, 10)
        return self.received


async def cancel(http: httpx.AsyncClient, stack: Stack, run: dict, **kwargs: object) -> httpx.Response:
    kwargs.setdefault("params", {"token": run["token"]})
    return await http.post(f"{stack.url}/v1/runs/{run['run_id']}/cancel", **kwargs)  # type: ignore[arg-type]


async def job_finish_time(redis_url: str, stack: Stack, run_id: str) -> tuple[str, float]:
    """The arq job's return value and when it finished (the worker really stopped, not just the stream)."""
    queue = ArqRedis.from_url(redis_url)
    try:
        job = Job(run_id, queue, _queue_name=stack.settings.queue_name)
        result = await job.result(timeout=5, poll_delay=0.05)
        info = await job.result_info()
        assert info is not None
        finish: datetime = info.finish_time
        return result, finish.timestamp()
    finally:
        await queue.aclose()


async def assert_ended_by_cancel(stack: Stack, run_id: str) -> None:
    """Status `cancelled`, the terminal ERROR is the stream's last entry, and nothing was appended after it."""
    await asyncio.sleep(0.4)  # longer than the worker's poll: a worker that kept going would have appended by now
    entries = await StreamLog(stack.redis).read_all(run_id)
    last = StreamingEvent.from_json(entries[-1].event)
    assert last.type.value == "error" and last.data.error_type == "cancelled"
    assert [e.type for e in entries].count("error") == 1
    meta = await StreamLog(stack.redis).get_meta(run_id)
    assert meta is not None and meta["status"] == "cancelled" and meta["last_event_id"] == entries[-1].id


async def test_cancel_during_a_slow_stream_ends_the_run_within_a_second(real_redis_url: str, http: httpx.AsyncClient):
    async with running_stack(real_redis_url, scripted_delay_ms=150, queue_name=own_queue()) as stack:
        run = await create_run(http, stack.url, "echo", " ".join(f"word{i}" for i in range(100)))
        viewer = Viewer(http, stack, run)
        await viewer.wait_for("chunk", 3)

        cancelled_at = time.time()
        response = await cancel(http, stack, run)
        assert response.status_code == 202 and response.json() == {"run_id": run["run_id"], "status": "cancelled"}

        received = await viewer.finished()
        arrived, event, data = received[-1]
        assert event == "error" and data["data"]["error_type"] == "cancelled"
        assert arrived - cancelled_at < 1.0
        assert all(e != "chunk" for t, e, _ in received if t > arrived)
        await assert_ended_by_cancel(stack, run["run_id"])
        result, finished_at = await job_finish_time(real_redis_url, stack, run["run_id"])
        assert result == "cancelled" and finished_at - cancelled_at < 1.0
        status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
        assert status["status"] == "cancelled"


async def test_cancel_during_a_slow_tool_stops_the_tool_within_a_second(real_redis_url: str, http: httpx.AsyncClient):
    TOOL_LOG.clear()
    async with running_stack(real_redis_url, agents="tests.test_cancel:REGISTRY", queue_name=own_queue()) as stack:
        run = await create_run(http, stack.url, "slowtool", "what is 1 + 1")
        viewer = Viewer(http, stack, run)
        await viewer.wait_for("tool_call")

        cancelled_at = time.time()
        assert (await cancel(http, stack, run)).status_code == 202
        received = await viewer.finished()
        assert [e for _, e, _ in received][-2:] == ["tool_call", "error"]
        assert received[-1][0] - cancelled_at < 1.0
        result, finished_at = await job_finish_time(real_redis_url, stack, run["run_id"])
        assert result == "cancelled" and finished_at - cancelled_at < 1.0
        assert TOOL_LOG["cancelled"] - cancelled_at < 1.0, "the tool itself was interrupted"
        await assert_ended_by_cancel(stack, run["run_id"])


async def test_a_run_cancelled_while_queued_never_starts(real_redis_url: str, http: httpx.AsyncClient):
    queue_name = own_queue()
    async with running_stack(real_redis_url, worker=False, queue_name=queue_name) as stack:
        run = await create_run(http, stack.url, "echo", "this never runs")
        assert (await cancel(http, stack, run)).status_code == 202
        status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
        assert status["status"] == "cancelled"

    async with running_stack(real_redis_url, queue_name=queue_name) as stack:  # now a worker picks the job up
        result, _ = await job_finish_time(real_redis_url, stack, run["run_id"])
        assert result == "cancelled"
        events = await read_sse(http, stack.url, run["run_id"], run["token"])
        assert [(e.event, e.data["data"]["error_type"]) for e in events] == [("error", "cancelled")]


@pytest.fixture
async def quick_stack(real_redis_url: str):
    async with running_stack(real_redis_url, scripted_delay_ms=0, queue_name=own_queue()) as stack:
        yield stack


async def test_cancel_is_idempotent_but_a_finished_run_is_a_conflict(quick_stack: Stack, http: httpx.AsyncClient):
    done = await create_run(http, quick_stack.url, "echo", "quick")
    await read_sse(http, quick_stack.url, done["run_id"], done["token"])
    response = await cancel(http, quick_stack, done)
    assert response.status_code == 409 and "completed" in response.json()["detail"]

    async with running_stack(quick_stack.settings.redis_url, worker=False, queue_name=own_queue()) as idle:
        queued = await create_run(http, idle.url, "echo", "waits")
        assert (await cancel(http, idle, queued)).status_code == 202
        again = await cancel(http, idle, queued)
        assert again.status_code == 202 and again.json()["status"] == "cancelled"


async def test_cancel_refuses_bad_ids_unknown_runs_and_missing_tokens(quick_stack: Stack, http: httpx.AsyncClient):
    unknown = new_run_id()
    token = issue_token(TEST_SECRET.encode(), unknown, 60)
    assert (await http.post(f"{quick_stack.url}/v1/runs/{unknown}/cancel", params={"token": token})).status_code == 404
    assert (await http.post(f"{quick_stack.url}/v1/runs/NOT-AN-ID/cancel")).status_code == 400
    run = await create_run(http, quick_stack.url, "echo", "x")
    assert (await cancel(http, quick_stack, run, params={})).status_code == 401
    other = await create_run(http, quick_stack.url, "echo", "y")
    assert (await cancel(http, quick_stack, run, params={"token": other["token"]})).status_code == 403


async def test_with_api_keys_set_cancel_needs_a_key(real_redis_url: str, http: httpx.AsyncClient):
    async with running_stack(real_redis_url, worker=False, api_keys=["key-1"], queue_name=own_queue()) as stack:
        headers = {"Authorization": "Bearer key-1"}
        response = await http.post(f"{stack.url}/v1/runs", json={"agent": "echo", "input": "x"}, headers=headers)
        run = response.json()
        assert (await cancel(http, stack, run)).status_code == 401  # the run's token is not enough
        assert (await cancel(http, stack, run, params={}, headers={"Authorization": "Bearer nope"})).status_code == 401
        assert (await cancel(http, stack, run, params={}, headers=headers)).status_code == 202


async def test_when_arq_cancels_the_job_the_run_ends_with_worker_shutdown(real_redis_url: str):
    async with worker_state(real_redis_url) as state:
        from runcast.worker.providers.scripted import ScriptedProvider

        state.provider = ScriptedProvider(delay_ms=200)
        run_id, job = await start_job(state, "echo", "a b c d e f g h")
        await wait_for_entry(state, run_id, "chunk")
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        entries = await state.stream_log.read_all(run_id)
        last = StreamingEvent.from_json(entries[-1].event)
        assert last.data.error_type == "worker_shutdown"
        assert (await state.stream_log.get_meta(run_id))["status"] == "failed"
