"""The jaf-py adapter in-process (real jaf-py, no Redis): how jaf's events map to runcast's, history, cancel,
agents-as-tools, errors, and the `jaf` extra being optional."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
from jaf import Agent as JafAgentDef
from jaf.core.types import CompletionStreamChunk, ContentRole, ToolCallDelta, ToolCallFunctionDelta

from runcast.shared.streaming import StreamingEvent
from runcast.worker.adapters import from_jaf
from runcast.worker.adapters.jaf import JafAgent
from runcast.worker.agents import default_registry, load_registry
from runcast.worker.providers.base import Message
from runcast.worker.runnable import stream_run
from tests.support import jaf_agents
from tests.support.scripted_model import (
    DELTAS,
    FINAL_OUTPUT,
    HANDOFF_REASON,
    STOPPED_LOCALLY,
    TOOL_OUTPUT,
    USAGE,
    prompt,
)


def scripted(provider: Any = None, **options: Any) -> JafAgent:
    return from_jaf(
        jaf_agents.triage, provider or jaf_agents.ScriptedJafProvider(), agents=[jaf_agents.support], **options
    )


async def collect(agent: JafAgent, text: str, **kwargs: Any) -> list[StreamingEvent]:
    return [event async for event in stream_run(agent, text, **kwargs)]


def kinds(events: list[StreamingEvent]) -> list[str]:
    return [event.type.value for event in events]


def data(event: StreamingEvent) -> dict[str, Any]:
    return event.to_dict()["data"]


async def test_a_streamed_jaf_run_maps_to_runcast_events_one_chunk_per_delta():
    events = await collect(scripted(), prompt(), run_id="run-jaf-1")
    assert kinds(events) == [
        "start", "tool_call", "tool_result", "tool_call", "tool_result", "agent_switch",
        *["chunk"] * len(DELTAS), "metadata", "complete",
    ]  # fmt: skip
    assert all(event.run_id == "run-jaf-1" for event in events)
    assert data(events[0])["agent_name"] == "triage" and data(events[0])["model_name"] == jaf_agents.MODEL
    assert data(events[1]) == {"tool_name": "lookup_order", "arguments": {"order_id": "A-42"}, "call_id": "call_tool",
                               "status": "started"}  # fmt: skip
    assert data(events[2])["result"] == TOOL_OUTPUT and data(events[2])["status"] == "completed"
    assert data(events[2])["execution_time_ms"] is not None
    assert data(events[5]) == {"from_agent": "triage", "to_agent": "support", "reason": HANDOFF_REASON}
    chunks = [data(e) for e in events if e.type.value == "chunk"]
    assert [c["delta"] for c in chunks] == DELTAS
    assert [c["token_count"] for c in chunks] == list(range(1, len(DELTAS) + 1))
    assert chunks[-1]["content"] == FINAL_OUTPUT == await jaf_agents.direct_output(prompt())
    metadata = data(events[-2])
    assert metadata["agent_name"] == "support" and metadata["turn_count"] == 3
    assert metadata["total_tokens"] == 3 * USAGE["total_tokens"]
    assert data(events[-1]) == {"content": FINAL_OUTPUT}


async def test_a_provider_without_streaming_publishes_each_turn_as_one_chunk():
    events = await collect(scripted(jaf_agents.WholeAnswerJafProvider()), prompt())
    assert kinds(events)[-3:] == ["chunk", "metadata", "complete"] and kinds(events).count("chunk") == 1
    assert data(events[-1])["content"] == FINAL_OUTPUT


async def test_the_conversation_history_reaches_jaf_before_the_input():
    provider = jaf_agents.ScriptedJafProvider()
    history = [
        Message("user", "my first question"),
        Message("assistant", "", tool_calls=[{"id": "c0", "type": "function",
                                              "function": {"name": "lookup_order", "arguments": "{}"}}]),
        Message("tool", "earlier result", tool_call_id="c0"),
        Message("assistant", "an earlier answer"),
    ]  # fmt: skip
    await collect(scripted(provider), prompt(), history=history)
    first_call = provider.seen[0]
    assert [(m.role, m.content) for m in first_call] == [
        (ContentRole.USER, "my first question"), (ContentRole.ASSISTANT, ""), (ContentRole.TOOL, "earlier result"),
        (ContentRole.ASSISTANT, "an earlier answer"), (ContentRole.USER, prompt()),
    ]  # fmt: skip
    assert first_call[1].tool_calls[0].function.name == "lookup_order" and first_call[2].tool_call_id == "c0"


async def test_jafs_on_event_runs_on_the_loop_thread_and_the_users_own_on_event_sees_every_event():
    seen: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()
    agent = scripted(on_event=lambda event: seen.append((event.type, threading.get_ident() == loop_thread)))
    await collect(agent, prompt())
    assert all(on_loop for _, on_loop in seen)
    assert [kind for kind, _ in seen].count("assistant_message") == len(DELTAS) + 2  # + the two tool-call turns
    assert seen[0][0] == "run_start" and seen[-1][0] == "run_end"


async def test_cancelling_the_task_that_iterates_the_stream_cancels_jafs_run_and_its_model_stream():
    """The worker stops a cancelled run by cancelling the task that iterates the agent's events."""
    three_chunks = asyncio.Event()
    chunks = 0

    async def consume() -> None:
        nonlocal chunks
        async for event in stream_run(scripted(), prompt(pause_ms=20)):
            chunks += event.type.value == "chunk"
            if chunks == 3:
                three_chunks.set()

    STOPPED_LOCALLY.clear()
    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_chunks.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert 3 <= STOPPED_LOCALLY["ungated"]["delivered"] < len(DELTAS)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not pending, f"jaf's run is still going: {pending}"


