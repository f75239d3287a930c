"""The PydanticAI adapter in-process, beyond the scripted run: failures (the model's, a tool's, retries, usage
limits, an unknown hand-off target), delegation to an agent through a tool, structured output, tool approval,
text over several turns and the run's deps."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from pydantic_ai import Agent, DeferredToolRequests, ModelRetry, RunContext
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall
from pydantic_ai.usage import UsageLimits

from runcast.worker.adapters import from_pydantic_ai
from tests.support import pydantic_ai_agents
from tests.support.pydantic_ai_agents import asked_tool, collect, data, function_model, kinds, scripted
from tests.support.scripted_model import TOOL_OUTPUT, prompt


async def test_a_model_failure_ends_the_run_with_its_message():
    agent, _ = scripted()
    events = await collect(agent, prompt(fail="marker-123"))
    assert kinds(events) == ["start", "error"]
    assert data(events[-1]) == {
        "error_type": "agent_error",
        "detail": "ScriptedFailure: the scripted model failed on purpose (marker-123)",
    }


async def test_a_tool_that_raises_ends_the_run_with_its_message():
    def lookup_order(order_id: str) -> str:
        raise ConnectionError(f"orders database unreachable for {order_id}")

    triage = Agent(pydantic_ai_agents.ScriptedModel("triage").model(), name="triage", tools=[lookup_order])
    events = await collect(from_pydantic_ai(triage), prompt())
    assert kinds(events) == ["start", "tool_call", "error"]
    assert data(events[-1]) == {
        "error_type": "agent_error",
        "detail": "ConnectionError: orders database unreachable for A-42",
    }


async def test_a_model_api_error_is_a_model_error():
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        raise ModelHTTPError(503, "upstream-model", body="overloaded, try later")
        yield ""  # an async generator that fails when first pulled

    events = await collect(from_pydantic_ai(Agent(function_model(model), name="a")), "hi")
    assert kinds(events) == ["start", "error"] and data(events[-1])["error_type"] == "model_error"
    assert "503" in data(events[-1])["detail"] and "upstream-model" in data(events[-1])["detail"]


async def test_a_tool_asking_the_model_to_retry_is_a_failed_result_then_a_new_call():
    attempts: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returns = [p for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, ToolReturnPart)]
        if len(returns) < 2:
            order = "A42" if not returns else "A-42"
            yield {0: DeltaToolCall("lookup_order", json.dumps({"order_id": order}), tool_call_id=f"c{len(returns)}")}
        else:
            yield "shipped"

    agent = Agent(function_model(model), name="a")

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        attempts.append(order_id)
        if "-" not in order_id:
            raise ModelRetry(f"{order_id} is not an order id: they look like A-42")
        return TOOL_OUTPUT

    events = await collect(from_pydantic_ai(agent), "where is A42?")
    assert kinds(events) == ["start", "tool_call", "tool_result", "tool_call", "tool_result", "chunk", "metadata",
                             "complete"]  # fmt: skip
    assert data(events[2])["status"] == "failed" and "they look like A-42" in str(data(events[2])["result"])
    assert data(events[4]) | {"execution_time_ms": None} == {
        "tool_name": "lookup_order", "call_id": "c1", "result": TOOL_OUTPUT, "status": "completed",
        "execution_time_ms": None,
    }  # fmt: skip
    assert attempts == ["A42", "A-42"]


async def test_a_tool_that_keeps_failing_its_retries_ends_the_run_with_unexpected_model_behavior():
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        yield {0: DeltaToolCall("lookup_order", json.dumps({"order_id": "A42"}))}

    agent = Agent(function_model(model), name="a", retries=1)

    @agent.tool_plain
    def lookup_order(order_id: str) -> str:
        raise ModelRetry("not an order id")

    events = await collect(from_pydantic_ai(agent), "where is A42?")
    assert kinds(events)[-1] == "error" and data(events[-1])["error_type"] == "agent_error"
    assert data(events[-1])["detail"].startswith("UnexpectedModelBehavior: ")
    assert "lookup_order" in data(events[-1])["detail"] and "retries" in data(events[-1])["detail"]


async def test_usage_limits_bound_the_whole_hand_off_chain():
    agent, models = scripted(run_options={"usage_limits": UsageLimits(request_limit=2)})
    events = await collect(agent, prompt())
    assert kinds(events)[-2:] == ["agent_switch", "error"]  # triage used both requests, support may make none
    assert data(events[-1])["error_type"] == "usage_limit_exceeded"
    assert data(events[-1])["detail"].startswith("UsageLimitExceeded: The next request would exceed the request_limit")
    assert models["support"].seen == []


async def test_a_hand_off_to_an_agent_not_given_ends_the_run_with_an_error():
    triage, _, _ = pydantic_ai_agents.make_agents()
    events = await collect(from_pydantic_ai(triage), prompt())
    assert kinds(events)[-1] == "error" and "agent_switch" not in kinds(events)
    assert data(events[-1])["detail"] == "LookupError: triage handed off to 'support', which is not in agents=[...]"


async def test_an_agent_delegating_through_a_tool_shows_only_as_the_parents_tool_call():
    async def helper_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for piece in ("sub ", "agent ", "text"):
            yield piece

    async def parent_model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if not asked_tool(messages):
            yield {0: DeltaToolCall("ask_helper", json.dumps({"question": "help"}), tool_call_id="call_sub")}
        else:
            for piece in ("parent ", "done"):
                yield piece

    helper = Agent(function_model(helper_model), name="helper")
    parent = Agent(function_model(parent_model), name="parent")

    @parent.tool_plain
    async def ask_helper(question: str) -> str:
        """Ask the helper agent."""
        return await _run_text(helper, question)

    events = await collect(from_pydantic_ai(parent), "go")
    assert kinds(events) == ["start", "tool_call", "tool_result", "chunk", "chunk", "metadata", "complete"]
    assert data(events[2])["result"] == "sub agent text"
    assert data(events[-1]) == {"content": "parent done"}


async def _run_text(agent: Agent[Any, Any], question: str) -> str:
    """Run an agent to its end (streaming: the helper's model only streams)."""
    async with agent.iter(question) as agent_run:
        async for node in agent_run:
            if Agent.is_model_request_node(node):
                async with node.stream(agent_run.ctx) as stream:
                    async for _ in stream:
                        pass
    assert agent_run.result is not None
    return str(agent_run.result.output)


class Order(BaseModel):
    order_id: str
    status: str


async def test_a_structured_output_is_the_runs_last_chunk_and_its_output_tool_call_is_shown():
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        arguments = json.dumps({"order_id": "A-42", "status": "shipped"})
        yield {0: DeltaToolCall(info.output_tools[0].name, arguments, tool_call_id="out")}

    agent = Agent(function_model(model), name="orders", output_type=Order)
    events = await collect(from_pydantic_ai(agent), "status of A-42?")
    assert kinds(events) == ["start", "tool_call", "tool_result", "chunk", "metadata", "complete"]
    assert data(events[1])["arguments"] == {"order_id": "A-42", "status": "shipped"}
    assert json.loads(data(events[-1])["content"]) == {"order_id": "A-42", "status": "shipped"}


async def test_a_run_that_stops_for_tool_approval_ends_interrupted():
    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        yield {0: DeltaToolCall("refund", json.dumps({"order_id": "A-42"}), tool_call_id="r1")}

    agent = Agent(function_model(model), name="refunds", output_type=[str, DeferredToolRequests])

    @agent.tool_plain(requires_approval=True)
    def refund(order_id: str) -> str:
        return f"refunded {order_id}"

    events = await collect(from_pydantic_ai(agent), "refund A-42")
    assert kinds(events)[-1] == "error" and data(events[-1])["error_type"] == "interrupted"
    assert "tool_call" in kinds(events)


async def test_text_of_several_turns_is_separated_and_deps_come_from_the_request():
    seen_deps: list[Any] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if not asked_tool(messages):
            yield "Checking"
            yield {1: DeltaToolCall("whoami", "{}", tool_call_id="w")}
        else:
            yield "Done"

    agent = Agent(function_model(model), name="me", deps_type=dict)

    @agent.tool
    def whoami(ctx: RunContext[dict[str, Any]]) -> str:
        seen_deps.append(ctx.deps)
        return str(ctx.deps["user"])

    adapter = from_pydantic_ai(agent, deps=lambda request: dict(request.metadata))
    events = await collect(adapter, "who am I?", metadata={"user": "u-7"})
    assert seen_deps == [{"user": "u-7"}]
    assert [data(e)["delta"] for e in events if e.type.value == "chunk"] == ["Checking", "\n\nDone"]
    assert data(events[-1]) == {"content": "Checking\n\nDone"}
