"""The PydanticAI adapter in-process (real PydanticAI with its `FunctionModel`, no Redis): how the scripted run's
node streams map to runcast events, usage, hand-off, history, cancel, registering, and the `pydantic-ai` extra
being optional. Other run shapes and failures: test_adapter_pydantic_ai_outcomes.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo

from runcast.worker.adapters import from_pydantic_ai
from runcast.worker.adapters.pydantic_ai import PydanticAIAgent, Translator, handoff_output, to_model_messages
from runcast.worker.agents import default_registry, load_registry
from runcast.worker.events import RunEvents
from runcast.worker.providers.base import Message
from runcast.worker.runnable import stream_run
from tests.support import pydantic_ai_agents
from tests.support.pydantic_ai_agents import collect, data, function_model, kinds, scripted
from tests.support.scripted_model import (
    DELTAS,
    FINAL_OUTPUT,
    HANDOFF_REASON,
    STOPPED_LOCALLY,
    TOOL_OUTPUT,
    prompt,
)


async def test_a_pydantic_ai_run_maps_to_runcast_events_one_chunk_per_delta():
    agent, _ = scripted()
    events = await collect(agent, prompt(), run_id="run-pai-1")
    assert kinds(events) == [
        "start", "tool_call", "tool_result", "tool_call", "tool_result", "agent_switch",
        *["chunk"] * len(DELTAS), "metadata", "complete",
    ]  # fmt: skip
    assert all(event.run_id == "run-pai-1" for event in events)
    assert data(events[0])["agent_name"] == "triage"
    assert data(events[0])["model_name"] == pydantic_ai_agents.MODEL
    assert data(events[1]) == {"tool_name": "lookup_order", "arguments": {"order_id": "A-42"}, "call_id": "call_tool",
                               "status": "started"}  # fmt: skip
    assert data(events[2])["result"] == TOOL_OUTPUT and data(events[2])["status"] == "completed"
    assert data(events[2])["call_id"] == "call_tool" and data(events[2])["execution_time_ms"] is not None
    assert data(events[3])["tool_name"] == "handoff"
    assert data(events[3])["arguments"] == {"agent_name": "support", "reason": HANDOFF_REASON}
    assert data(events[5]) == {"from_agent": "triage", "to_agent": "support", "reason": HANDOFF_REASON}
    chunks = [data(e) for e in events if e.type.value == "chunk"]
    assert [c["delta"] for c in chunks] == DELTAS
    assert [c["token_count"] for c in chunks] == list(range(1, len(DELTAS) + 1))
    assert chunks[-1]["content"] == FINAL_OUTPUT == await pydantic_ai_agents.direct_output(prompt())
    assert data(events[-1]) == {"content": FINAL_OUTPUT}


async def test_usage_and_model_turns_reach_metadata():
    agent, _ = scripted()
    events = await collect(agent, prompt())
    metadata = data(events[-2])
    assert metadata["agent_name"] == "support" and metadata["model_name"] == pydantic_ai_agents.MODEL
    assert metadata["turn_count"] == 3  # triage: tool call, hand-off; support: the answer
    own = await pydantic_ai_agents.direct_run(prompt())  # the same chain run by PydanticAI alone
    assert metadata["total_tokens"] == own.usage.total_tokens > 0


async def test_the_conversation_history_reaches_pydantic_ai_before_the_input():
    agent, models = scripted()
    history = [
        Message("user", "my first question"),
        Message("assistant", "", tool_calls=[{"id": "c0", "type": "function",
                                              "function": {"name": "lookup_order", "arguments": '{"order_id": "B"}'}}]),
        Message("tool", "earlier result", tool_call_id="c0"),
        Message("assistant", "an earlier answer"),
    ]  # fmt: skip
    await collect(agent, prompt(), history=history)
    first = models["triage"].seen[0]
    assert [type(m).__name__ for m in first] == ["ModelRequest", "ModelResponse", "ModelRequest", "ModelResponse",
                                                 "ModelRequest"]  # fmt: skip
    assert _parts(first[0]) == [("UserPromptPart", "my first question")]
    call = first[1].parts[0]
    assert isinstance(call, ToolCallPart) and (call.tool_name, call.tool_call_id) == ("lookup_order", "c0")
    assert call.args_as_dict() == {"order_id": "B"}
    tool_return = first[2].parts[0]
    assert isinstance(tool_return, ToolReturnPart)
    assert (tool_return.tool_name, tool_return.content, tool_return.tool_call_id) == (
        "lookup_order", "earlier result", "c0"
    )  # fmt: skip
    assert _parts(first[3]) == [("TextPart", "an earlier answer")]
    assert _parts(first[4]) == [("UserPromptPart", prompt())]
    # the agent handed off to gets the whole conversation: the history, the input, triage's hand-off
    support_saw = [part for message in models["support"].seen[0] for part in _parts(message)]
    assert support_saw[0] == ("UserPromptPart", "my first question")
    assert ("UserPromptPart", prompt()) in support_saw
    assert support_saw[-1] == ("ToolReturnPart", "Handed off to support.")


def _parts(message: ModelMessage) -> list[tuple[str, Any]]:
    return [(type(part).__name__, getattr(part, "content", None)) for part in message.parts]


def test_consecutive_request_messages_share_one_model_request():
    history = [
        Message("system", "be brief"),
        Message("user", "hi"),
        Message("assistant", "", tool_calls=[{"id": "a", "function": {"name": "f", "arguments": ""}},
                                             {"id": "b", "function": {"name": "g", "arguments": "{}"}}]),
        Message("tool", "1", tool_call_id="a"),
        Message("tool", "2", tool_call_id="b", name="g"),
        Message("user", "thanks"),
    ]  # fmt: skip
    messages = to_model_messages(history)
    assert [type(m) for m in messages] == [ModelRequest, ModelResponse, ModelRequest]
    assert _parts(messages[0]) == [("SystemPromptPart", "be brief"), ("UserPromptPart", "hi")]
    assert [(p.tool_name, p.tool_call_id) for p in messages[2].parts if isinstance(p, ToolReturnPart)] == [
        ("f", "a"), ("g", "b")
    ]  # fmt: skip
    assert isinstance(messages[2].parts[-1], UserPromptPart)
    with pytest.raises(ValueError, match="unknown role"):
        to_model_messages([Message("narrator", "once upon a time")])


def test_text_parts_publish_only_new_text_whatever_order_the_part_events_come_in():
    run = RunEvents("r", "a", "m")
    translate = Translator(run)
    translate.new_turn("m")
    events = [
        PartStartEvent(index=0, part=TextPart("Hel")),
        PartDeltaEvent(index=0, delta=TextPartDelta("lo")),
        PartStartEvent(index=0, part=TextPart("Hello")),  # a repeated start replaces the part: nothing new
        PartEndEvent(index=0, part=TextPart("Hello!")),  # an end with more text than the deltas gave
        PartStartEvent(index=1, part=TextPart(" Bye")),
    ]
    deltas = [data(e)["delta"] for event in events for e in translate(event)]
    assert deltas == ["Hel", "lo", "!", " Bye"]
    assert run.content == "Hello! Bye"


async def test_cancelling_the_task_that_iterates_the_stream_cancels_the_model_stream():
    """The worker stops a cancelled run by cancelling the task that iterates the agent's events."""
    agent, _ = scripted()
    three_chunks = asyncio.Event()
    chunks = 0

    async def consume() -> None:
        nonlocal chunks
        async for event in stream_run(agent, prompt(pause_ms=20)):
            chunks += event.type.value == "chunk"
            if chunks == 3:
                three_chunks.set()

    STOPPED_LOCALLY.clear()
    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_chunks.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # PydanticAI pulls the model's stream lazily: the third delta's `yield` had not returned when it was stopped
    assert 2 <= STOPPED_LOCALLY["ungated"]["delivered"] < len(DELTAS)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not pending, f"PydanticAI's run is still going: {pending}"


