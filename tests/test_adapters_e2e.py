"""Every framework adapter through a real gateway, a real worker and a real redis-server (issue 12's "must show"):
token streaming to two viewers (one resuming), tool call and handoff in place, cancel stopping the framework's run,
the framework's error as the run's ERROR. One worker serves the four frameworks' agents; the OpenAI Agents SDK's
model is a real HTTP chat-completions endpoint (the scripted server, in this process)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import httpx
import pytest

from tests.support import jaf_agents, langgraph_agents, openai_agents, pydantic_ai_agents
from tests.support.frameworks import (
    Deployment,
    FrameworkCase,
    check_cancel_stops_the_framework,
    check_framework_error_ends_the_run,
    check_streams_token_by_token,
    framework_deployment,
)
from tests.support.scripted_chat_server import ScriptedChatServer

pytestmark = pytest.mark.slow

REGISTRY = "tests.support.framework_agents:registry"
FRAMEWORKS = ["jaf", "langgraph", "openai-agents", "pydantic-ai"]
DESCRIPTIONS = {
    "jaf_support": "jaf-py: lookup tool, handoff, stream",
    "langgraph_support": "LangGraph: lookup tool, handoff, stream",
    "openai_support": "OpenAI Agents SDK: lookup tool, handoff, stream",
    "pydantic_support": "PydanticAI: lookup tool, handoff, stream",
}


def cases(openai_url: str) -> dict[str, FrameworkCase]:
    return {
        "jaf": FrameworkCase("jaf_support", REGISTRY, jaf_agents.direct_output),
        "langgraph": FrameworkCase("langgraph_support", REGISTRY, langgraph_agents.direct_output),
        "openai-agents": FrameworkCase(
            "openai_support", REGISTRY, functools.partial(openai_agents.direct_output, openai_url)
        ),
        "pydantic-ai": FrameworkCase("pydantic_support", REGISTRY, pydantic_ai_agents.direct_output),
    }


@pytest.fixture(scope="module")
def served(module_redis_url: str) -> Iterator[tuple[Deployment, dict[str, FrameworkCase]]]:
    """The OpenAI SDK's model server (its gate and stop records in the module's Redis), then one gateway and one
    worker running every framework's agent."""
    server = ScriptedChatServer(module_redis_url)
    every = cases(server.base_url)
    with (
        server.running(),
        framework_deployment(module_redis_url, every["jaf"], **{openai_agents.URL_ENV: server.base_url}) as deployment,
    ):
        yield deployment, every


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_an_agent_streams_token_by_token_to_two_viewers_one_resuming(
    served: tuple[Deployment, dict[str, FrameworkCase]], http: httpx.AsyncClient, framework: str
):
    deployment, every = served
    await check_streams_token_by_token(deployment, every[framework], http)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_cancel_mid_run_stops_the_frameworks_run(
    served: tuple[Deployment, dict[str, FrameworkCase]], http: httpx.AsyncClient, framework: str
):
    deployment, every = served
    await check_cancel_stops_the_framework(deployment, every[framework], http)


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_the_frameworks_exception_ends_the_run_with_an_error_carrying_its_message(
    served: tuple[Deployment, dict[str, FrameworkCase]], http: httpx.AsyncClient, framework: str
):
    deployment, every = served
    await check_framework_error_ends_the_run(deployment, every[framework], http)


async def test_the_worker_lists_every_frameworks_agent_with_its_description(
    served: tuple[Deployment, dict[str, FrameworkCase]], http: httpx.AsyncClient
):
    deployment, _ = served
    agents = {a["name"]: a["description"] for a in (await http.get(f"{deployment.url}/v1/agents")).json()}
    assert {name: agents.get(name) for name in DESCRIPTIONS} == DESCRIPTIONS
    assert {"echo", "demo", "triage"} <= set(agents)
