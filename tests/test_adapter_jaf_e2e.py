"""A jaf-py agent through a real gateway, a real worker and a real redis-server: token streaming to two viewers
(one resuming), tool call and handoff in place, cancel stopping jaf's run, jaf's error as the run's ERROR."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import jaf_agents
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
    agent="jaf_support", registry="tests.support.jaf_agents:registry", final_output=jaf_agents.direct_output
)


@pytest.fixture(scope="module")
def deployment(module_redis_url: str) -> Iterator[Deployment]:
    with framework_deployment(module_redis_url, CASE) as running:
        yield running


async def test_jaf_agent_streams_token_by_token_to_two_viewers_one_resuming(
    deployment: Deployment, http: httpx.AsyncClient
):
    await check_streams_token_by_token(deployment, CASE, http)


async def test_cancel_mid_run_stops_the_jaf_run(deployment: Deployment, http: httpx.AsyncClient):
    await check_cancel_stops_the_framework(deployment, CASE, http)


async def test_jaf_exception_ends_the_run_with_an_error_carrying_its_message(
    deployment: Deployment, http: httpx.AsyncClient
):
    await check_framework_error_ends_the_run(deployment, CASE, http)


async def test_the_worker_lists_the_jaf_agent_with_its_description(deployment: Deployment, http: httpx.AsyncClient):
    agents = {a["name"]: a["description"] for a in (await http.get(f"{deployment.url}/v1/agents")).json()}
    assert agents["jaf_support"] == "jaf-py: lookup tool, handoff, stream"
    assert {"echo", "demo", "triage"} <= set(agents)
