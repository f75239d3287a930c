"""The OpenAI Agents SDK adapter in-process (the real SDK, no Redis): how the SDK's stream events map to runcast's,
usage, history, handoffs and agent changes, cancel and close stopping the SDK's run, errors, and the extra being
optional. The model is the SDK's `OpenAIChatCompletionsModel` against the scripted chat-completions server, or the
SDK's own `agents.testing.ScriptedModel` where a test needs a model that does something else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from agents import Agent, ModelSettings, RunConfig, RunContextWrapper, function_tool
from agents.items import MessageOutputItem
from agents.stream_events import AgentUpdatedStreamEvent, RawResponsesStreamEvent, RunItemStreamEvent
from agents.testing import ScriptedModel, assistant_message, function_call
from openai.types.responses import ResponseTextDeltaEvent

from runcast.shared.streaming import StreamingEvent
from runcast.worker.adapters import from_openai_agents
from runcast.worker.adapters.openai_agents import OpenAIAgentsAgent, Translator, handoff_reason
from runcast.worker.agents import default_registry, load_registry
from runcast.worker.events import RunEvents
from runcast.worker.providers.base import Message
from runcast.worker.runnable import RunRequest, run_events, stream_run
from tests.support import openai_agents
from tests.support.extras import check_runcast_imports_without
from tests.support.faults import wait_until
from tests.support.scripted_chat_server import ScriptedChatServer, model_for
from tests.support.scripted_model import (
    DELTAS,
    FINAL_OUTPUT,
    HANDOFF_REASON,
    STOPPED_LOCALLY,
    TOOL_OUTPUT,
    USAGE,
    prompt,
)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedChatServer]:
    with ScriptedChatServer().running() as running:
        yield running


def scripted(server: ScriptedChatServer, **options: Any) -> OpenAIAgentsAgent:
    return from_openai_agents(openai_agents.make_triage(server.base_url), **options)


async def collect(agent: OpenAIAgentsAgent, text: str, **kwargs: Any) -> list[StreamingEvent]:
    return [event async for event in stream_run(agent, text, **kwargs)]


def kinds(events: list[StreamingEvent]) -> list[str]:
    return [event.type.value for event in events]


def data(event: StreamingEvent) -> dict[str, Any]:
    return event.to_dict()["data"]


async def test_a_streamed_sdk_run_maps_to_runcast_events_one_chunk_per_delta(server: ScriptedChatServer):
    events = await collect(scripted(server), prompt(), run_id="run-oa-1")
    assert kinds(events) == [
        "start", "tool_call", "tool_result", "agent_switch", *["chunk"] * len(DELTAS), "metadata", "complete",
    ]  # fmt: skip
    assert all(event.run_id == "run-oa-1" for event in events)
    assert data(events[0])["agent_name"] == "triage" and data(events[0])["model_name"] == model_for("triage")
    assert data(events[1]) == {"tool_name": "lookup_order", "arguments": {"order_id": "A-42"}, "call_id": "call_tool",
                               "status": "started"}  # fmt: skip
    assert data(events[2])["result"] == TOOL_OUTPUT and data(events[2])["status"] == "completed"
    assert data(events[2])["call_id"] == "call_tool" and data(events[2])["execution_time_ms"] is not None
    assert data(events[3]) == {"from_agent": "triage", "to_agent": "support", "reason": HANDOFF_REASON}
    chunks = [data(e) for e in events if e.type.value == "chunk"]
    assert [c["delta"] for c in chunks] == DELTAS
    assert [c["token_count"] for c in chunks] == list(range(1, len(DELTAS) + 1))
    assert chunks[-1]["content"] == FINAL_OUTPUT == await openai_agents.direct_output(server.base_url, prompt())
    metadata = data(events[-2])
    assert metadata["agent_name"] == "support" and metadata["model_name"] == model_for("support")
    assert metadata["turn_count"] == 3
    assert metadata["total_tokens"] == 3 * USAGE["total_tokens"], "usage of every model response, as the SDK got it"
    assert data(events[-1]) == {"content": FINAL_OUTPUT}


async def test_without_usage_from_the_model_metadata_has_no_token_count(server: ScriptedChatServer):
    no_usage = RunConfig(model_settings=ModelSettings(include_usage=False))  # the server then sends no usage chunk
    events = await collect(scripted(server, run_options={"run_config": no_usage}), prompt())
    assert kinds(events)[-2:] == ["metadata", "complete"]
    assert data(events[-2])["total_tokens"] is None and data(events[-2])["turn_count"] == 3


async def test_the_conversation_history_reaches_the_sdk_before_the_input(server: ScriptedChatServer):
    history = [
        Message("user", "my first question"),
        Message("assistant", "", tool_calls=[{"id": "c0", "type": "function",
                                              "function": {"name": "lookup_order", "arguments": "{}"}}]),
        Message("tool", "earlier result", tool_call_id="c0"),
        Message("assistant", "an earlier answer"),
    ]  # fmt: skip
    before = len(server.requests)
    events = await collect(scripted(server), prompt(), history=history)
    assert kinds(events)[-1] == "complete"
    first_call = server.requests[before]["messages"]
    assert [(m["role"], m.get("content")) for m in first_call[1:]] == [
        ("user", "my first question"), ("assistant", None), ("tool", "earlier result"),
        ("assistant", "an earlier answer"), ("user", prompt()),
    ]  # fmt: skip
    assert first_call[2]["tool_calls"][0]["id"] == "c0" and first_call[2]["tool_calls"][0]["function"]["name"] == (
        "lookup_order"
    )
    assert first_call[3]["tool_call_id"] == "c0"


async def wait_for_stop(key: str) -> dict[str, Any]:
    """How the model server's stream stopped (it records the request going away, in its own thread)."""
    await wait_until(lambda: key in STOPPED_LOCALLY, 10, "the model's stream to stop")
    return STOPPED_LOCALLY[key]


