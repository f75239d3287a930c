"""The agent runtime on the scripted model: built-in agents, tools, handoffs, turn limits (real Redis stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from pydantic import BaseModel

from runcast.worker.agents import Agent, ModelSettings, Tool, calculator, default_registry, load_registry
from runcast.worker.providers.base import TextDelta
from runcast.worker.providers.scripted import ScriptedProvider
from tests.support.runs import run_job, worker_state


def joined_deltas(run) -> str:
    return "".join(chunk["delta"] for chunk in run.of_type("chunk"))


def collapse(types: list[str]) -> list[str]:
    """Runs of consecutive CHUNKs as one `chunk…`, to compare event order."""
    out: list[str] = []
    for t in types:
        label = "chunk…" if t == "chunk" else t
        if not out or out[-1] != label:
            out.append(label)
    return out


async def test_demo_calls_the_calculator_then_answers_with_its_result(real_redis_url: str):
    async with worker_state(real_redis_url) as state:
        run = await run_job(state, "demo", "What is 2 + 3 * 4?")

    assert collapse(run.types) == ["start", "chunk…", "tool_call", "tool_result", "chunk…", "metadata", "complete"]
    [call] = run.of_type("tool_call")
    assert call["tool_name"] == "calculator" and call["arguments"] == {"expression": "2 + 3 * 4"}
    [result] = run.of_type("tool_result")
    assert result["call_id"] == call["call_id"]
    assert result["result"] == 14 and result["status"] == "completed"
    assert result["execution_time_ms"] >= 0
    after_tool = run.types.index("tool_result")
    answer = "".join(e.data.delta for e in run.events[after_tool:] if e.type.value == "chunk")
    assert "14" in answer, "the answer after the tool result uses the tool's value"
    final = run.of_type("chunk")[-1]["content"]
    assert final == joined_deltas(run) == run.of_type("complete")[0]["content"]
    [metadata] = run.of_type("metadata")
    assert metadata["agent_name"] == "demo" and metadata["turn_count"] == 2 and metadata["total_tokens"] > 0
    assert run.meta["status"] == "completed" and run.result == "completed"


async def test_triage_hands_off_to_demo_which_finishes_the_run(real_redis_url: str):
    async with worker_state(real_redis_url) as state:
        run = await run_job(state, "triage", "please compute (7 - 2) * 3")

    assert collapse(run.types) == [
        "start",
        "chunk…",
        "agent_switch",
        "chunk…",
        "tool_call",
        "tool_result",
        "chunk…",
        "metadata",
        "complete",
    ]
    [switch] = run.of_type("agent_switch")
    assert switch["from_agent"] == "triage" and switch["to_agent"] == "demo" and switch["reason"]
    assert run.of_type("start")[0]["agent_name"] == "triage"
    assert run.of_type("metadata")[0]["agent_name"] == "demo"
    assert run.of_type("tool_result")[0]["result"] == 15
    assert run.meta["status"] == "completed"


class Anything(BaseModel):
    expression: str = ""


async def _explode(args: Anything) -> str:
    raise RuntimeError("the tool broke")


async def _hang(args: Anything) -> str:
    await asyncio.sleep(30)
    return "never"


@pytest.mark.parametrize(
    ("tool_fn", "timeout_s", "error_text"),
    [(_explode, 5.0, "RuntimeError: the tool broke"), (_hang, 0.2, "timed out after 0.2 s")],
    ids=["raises", "times-out"],
)
async def test_a_failing_tool_is_reported_to_the_model_and_the_run_still_completes(
    real_redis_url: str,
    tool_fn,
    timeout_s: float,
    error_text: str,
):
    broken = Tool("calculator", "scripted models call it", Anything, tool_fn, timeout_s=timeout_s)
    registry = {"fragile": Agent("fragile", tools=(broken,))}
    async with worker_state(real_redis_url, registry=registry) as state:
        run = await run_job(state, "fragile", "what is 1 + 1")

    [result] = run.of_type("tool_result")
    assert result["status"] == "failed" and error_text in result["result"]
    assert run.types[-2:] == ["metadata", "complete"] and run.meta["status"] == "completed"
    assert error_text in run.of_type("chunk")[-1]["content"]  # the model read the error and answered


async def test_bad_arithmetic_fails_the_tool_call_not_the_run(real_redis_url: str):
    async with worker_state(real_redis_url) as state:
        run = await run_job(state, "demo", "what is 1 / 0")
    [result] = run.of_type("tool_result")
    assert result["status"] == "failed" and "division by zero" in result["result"]
    assert run.meta["status"] == "completed"


async def test_running_out_of_turns_ends_the_run_with_max_turns_exceeded(real_redis_url: str):
    registry = {"short": Agent("short", tools=(calculator,), model_settings=ModelSettings(max_turns=1))}
    async with worker_state(real_redis_url, registry=registry) as state:
        run = await run_job(state, "short", "2 * 21")

    assert collapse(run.types) == ["start", "chunk…", "tool_call", "tool_result", "error"]
    assert run.of_type("error")[0]["error_type"] == "max_turns_exceeded"
    assert run.meta["status"] == "failed"


async def test_an_agent_this_worker_does_not_have_ends_the_run_with_unknown_agent(real_redis_url: str):
    async with worker_state(real_redis_url) as state:
        run = await run_job(state, "nobody", "hi")
    assert run.types == ["error"] and run.of_type("error")[0]["error_type"] == "unknown_agent"
    assert run.meta["status"] == "failed"


async def test_echo_streams_its_input_back_exactly(real_redis_url: str):
    text = "  leading space,\ttabs and trailing  "
    async with worker_state(real_redis_url, provider=ScriptedProvider(delay_ms=1)) as state:
        run = await run_job(state, "echo", text)
    assert [c["delta"] for c in run.of_type("chunk")] == ["  leading", " space,", "\ttabs", " and", " trailing  "]
    assert run.of_type("complete")[0]["content"] == text


def test_load_registry_refuses_handoffs_to_agents_it_does_not_have():
    assert set(load_registry("runcast.worker.agents:default_registry")) == {"echo", "demo", "triage", "chat"}
    with pytest.raises(ValueError, match="unknown agents: ghost"):
        load_registry("tests.test_agents:BROKEN_REGISTRY")
    with pytest.raises(ValueError, match="module:attr"):
        load_registry("runcast.worker.agents")


BROKEN_REGISTRY = {"a": Agent("a", handoffs=("ghost",)), **default_registry}


class BrokenModel:
    name = "broken"

    async def stream(self, **_: object) -> AsyncIterator[TextDelta]:
        yield TextDelta("so far so good")
        raise RuntimeError("a bug in the provider")


async def test_an_unexpected_exception_ends_the_run_with_internal_error_after_what_was_streamed(real_redis_url: str):
    async with worker_state(real_redis_url, provider=BrokenModel()) as state:  # type: ignore[arg-type]
        run = await run_job(state, "echo", "hi")
    assert run.types == ["start", "chunk", "error"]
    error = run.of_type("error")[0]
    assert error["error_type"] == "internal_error" and "a bug in the provider" in error["detail"]
    assert run.meta["status"] == "failed"