def test_registering_checks_names_and_reserved_options():
    unnamed = Agent(pydantic_ai_agents.ScriptedModel("x").model())
    with pytest.raises(ValueError, match="needs a name"):
        from_pydantic_ai(unnamed)
    assert from_pydantic_ai(unnamed, name="desk").name == "desk"
    with pytest.raises(ValueError, match="message_history"):
        scripted(run_options={"message_history": []})
    with pytest.raises(ValueError, match="at least one agent"):
        handoff_output()
    agent, _ = scripted(name="support-desk", description="orders")
    assert (agent.name, agent.description, agent.chunking) == ("support-desk", "orders", None)


async def test_an_unnamed_first_agent_takes_the_registered_name():
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield "hi"

    events = await collect(from_pydantic_ai(Agent(function_model(model)), name="desk"), "hello")
    assert data(events[0])["agent_name"] == "desk" and data(events[-1]) == {"content": "hi"}


async def test_the_handoff_tool_offers_the_model_only_the_agents_it_names():
    offered: list[Any] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        offered.extend(info.output_tools)
        yield "no hand-off needed"

    _, support, _ = pydantic_ai_agents.make_agents()
    agent = Agent(function_model(model), name="t", output_type=[str, handoff_output(support, "billing")])
    await collect(from_pydantic_ai(agent, agents=[support]), "hi")
    (tool,) = offered
    assert tool.name == "handoff" and "support, billing" in (tool.description or "")
    assert tool.parameters_json_schema["properties"]["agent_name"]["enum"] == ["support", "billing"]
    assert set(tool.parameters_json_schema["required"]) == {"agent_name", "reason"}


def test_a_worker_registry_holds_pydantic_ai_agents_beside_runcast_agents():
    registry = load_registry("tests.support.pydantic_ai_agents:registry")
    assert set(registry) == {*default_registry, "pydantic_support"}
    assert isinstance(registry["pydantic_support"], PydanticAIAgent)


def test_runcast_imports_without_pydantic_ai_and_from_pydantic_ai_names_the_extra():
    code = """
import sys
sys.modules["pydantic_ai"] = None  # as if pydantic-ai-slim were not installed
import runcast
from runcast import Agent, Client, RunnableAgent, from_pydantic_ai, publisher
import runcast.worker.settings, runcast.worker.job, runcast.gateway.app
assert all(getattr(runcast, name) is not None for name in runcast.__all__)
try:
    from_pydantic_ai(object())
except runcast.MissingExtra as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "runcast's PydanticAI adapter needs pydantic-ai-slim, which is not installed" in result.stdout
    assert "pip install 'runcast[pydantic-ai]'" in result.stdout