def sdk_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_cancelling_the_task_that_iterates_the_stream_stops_the_sdk_run_and_its_model_request(
    server: ScriptedChatServer,
):
    """The worker stops a cancelled run by cancelling the task that iterates the agent's events."""
    three_chunks = asyncio.Event()
    chunks = 0

    async def consume() -> None:
        nonlocal chunks
        async for event in stream_run(scripted(server), prompt(pause_ms=20)):
            chunks += event.type.value == "chunk"
            if chunks == 3:
                three_chunks.set()

    STOPPED_LOCALLY.clear()
    task = asyncio.create_task(consume())
    await asyncio.wait_for(three_chunks.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sdk_tasks(), f"the SDK's run is still going: {sdk_tasks()}"
    stopped = await wait_for_stop("ungated")  # the server saw the model request go away
    assert 3 <= stopped["delivered"] < len(DELTAS)


async def test_closing_the_stream_while_it_waits_at_an_event_stops_the_sdk_run(server: ScriptedChatServer):
    """Closed while suspended at an event (not waiting in the SDK's queue), the SDK's own `stream_events()` would
    wait for the whole run to finish: the adapter cancels the run first. `run_events` is what the worker iterates."""
    STOPPED_LOCALLY.clear()
    stream = run_events(scripted(server), RunRequest(run_id="run-oa-close", input=prompt(pause_ms=20)))
    chunks = 0
    async for event in stream:
        chunks += event.type.value == "chunk"
        if chunks == 3:
            break
    await stream.aclose()
    assert not sdk_tasks(), f"the SDK's run is still going: {sdk_tasks()}"
    stopped = await wait_for_stop("ungated")
    assert 3 <= stopped["delivered"] < len(DELTAS)


async def test_a_model_error_ends_the_run_with_its_message(server: ScriptedChatServer):
    events = await collect(scripted(server), prompt(fail="marker-123"))
    assert kinds(events) == ["start", "error"]
    error = data(events[-1])
    assert error["error_type"] == "agent_error"
    assert error["detail"].startswith("InternalServerError: ") and "marker-123" in error["detail"]


async def test_running_out_of_turns_is_max_turns_exceeded(server: ScriptedChatServer):
    events = await collect(scripted(server, run_options={"max_turns": 1}), prompt())
    assert kinds(events)[-1] == "error"
    error = data(events[-1])
    assert error == {"error_type": "max_turns_exceeded", "detail": "MaxTurnsExceeded: Max turns (1) exceeded"}
    assert kinds(events).count("error") == 1


@function_tool
def whoami(context: RunContextWrapper[dict[str, Any]]) -> str:
    """The customer this run is for."""
    return f"customer {context.context['customer']}"


async def test_a_tools_output_is_the_answer_when_the_run_stops_on_it_and_the_context_is_the_runs_metadata():
    model = ScriptedModel([[function_call("whoami", {}, call_id="c1")]])
    agent = Agent(name="desk", model=model, tools=[whoami], tool_use_behavior="stop_on_first_tool")
    events = await collect(from_openai_agents(agent), "who am I?", metadata={"customer": "C-7"})
    assert kinds(events) == ["start", "tool_call", "tool_result", "chunk", "metadata", "complete"]
    assert data(events[2])["result"] == "customer C-7"
    assert data(events[-1]) == {"content": "customer C-7"}


@function_tool(needs_approval=True)
def refund(order_id: str) -> str:
    """Refund an order."""
    return f"refunded {order_id}"


async def test_a_tool_waiting_for_approval_ends_the_run_as_interrupted():
    model = ScriptedModel([[function_call("refund", {"order_id": "A-42"}, call_id="c1")]])
    events = await collect(from_openai_agents(Agent(name="desk", model=model, tools=[refund])), "refund A-42")
    assert kinds(events)[-1] == "error" and data(events[-1])["error_type"] == "interrupted"
    assert "tool_result" not in kinds(events)


def translator() -> Translator:
    return Translator(RunEvents("run-1", "triage", "m"), lambda agent: f"model of {agent.name}")


def test_an_agent_change_without_a_handoff_item_is_an_agent_switch_and_the_first_agent_is_not():
    translate = translator()
    assert translate(AgentUpdatedStreamEvent(new_agent=Agent(name="triage"))) == []
    [switch] = translate(AgentUpdatedStreamEvent(new_agent=Agent(name="billing")))
    assert data(switch) == {"from_agent": "triage", "to_agent": "billing", "reason": ""}
    assert translate.run.model_name == "model of billing"


def message_event(text: str, item_id: str = "msg") -> RunItemStreamEvent:
    message = MessageOutputItem(agent=Agent(name="triage"), raw_item=assistant_message(text, item_id=item_id))
    return RunItemStreamEvent(name="message_output_created", item=message)


def delta_event(delta: str, item_id: str = "msg") -> RawResponsesStreamEvent:
    data = ResponseTextDeltaEvent(
        type="response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=delta,
        logprobs=[], sequence_number=0,
    )  # fmt: skip
    return RawResponsesStreamEvent(data=data)


def test_a_message_that_was_not_streamed_as_deltas_is_published_as_one_chunk():
    translate = translator()
    [chunk] = translate(message_event("whole answer"))
    assert data(chunk)["delta"] == "whole answer"
    assert kinds(translate.end("whole answer", [])) == ["metadata", "complete"]


def test_a_streamed_message_is_not_published_again_when_it_finishes_whatever_its_item_id():
    translate = translator()
    streamed = [event for delta in ("Your", " order") for event in translate(delta_event(delta, "__fake_id__"))]
    assert translate(message_event("Your order", "msg_real_id")) == []
    [rest] = translate(message_event("Then more"))  # a second message of the turn that came without deltas
    assert [data(e)["delta"] for e in [*streamed, rest]] == ["Your", " order", "Then more"]
    assert translate.run.content == "Your orderThen more"


def test_a_handoffs_reason_is_its_reason_or_only_string_argument():
    assert handoff_reason('{"reason": "billing question"}') == "billing question"
    assert handoff_reason('{"topic": "refunds"}') == "refunds"
    assert handoff_reason('{"priority": 2, "topic": "refunds"}') == '{"priority": 2, "topic": "refunds"}'
    assert handoff_reason("") == "" and handoff_reason("{}") == "" and handoff_reason(None) == ""


def test_registering_checks_the_agent_and_reserved_options(server: ScriptedChatServer):
    with pytest.raises(TypeError, match=r"agents\.Agent"):
        from_openai_agents(object())
    with pytest.raises(ValueError, match="context"):
        scripted(server, run_options={"context": {}})
    agent = scripted(server, name="support-desk", description="orders")
    assert (agent.name, agent.description, agent.chunking) == ("support-desk", "orders", None)
    assert scripted(server).description == "OpenAI Agents SDK agent triage"


def test_a_worker_registry_holds_openai_agents_beside_runcast_agents():
    registry = load_registry("tests.support.openai_agents:registry")
    assert set(registry) == {*default_registry, "openai_support"}
    assert isinstance(registry["openai_support"], OpenAIAgentsAgent)


def test_runcast_imports_without_the_sdk_and_from_openai_agents_names_the_extra():
    check_runcast_imports_without(
        "agents", "from_openai_agents", "object()", framework="OpenAI Agents SDK", package="openai-agents",
        extra="openai-agents",
    )  # fmt: skip
