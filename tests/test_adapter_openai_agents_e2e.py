"""An OpenAI Agents SDK agent through a real gateway, a real worker and a real redis-server, its model a real HTTP
chat-completions endpoint (the scripted server, in this process): token streaming to two viewers (one resuming),
tool call and handoff in place, cancel stopping the SDK's run, the SDK's error as the run's ERROR."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import httpx
import pytest

from tests.support import openai_agents
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


@pytest.fixture(scope="module")
def served(module_redis_url: str) -> Iterator[tuple[Deployment, FrameworkCase]]:
    """The model server (gate and stop records in the module's Redis), then a gateway and a worker pointed at it."""
    server = ScriptedChatServer(module_redis_url)
    case = FrameworkCase(
        agent="openai_support",
        registry="tests.support.openai_agents:registry",
        final_output=functools.partial(openai_agents.direct_output, server.base_url),
        env={openai_agents.URL_ENV: server.base_url},
    )
    with server.running(), framework_deployment(module_redis_url, case) as deployment:
        yield deployment, case


async def test_openai_agent_streams_token_by_token_to_two_viewers_one_resuming(
    served: tuple[Deployment, FrameworkCase], http: httpx.AsyncClient
):
    await check_streams_token_by_token(*served, http)


async def test_cancel_mid_run_stops_the_sdk_run_and_its_model_request(
    served: tuple[Deployment, FrameworkCase], http: httpx.AsyncClient
):
    await check_cancel_stops_the_framework(*served, http)


async def test_a_model_error_ends_the_run_with_an_error_carrying_its_message(
    served: tuple[Deployment, FrameworkCase], http: httpx.AsyncClient
):
    await check_framework_error_ends_the_run(*served, http)


async def test_the_worker_lists_the_openai_agent_with_its_description(
    served: tuple[Deployment, FrameworkCase], http: httpx.AsyncClient
):
    deployment, _ = served
    agents = {a["name"]: a["description"] for a in (await http.get(f"{deployment.url}/v1/agents")).json()}
    assert agents["openai_support"] == "OpenAI Agents SDK: lookup tool, handoff, stream"
    assert {"echo", "demo", "triage"} <= set(agents)
