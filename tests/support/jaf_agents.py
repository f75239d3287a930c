"""jaf-py agents for the adapter's tests and benchmark: a jaf model provider with `get_completion_stream` that
speaks the scripted model (`tests.support.scripted_model`), a `lookup_order` tool, jaf's handoff tool.

`registry` is what a worker loads (`RUNCAST_AGENTS=tests.support.jaf_agents:registry`); `direct_output(prompt)`
runs the same agent with jaf alone (no runcast) and returns jaf's own final output.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # jaf imports litellm: no cost-map download offline

from jaf import Agent as JafAgent
from jaf import create_function_tool
from jaf.core.engine import run as jaf_run
from jaf.core.handoff import handoff_tool
from jaf.core.types import (
    CompletionStreamChunk,
    ContentRole,
    Message,
    ModelConfig,
    RunConfig,
    RunId,
    RunState,
    ToolCallDelta,
    ToolCallFunctionDelta,
    TraceId,
)
from pydantic import BaseModel

from runcast.worker.adapters import from_jaf
from runcast.worker.agents import default_registry
from tests.support.scripted_model import (
    DELTAS,
    FIRST_AGENT,
    HANDOFF_REASON,
    SECOND_AGENT,
    TOOL_ARGS,
    TOOL_NAME,
    TOOL_OUTPUT,
    USAGE,
    Script,
    fail_if_asked,
    next_step,
    text_deltas,
)

MODEL = "scripted-jaf"


class ScriptedJafProvider:
    """A jaf model provider that streams the scripted model (`get_completion_stream`), as an OpenAI-style provider
    streams: text deltas, tool-call pieces, usage in the raw chunk. `get_completion` answers whole (jaf's
    non-streaming path, and its fallback when a stream fails). `seen` keeps the messages of every call."""

    model = MODEL

    def __init__(self) -> None:
        self.seen: list[list[Message]] = []

    async def get_completion(self, state: RunState, agent: JafAgent, config: RunConfig) -> dict[str, Any]:
        script = self._script(state)
        fail_if_asked(script)
        step = next_step(agent.name, _tool_results(state))
        if step == "text":
            return {"message": {"content": "".join(DELTAS), "tool_calls": None}, "usage": USAGE, "model": MODEL}
        name, arguments = _call(step)
        call = {"id": f"call_{step}", "type": "function", "function": {"name": name, "arguments": arguments}}
        return {"message": {"content": None, "tool_calls": [call]}, "usage": USAGE, "model": MODEL}

    async def get_completion_stream(
        self, state: RunState, agent: JafAgent, config: RunConfig
    ) -> AsyncIterator[CompletionStreamChunk]:
        script = self._script(state)
        fail_if_asked(script)
        step = next_step(agent.name, _tool_results(state))
        if step == "text":
            async for delta in text_deltas(script):
                yield CompletionStreamChunk(delta=delta)
        else:
            name, arguments = _call(step)
            function = ToolCallFunctionDelta(name=name, arguments_delta=arguments)
            yield CompletionStreamChunk(tool_call_delta=ToolCallDelta(index=0, id=f"call_{step}", function=function))
        yield CompletionStreamChunk(is_done=True, finish_reason="stop", raw={"usage": USAGE, "model": MODEL})

    def _script(self, state: RunState) -> Script:
        self.seen.append(list(state.messages))
        user = [m for m in state.messages if m.role in (ContentRole.USER, "user")]
        return Script.parse(str(user[-1].content) if user else "")


class WholeAnswerJafProvider(ScriptedJafProvider):
    """The same model without `get_completion_stream`: jaf then calls `get_completion` once per turn."""

    get_completion_stream = None  # type: ignore[assignment]


def _tool_results(state: RunState) -> int:
    return sum(1 for m in state.messages if m.role in (ContentRole.TOOL, "tool"))


def _call(step: str) -> tuple[str, str]:
    if step == "tool":
        return TOOL_NAME, json.dumps(TOOL_ARGS)
    return "handoff", json.dumps({"agent_name": SECOND_AGENT, "message": HANDOFF_REASON})


class LookupArgs(BaseModel):
    order_id: str


async def lookup_order(args: LookupArgs, context: Any) -> str:
    return TOOL_OUTPUT if args.order_id == TOOL_ARGS["order_id"] else f"no order {args.order_id}"


lookup_tool = create_function_tool(
    {"name": TOOL_NAME, "description": "Look an order up by id.", "execute": lookup_order, "parameters": LookupArgs}
)

triage = JafAgent(
    name=FIRST_AGENT,
    instructions=lambda state: "Look the order up, then hand the customer to support.",
    tools=[lookup_tool, handoff_tool],
    handoffs=[SECOND_AGENT],
    model_config=ModelConfig(name=MODEL),
)
support = JafAgent(
    name=SECOND_AGENT,
    instructions=lambda state: "Answer the customer's question about their order.",
    model_config=ModelConfig(name=MODEL),
)

provider = ScriptedJafProvider()
registry = {
    **default_registry,
    "jaf_support": from_jaf(triage, provider, agents=[support], description="jaf-py: lookup tool, handoff, stream"),
}


async def direct_output(prompt_text: str, model_provider: Any = None) -> str:
    """jaf's own final output for a prompt: the same agents run by `jaf.core.engine.run`, without runcast."""
    state = RunState(
        run_id=RunId("direct"),
        trace_id=TraceId("direct"),
        messages=[Message(role=ContentRole.USER, content=prompt_text)],
        current_agent_name=FIRST_AGENT,
        context={},
        turn_count=0,
    )
    config = RunConfig(
        agent_registry={FIRST_AGENT: triage, SECOND_AGENT: support},
        model_provider=model_provider or ScriptedJafProvider(),
    )
    result = await jaf_run(state, config)
    assert result.outcome.status == "completed", result.outcome
    return str(result.outcome.output)
