"""A PydanticAI agent through a real gateway, a real worker and a real redis-server: token streaming to two viewers
(one resuming), tool call and hand-off in place, cancel stopping PydanticAI's run, PydanticAI's error as the run's
ERROR."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import pydantic_ai_agents
from tests.support.frameworks import (
    Deployment,
    FrameworkCase,
    check_cancel_stops_the_framework,
    check_framework_error_ends_the_run,
    check_streams_token_by_token,
    framework_deployment,
)

pytestmark = pytest.mark.slow

CASE = FrameworkCase(
    agent="pydantic_support",
    registry="tests.support.pydantic_ai_agents:registry",
    final_output=pydantic_ai_agents.direct_output,
)


@pytest.fixture(scope="module")
def deployment(module_redis_url: str) -> Iterator[Deployment]:
    with framework_deployment(module_redis_url, CASE) as running:
        yield running


async def test_pydantic_ai_agent_streams_token_by_token_to_two_viewers_one_resuming(
    deployment: Deployment, http: httpx.AsyncClient
):
    await check_streams_token_by_token(deployment, CASE, http)


async def test_cancel_mid_run_stops_the_pydantic_ai_run(deployment: Deployment, http: httpx.AsyncClient):
    await check_cancel_stops_the_framework(deployment, CASE, http)


async def test_pydantic_ai_exception_ends_the_run_with_an_error_carrying_its_message(
    deployment: Deployment, http: httpx.AsyncClient
):
    await check_framework_error_ends_the_run(deployment, CASE, http)


async def test_the_worker_lists_the_pydantic_ai_agent_with_its_description(
    deployment: Deployment, http: httpx.AsyncClient
):
    agents = {a["name"]: a["description"] for a in (await http.get(f"{deployment.url}/v1/agents")).json()}
    assert agents["pydantic_support"] == "PydanticAI: lookup tool, handoff, stream"
    assert {"echo", "demo", "triage"} <= set(agents)
