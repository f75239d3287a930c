"""The end-to-end checks every framework adapter must pass, through a real gateway, a real worker and a real Redis.

Each framework is described by a `FrameworkCase` (the registry its worker loads, the agent name, how to get the
framework's own final output), and `tests/test_adapters_e2e.py` runs every check for every framework against one
gateway and one worker that serve all the frameworks' agents; each fake model speaks the scripted model
(`tests.support.scripted_model`), so every check knows what the model does and when:

    CASE = FrameworkCase(agent="jaf_support", registry="tests.support.framework_agents:registry",
                         final_output=jaf_agents.direct_output)

    @pytest.fixture(scope="module")
    def deployment(module_redis_url):
        with framework_deployment(module_redis_url, CASE) as running:
            yield running

    async def test_jaf_streams_token_by_token_to_two_viewers(deployment, http):
        await check_streams_token_by_token(deployment, CASE, http)

- `check_streams_token_by_token`: two SSE viewers, one of which drops its connection mid-run and resumes with
  Last-Event-ID; both see the first CHUNK while the model waits at its gate (the second delta does not exist yet);
  both get exactly the stored log; one CHUNK per model delta; the deltas join to the framework's own final output;
  TOOL_CALL, TOOL_RESULT, AGENT_SWITCH in their places.
- `check_cancel_stops_the_framework`: a cancel mid-stream ends the run and the model's stream is cancelled or
  closed (recorded by the model itself, in the worker) within `CANCEL_BOUND_S`.
- `check_framework_error_ends_the_run`: the framework's exception ends the run with ERROR carrying its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runcast.shared.redis_client import redis_from_url
from tests.support.eventsource import ResumingViewer
from tests.support.faults import as_log, stored_log, wait_until
from tests.support.processes import GatewayProcess, WorkerProcess, start_all
from tests.support.scripted_model import (
    DELTAS,
    FIRST_AGENT,
    MODEL_REDIS_ENV,
    SECOND_AGENT,
    TOOL_NAME,
    TOOL_OUTPUT,
    model_stopped,
    open_gate,
    prompt,
)
from tests.support.sse import create_run

ROOT = Path(__file__).resolve().parents[2]
CANCEL_BOUND_S = 1.0
"""The issue's bound between a cancel and the framework's run stopping (the worker polls every 150 ms)."""
START_TIMEOUT_S = 120.0
"""A worker importing a framework can take long on a loaded machine (jaf-py alone imports litellm: ~7 s idle)."""
RESUMING_VIEWER_DROPS_AFTER = 30
"""Events the resuming viewer reads on its first connection (mid-run: a run has more than 100 events)."""


@dataclass(frozen=True)
class FrameworkCase:
    """One framework's agent as the checks need it."""

    agent: str
    """The registry name the worker runs (`POST /v1/runs {"agent": ...}`)."""
    registry: str
    """RUNCAST_AGENTS for the worker, e.g. `tests.support.jaf_agents:registry`."""
    final_output: Callable[[str], Awaitable[str]]
    """The framework run on its own (no runcast) on a prompt -> the framework's own final output."""
    first_agent: str = FIRST_AGENT
    second_agent: str | None = SECOND_AGENT
    """The agent the first one hands off to; None for a framework without handoffs (no AGENT_SWITCH expected)."""
    error_type: str = "agent_error"
    env: dict[str, str] = field(default_factory=dict)
    """More environment for the worker (e.g. a fake model server's URL)."""


@dataclass
class Deployment:
    redis_url: str
    gateway: GatewayProcess
    worker: WorkerProcess

    @property
    def url(self) -> str:
        return self.gateway.url


@contextlib.contextmanager
def framework_deployment(redis_url: str, case: FrameworkCase, **env: str) -> Iterator[Deployment]:
    """A gateway and a worker running `case.registry` on a queue of their own (no other test's runs reach it)."""
    worker_env = {
        "RUNCAST_AGENTS": case.registry,
        "RUNCAST_QUEUE_NAME": f"runcast:test-frameworks:{uuid.uuid4().hex}",
        MODEL_REDIS_ENV: redis_url,
        "PYTHONPATH": str(ROOT),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        **case.env,
        **env,
    }
    gateway = GatewayProcess(redis_url, RUNCAST_QUEUE_NAME=worker_env["RUNCAST_QUEUE_NAME"])
    worker = WorkerProcess(redis_url, **worker_env)
    try:
        start_all(gateway, worker, timeout=START_TIMEOUT_S)
        yield Deployment(redis_url, gateway, worker)
    finally:
        for proc in (gateway, worker):
            proc.stop()


def chunks_of(received: list[Any]) -> list[dict[str, Any]]:
    return [r.data["data"] for r in received if r.event == "chunk"]


