"""PydanticAI agents for the adapter's tests: a `FunctionModel` that speaks the scripted model
(`tests.support.scripted_model`), a `lookup_order` tool, and a hand-off from `triage` to `support` through runcast's
`handoff_output` (PydanticAI has no built-in hand-offs; see `runcast.worker.adapters.pydantic_ai`).

`registry` is what a worker loads (`RUNCAST_AGENTS=tests.support.pydantic_ai_agents:registry`);
`direct_output(prompt)` runs the same agents with PydanticAI alone (no runcast: the programmatic hand-off its docs
describe) and returns PydanticAI's own final output. `collect`, `kinds`, `data`, `function_model`, `asked_tool`
serve the in-process tests, `scripted(...)` gives them a fresh adapter.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic_ai import Agent, AgentRunResultEvent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.run import AgentRunResult

from runcast.shared.streaming import StreamingEvent
from runcast.worker.adapters import from_pydantic_ai
from runcast.worker.adapters.pydantic_ai import Handoff, PydanticAIAgent, handoff_output
from runcast.worker.agents import default_registry
from runcast.worker.runnable import stream_run
from tests.support.scripted_model import (
    FIRST_AGENT,
    HANDOFF_REASON,
    SECOND_AGENT,
    TOOL_ARGS,
    TOOL_NAME,
    TOOL_OUTPUT,
    Script,
    fail_if_asked,
    next_step,
    text_deltas,
)

MODEL = "scripted-pydantic-ai"


class ScriptedModel:
    """The scripted model for one agent, as a PydanticAI `FunctionModel` stream function: text deltas or one tool
    call, as a streaming provider gives them. It only streams (like the adapter, `run_streamed` streams every
    request). `seen` keeps the messages of every request."""

    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name
        self.seen: list[list[ModelMessage]] = []

    def model(self) -> FunctionModel:
        return FunctionModel(stream_function=self.stream, model_name=MODEL)

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | dict[int, Any]]:
        script, step = self._step(messages)
        if step == "text":
            # aclosing: when PydanticAI closes this stream early, the scripted deltas record the stop too
            async with contextlib.aclosing(text_deltas(script)) as deltas:
                async for delta in deltas:
                    yield delta
        else:
            name, arguments = _call(step)
            yield {0: DeltaToolCall(name, arguments, tool_call_id=f"call_{step}")}

    def _step(self, messages: list[ModelMessage]) -> tuple[Script, str]:
        self.seen.append(list(messages))
        requests = [part for m in messages if isinstance(m, ModelRequest) for part in m.parts]
        prompts = [part.content for part in requests if isinstance(part, UserPromptPart)]
        script = Script.parse(str(prompts[-1]) if prompts else "")
        fail_if_asked(script)
        lookups = sum(1 for part in requests if isinstance(part, ToolReturnPart) and part.tool_name == TOOL_NAME)
        return script, next_step(self.agent_name, lookups)


def _call(step: str) -> tuple[str, str]:
    if step == "tool":
        return TOOL_NAME, json.dumps(TOOL_ARGS)
    return "handoff", json.dumps({"agent_name": SECOND_AGENT, "reason": HANDOFF_REASON})


def lookup_order(order_id: str) -> str:
    """Look an order up by id."""
    return TOOL_OUTPUT if order_id == TOOL_ARGS["order_id"] else f"no order {order_id}"


def make_agents() -> tuple[Agent[None, str], Agent[None, str], dict[str, ScriptedModel]]:
    """Fresh `triage` and `support` agents on their own scripted models (tests read `models[name].seen`)."""
    models = {name: ScriptedModel(name) for name in (FIRST_AGENT, SECOND_AGENT)}
    support = Agent(
        models[SECOND_AGENT].model(),
        name=SECOND_AGENT,
        instructions="Answer the customer's question about their order.",
    )
    triage = Agent(
        models[FIRST_AGENT].model(),
        name=FIRST_AGENT,
        instructions="Look the order up, then hand the customer to support.",
        output_type=[str, handoff_output(support)],
        tools=[lookup_order],
    )
    return triage, support, models


def scripted(**options: Any) -> tuple[PydanticAIAgent, dict[str, ScriptedModel]]:
    """The scripted agents behind runcast's adapter (`options`: `from_pydantic_ai`'s), and their models."""
    first, second, models = make_agents()
    return from_pydantic_ai(first, agents=[second], **options), models


triage, support, _models = make_agents()
registry = {
    **default_registry,
    "pydantic_support": from_pydantic_ai(
        triage, agents=[support], description="PydanticAI: lookup tool, handoff, stream"
    ),
}


async def run_streamed(agent: Agent[Any, Any], prompt_text: str | None, **options: Any) -> AgentRunResult[Any]:
    """An agent's run through PydanticAI's own event stream (`run_stream_events`), to its result."""
    async with agent.run_stream_events(prompt_text, **options) as events:
        async for event in events:
            if isinstance(event, AgentRunResultEvent):
                return event.result
    raise AssertionError("the run's events ended without its result")


async def direct_run(prompt_text: str) -> AgentRunResult[Any]:
    """The scripted conversation run by PydanticAI alone: triage runs, and as its output is a hand-off the
    application runs the target on the conversation so far (PydanticAI's programmatic hand-off), carrying usage."""
    first, second, _ = make_agents()
    result = await run_streamed(first, prompt_text)
    assert isinstance(result.output, Handoff) and result.output.agent == SECOND_AGENT, result.output
    return await run_streamed(second, None, message_history=result.all_messages(), usage=result.usage)


async def direct_output(prompt_text: str) -> str:
    """PydanticAI's own final output for a prompt, without runcast."""
    answer = await direct_run(prompt_text)
    assert isinstance(answer.output, str)
    return answer.output


async def collect(agent: PydanticAIAgent, text: str, **kwargs: Any) -> list[StreamingEvent]:
    """A run's events, in-process (`stream_run`)."""
    return [event async for event in stream_run(agent, text, **kwargs)]


def kinds(events: list[StreamingEvent]) -> list[str]:
    return [event.type.value for event in events]


def data(event: StreamingEvent) -> dict[str, Any]:
    return event.to_dict()["data"]


def function_model(stream: Callable[[list[ModelMessage], AgentInfo], AsyncIterator[Any]]) -> FunctionModel:
    return FunctionModel(stream_function=stream, model_name="fn")


def asked_tool(messages: list[ModelMessage]) -> bool:
    """Whether the conversation already holds a tool's return."""
    return any(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)
