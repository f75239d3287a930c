"""PydanticAI agents for the adapter's tests: a `FunctionModel` that speaks the scripted model
(`tests.support.scripted_model`), a `lookup_order` tool, and a hand-off from `triage` to `support` through runcast's
`handoff_output` (PydanticAI has no built-in hand-offs; see `runcast.worker.adapters.pydantic_ai`).

`registry` is what a worker loads (`RUNCAST_AGENTS=tests.support.pydantic_ai_agents:registry`);
`direct_output(prompt)` runs the same agents with PydanticAI alone (no runcast: the programmatic hand-off its docs
describe) and returns PydanticAI's own final output.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel

from runcast.worker.adapters import from_pydantic_ai
from runcast.worker.adapters.pydantic_ai import Handoff, handoff_output
from runcast.worker.agents import default_registry
from tests.support.scripted_model import (
    DELTAS,
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
    """The scripted model for one agent, as PydanticAI `FunctionModel` functions: `stream` (what `agent.iter` with
    node streaming and the adapter use) yields text deltas or one tool call; `whole` answers a non-streamed
    request the same way. `seen` keeps the messages of every request."""

    def __init__(self, agent_name: str) -> None:
        self.agent_name = agent_name
        self.seen: list[list[ModelMessage]] = []

    def model(self) -> FunctionModel:
        return FunctionModel(self.whole, stream_function=self.stream, model_name=MODEL)

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

    async def whole(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        _, step = self._step(messages)
        if step == "text":
            return ModelResponse(parts=[TextPart("".join(DELTAS))], model_name=MODEL)
        name, arguments = _call(step)
        return ModelResponse(parts=[ToolCallPart(name, arguments, tool_call_id=f"call_{step}")], model_name=MODEL)

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


triage, support, _models = make_agents()
registry = {
    **default_registry,
    "pydantic_support": from_pydantic_ai(
        triage, agents=[support], description="PydanticAI: lookup tool, handoff, stream"
    ),
}


async def direct_output(prompt_text: str) -> str:
    """PydanticAI's own final output for a prompt, without runcast: triage runs, and when its output is a hand-off
    the application runs the target on the conversation so far (PydanticAI's programmatic hand-off)."""
    first, second, _ = make_agents()
    result = await first.run(prompt_text)
    assert isinstance(result.output, Handoff) and result.output.agent == SECOND_AGENT, result.output
    answer = await second.run(message_history=result.all_messages())
    assert isinstance(answer.output, str)
    return answer.output
