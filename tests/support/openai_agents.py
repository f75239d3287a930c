"""OpenAI Agents SDK agents for the adapter's tests: the SDK's own `OpenAIChatCompletionsModel` talking HTTP to the
scripted chat-completions server (`tests.support.scripted_chat_server`), a `lookup_order` function tool, a handoff
from triage to support whose `input_type` carries the reason.

`registry` is what a worker loads (`RUNCAST_AGENTS=tests.support.openai_agents:registry`); the model server's URL
comes from `RUNCAST_TEST_OPENAI_URL` (the e2e test sets it for the worker). `direct_output(base_url, prompt)` runs
the same agents with the SDK alone (`Runner.run`, no runcast) and returns the SDK's own final output.
"""

from __future__ import annotations

import os

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    RunContextWrapper,
    Runner,
    function_tool,
    handoff,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from pydantic import BaseModel

from runcast.worker.adapters import from_openai_agents
from runcast.worker.agents import default_registry
from tests.support.scripted_chat_server import model_for
from tests.support.scripted_model import FIRST_AGENT, SECOND_AGENT, TOOL_ARGS, TOOL_NAME, TOOL_OUTPUT

set_tracing_disabled(True)  # offline: no trace export

URL_ENV = "RUNCAST_TEST_OPENAI_URL"
UNSET_URL = "http://127.0.0.1:9/v1"
"""Where the registry's model points when the test did not say (nothing listens there: a run fails at once)."""


@function_tool(name_override=TOOL_NAME)
async def lookup_order(order_id: str) -> str:
    """Look an order up by id."""
    return TOOL_OUTPUT if order_id == TOOL_ARGS["order_id"] else f"no order {order_id}"


class HandoffReason(BaseModel):
    reason: str


async def _noted(context: RunContextWrapper[object], reason: HandoffReason) -> None:
    """The SDK requires an `on_handoff` for a handoff with an `input_type`: nothing to do here."""


def make_triage(base_url: str) -> Agent:
    """The triage agent (lookup tool, handoff to support) on a fresh client for the model server at `base_url`."""
    client = AsyncOpenAI(base_url=base_url, api_key="not-used-offline", max_retries=0)
    settings = ModelSettings(include_usage=True)  # a local endpoint gets no usage unless asked, as with OpenAI
    support = Agent(
        name=SECOND_AGENT,
        instructions="Answer the customer's question about their order.",
        model=OpenAIChatCompletionsModel(model_for(SECOND_AGENT), client),
        model_settings=settings,
    )
    return Agent(
        name=FIRST_AGENT,
        instructions="Look the order up, then hand the customer to support.",
        tools=[lookup_order],
        handoffs=[handoff(support, input_type=HandoffReason, on_handoff=_noted)],
        model=OpenAIChatCompletionsModel(model_for(FIRST_AGENT), client),
        model_settings=settings,
    )


registry = {
    **default_registry,
    "openai_support": from_openai_agents(
        make_triage(os.environ.get(URL_ENV, UNSET_URL)), description="OpenAI Agents SDK: lookup tool, handoff, stream"
    ),
}


async def direct_output(base_url: str, prompt_text: str) -> str:
    """The SDK's own final output for a prompt: the same agents run by `Runner.run`, without runcast."""
    result = await Runner.run(make_triage(base_url), prompt_text)
    return str(result.final_output)