async def test_a_jaf_error_ends_the_run_with_its_message():
    events = await collect(scripted(), prompt(fail="marker-123"))
    assert kinds(events) == ["start", "error"]
    assert data(events[-1]) == {
        "error_type": "agent_error",
        "detail": "ModelBehaviorError: the scripted model failed on purpose (marker-123)",
    }


async def test_running_out_of_turns_is_max_turns_exceeded():
    events = await collect(scripted(run_config={"max_turns": 1}), prompt())
    assert kinds(events)[-1] == "error" and data(events[-1])["error_type"] == "max_turns_exceeded"
    assert data(events[-1])["detail"].startswith("MaxTurnsExceeded")


class AgentToolProvider:
    """The parent calls its `ask_support` tool (an agent as a tool), then answers; the sub-agent streams text."""

    async def get_completion(self, state: Any, agent: Any, config: Any) -> dict[str, Any]:
        raise AssertionError("streams only")

    async def get_completion_stream(self, state: Any, agent: Any, config: Any) -> AsyncIterator[CompletionStreamChunk]:
        if agent.name == "helper":
            for piece in ("sub ", "agent ", "text"):
                yield CompletionStreamChunk(delta=piece)
        elif not any(m.role in (ContentRole.TOOL, "tool") for m in state.messages):
            fn = ToolCallFunctionDelta(name="ask_helper", arguments_delta=json.dumps({"input": "help"}))
            yield CompletionStreamChunk(tool_call_delta=ToolCallDelta(index=0, id="call_sub", function=fn))
        else:
            for piece in ("parent ", "done"):
                yield CompletionStreamChunk(delta=piece)


async def test_an_agent_used_as_a_tool_shows_only_as_the_parents_tool_call():
    helper = JafAgentDef(name="helper", instructions=lambda s: "help")
    parent = JafAgentDef(
        name="parent", instructions=lambda s: "delegate", tools=[helper.as_tool(tool_name="ask_helper")]
    )
    events = await collect(from_jaf(parent, AgentToolProvider()), "go")
    assert kinds(events) == ["start", "tool_call", "tool_result", "chunk", "chunk", "metadata", "complete"]
    assert data(events[2])["result"] == "sub agent text"
    assert data(events[-1]) == {"content": "parent done"}


def test_registering_checks_handoffs_and_reserved_options():
    with pytest.raises(ValueError, match="pass them in agents"):
        from_jaf(jaf_agents.triage, jaf_agents.ScriptedJafProvider())
    with pytest.raises(ValueError, match="on_event"):
        scripted(run_config={"on_event": print})
    agent = scripted(name="support-desk", description="orders")
    assert (agent.name, agent.description, agent.chunking) == ("support-desk", "orders", None)


def test_a_worker_registry_holds_jaf_agents_beside_runcast_agents():
    registry = load_registry("tests.support.jaf_agents:registry")
    assert set(registry) == {*default_registry, "jaf_support"}
    assert isinstance(registry["jaf_support"], JafAgent)


def test_runcast_imports_without_jaf_and_from_jaf_names_the_extra():
    code = """
import sys
sys.modules["jaf"] = None  # as if jaf-py were not installed
import runcast
from runcast import Agent, Client, RunnableAgent, from_jaf, publisher
import runcast.worker.settings, runcast.worker.job, runcast.gateway.app
assert all(getattr(runcast, name) is not None for name in runcast.__all__)
try:
    from_jaf(object(), object())
except runcast.MissingExtra as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "runcast's jaf-py adapter needs jaf-py, which is not installed" in result.stdout
    assert "pip install 'runcast[jaf]'" in result.stdout