async def check_streams_token_by_token(deployment: Deployment, case: FrameworkCase, http: httpx.AsyncClient) -> None:
    gate = uuid.uuid4().hex
    run = await create_run(http, deployment.url, case.agent, prompt(gate=gate, pause_ms=20))
    steady = ResumingViewer([deployment.url], run["run_id"], run["token"])
    drops = iter([RESUMING_VIEWER_DROPS_AFTER])
    resuming = ResumingViewer([deployment.url], run["run_id"], run["token"], drop_after=lambda: next(drops, None))
    viewers = [steady, resuming]
    tasks = [asyncio.create_task(viewer.run(http, timeout_s=90)) for viewer in viewers]
    try:
        # The model produced its first delta and waits at the gate: the second delta does not exist yet.
        await wait_until(lambda: all(chunks_of(v.received) for v in viewers), 60, "the first CHUNK at both viewers")
        for viewer in viewers:
            assert [c["delta"] for c in chunks_of(viewer.received)] == DELTAS[:1], "more text than the model made"
        client = redis_from_url(deployment.redis_url)
        try:
            await open_gate(client, gate)
        finally:
            await client.aclose()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()

    log = await stored_log(deployment.redis_url, run["run_id"])
    assert as_log(steady.received) == log
    assert as_log(resuming.received) == log, "the resumed viewer must get exactly the rest"
    assert resuming.dropped == 1 and resuming.connections == 2, resuming.outcomes
    assert_run_shape(log, case)
    output = await case.final_output(prompt())
    chunks = [event["data"] for _, kind, event in log if kind == "chunk"]
    assert [c["delta"] for c in chunks] == DELTAS, "one CHUNK per model delta, as the model produced them"
    assert "".join(c["delta"] for c in chunks) == output, "the chunks must join to the framework's own output"
    assert [c["content"] for c in chunks][-1] == output and log[-1][2]["data"]["content"] == output


def assert_run_shape(log: list[tuple[str, str, dict[str, Any]]], case: FrameworkCase) -> None:
    """START first, COMPLETE last (the only terminal event), the tool call and its result, then the handoff, then
    the text; METADATA right before COMPLETE."""
    kinds = [kind for _, kind, _ in log]
    data = [event["data"] for _, _, event in log]
    assert kinds[0] == "start" and kinds[-2:] == ["metadata", "complete"], kinds
    assert sum(kind in ("complete", "error") for kind in kinds) == 1
    call = next(i for i, kind in enumerate(kinds) if kind == "tool_call" and data[i]["tool_name"] == TOOL_NAME)
    result = next(i for i, kind in enumerate(kinds) if kind == "tool_result" and data[i]["tool_name"] == TOOL_NAME)
    assert data[call]["call_id"] == data[result]["call_id"] and call < result
    assert data[call]["arguments"] == {"order_id": "A-42"} and data[call]["status"] == "started"
    assert TOOL_OUTPUT in str(data[result]["result"]) and data[result]["status"] == "completed"
    first_chunk = kinds.index("chunk")
    assert result < first_chunk
    if case.second_agent is not None:
        switch = kinds.index("agent_switch")
        assert result < switch < first_chunk
        assert data[switch]["from_agent"] == case.first_agent and data[switch]["to_agent"] == case.second_agent
        assert data[-2]["agent_name"] == case.second_agent
    assert all(kind in ("chunk", "metadata", "complete") for kind in kinds[first_chunk:])


async def check_cancel_stops_the_framework(
    deployment: Deployment, case: FrameworkCase, http: httpx.AsyncClient
) -> None:
    gate = uuid.uuid4().hex
    run = await create_run(http, deployment.url, case.agent, prompt(gate=gate, pause_ms=50))
    viewer = ResumingViewer([deployment.url], run["run_id"], run["token"])
    task = asyncio.create_task(viewer.run(http, timeout_s=60))
    client = redis_from_url(deployment.redis_url)
    try:
        await wait_until(lambda: bool(chunks_of(viewer.received)), 60, "the first CHUNK")
        await open_gate(client, gate)
        await wait_until(lambda: len(chunks_of(viewer.received)) >= 5, 30, "five chunks")
        cancelled_at = time.time()
        response = await http.post(f"{deployment.url}/v1/runs/{run['run_id']}/cancel", params={"token": run["token"]})
        assert response.status_code == 202, response.text
        await task
        stopped = None
        async with asyncio.timeout(10):
            while stopped is None:
                stopped = await model_stopped(client, gate)
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await client.aclose()
    last = viewer.received[-1]
    assert last.event == "error" and last.data["data"]["error_type"] == "cancelled"
    assert 5 <= stopped["delivered"] < len(DELTAS), stopped
    assert stopped["at"] - cancelled_at < CANCEL_BOUND_S, f"the framework stopped {stopped['at'] - cancelled_at:.2f}s"
    await asyncio.sleep(0.3)  # longer than the worker's cancel poll: a run that went on would have appended by now
    log = await stored_log(deployment.redis_url, run["run_id"])
    assert log[-1][1] == "error" and log[-1][2]["data"]["error_type"] == "cancelled"
    assert sum(kind in ("complete", "error") for _, kind, _ in log) == 1
    assert as_log(viewer.received) == log


async def check_framework_error_ends_the_run(
    deployment: Deployment, case: FrameworkCase, http: httpx.AsyncClient
) -> None:
    marker = uuid.uuid4().hex
    run = await create_run(http, deployment.url, case.agent, prompt(fail=marker))
    viewer = ResumingViewer([deployment.url], run["run_id"], run["token"])
    received = await viewer.run(http, timeout_s=60)
    error = received[-1]
    assert error.event == "error", [r.event for r in received]
    assert error.data["data"]["error_type"] == case.error_type
    assert marker in error.data["data"]["detail"], error.data["data"]
    assert received[0].event == "start"
    status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
    assert status["status"] == "failed"
