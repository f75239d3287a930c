"""runcast.js backs off like the Python client: on 503 (viewer cap), 429 (create rate limit) and refused connections,
honouring Retry-After, with one Idempotency-Key per create, and gives up with a RuncastError / status "failed" after
its budget. The module runs under Node (fetch, web streams) against a real gateway process (tests/js/scenarios.mjs);
its recorded waits are checked, never timed."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from runcast.shared.client import AsyncClient
from tests.support.eventsource import ResumingViewer
from tests.support.faults import stored_log, wait_until, words
from tests.support.processes import LIMITED_API_KEY, GatewayProcess
from tests.support.proxy import SeveringProxy
from tests.support.requirements import require

SCENARIOS = Path(__file__).parent / "js" / "scenarios.mjs"
OnRetry = Callable[[dict[str, Any]], Awaitable[None]]


@pytest.fixture(scope="module")
def node() -> str:
    binary = shutil.which("node")
    require(binary is not None, "needs node (apt-get install nodejs) to run runcast.js outside a browser")
    assert binary is not None
    return binary


async def run_js(node: str, scenario: str, on_retry: OnRetry | None = None, **args: Any) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        node, str(SCENARIOS), scenario, json.dumps(args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    result: dict[str, Any] | None = None
    async with asyncio.timeout(90):
        while line := await proc.stdout.readline():
            message = json.loads(line)
            if "retry" in message and on_retry is not None:
                await on_retry(message["retry"])
            result = message.get("result", result)
        err = (await proc.stderr.read()).decode()
        assert await proc.wait() == 0, err
    assert result is not None, err
    return result


async def test_js_waits_follow_the_same_rules_as_the_python_client(node: str):
    result = await run_js(node, "policy")
    assert all(2000 <= w <= 3000 for w in result["withRetryAfter"]), "Retry-After is a floor, spread to 1.5x"
    assert (
        len(set(result["withRetryAfter"])) == 300
        and max(result["withRetryAfter"]) - min(result["withRetryAfter"]) > 800
    )
    assert all(2500 <= w <= 5000 for w in result["longOutage"]), "the backoff ceiling beats a shorter Retry-After"
    for row, ceiling in zip(result["backoff"], [200, 400, 800, 3200, 5000, 5000], strict=True):
        assert all(ceiling / 2 <= w <= ceiling for w in row["samples"]), row["n"]
    assert result["parsed"] == {"seconds": 3000, "date": 42000, "past": 0, "junk": [None, None, None]}
    assert result["defaults"] == {"maxRetries": 8, "backoffMs": 200, "maxBackoffMs": 5000, "budgetMs": 120000}


async def test_js_create_past_the_rate_limit_waits_out_retry_after_with_one_idempotency_key(
    node: str, limited_gateway: GatewayProcess
):
    result = await run_js(node, "createLimited", baseUrl=limited_gateway.url, apiKey=LIMITED_API_KEY)
    limited = [r for r in result["retries"] if r["status"] == 429]
    assert limited, result
    assert all(
        1000 <= r["retryAfterMs"] <= 2000 and r["retryAfterMs"] <= r["delayMs"] <= 1.5 * r["retryAfterMs"]
        for r in limited
    )
    keys = result["keysOfThatCall"]
    assert len(keys) >= 2 and len(set(keys)) == 1, "every attempt of one create carries the same Idempotency-Key"
    assert len(result["runId"]) == 32


async def test_js_viewer_over_the_viewer_cap_waits_at_least_retry_after_then_gets_the_whole_run(
    node: str, limited_gateway: GatewayProcess, http: httpx.AsyncClient
):
    async with AsyncClient(limited_gateway.url, LIMITED_API_KEY) as client:
        run = await client.create_run("echo", words(150))
    first = ResumingViewer([limited_gateway.url], run.run_id, run.token)  # holds the run's one viewer slot
    holding = asyncio.create_task(first.run(http, timeout_s=60))
    await wait_until(lambda: len(first.received) >= 1, 20, "the first viewer to hold the slot")
    result = await run_js(node, "follow", baseUrl=limited_gateway.url, runId=run.run_id, token=run.token)
    await holding
    refused = [r for r in result["retries"] if r["status"] == 503]
    assert refused and all(r["retryAfterMs"] == 1000 and 1000 <= r["delayMs"] <= 1500 for r in refused), result
    assert result["done"]["status"] == "done" and result["duplicates"] == 0
    log = await stored_log(limited_gateway.env["RUNCAST_REDIS_URL"], run.run_id)
    assert [(e["id"], e["type"]) for e in result["events"]] == [(i, t) for i, t, _ in log], "nothing lost or repeated"


async def test_js_create_against_a_refused_port_backs_off_then_rejects_with_a_runcast_error(node: str):
    async with SeveringProxy(1) as nowhere:
        await nowhere.down()
        result = await run_js(node, "createRefused", baseUrl=f"http://127.0.0.1:{nowhere.port}")
    assert result["error"]["name"] == "RuncastError" and result["error"]["status"] is None
    assert result["error"]["attempts"] == 3 and "gave up after 3 attempts" in result["error"]["detail"]
    delays = [r["delayMs"] for r in result["retries"]]
    assert len(delays) == 2 and 25 <= delays[0] <= 50 and 50 <= delays[1] <= 100


async def test_js_stream_through_a_restarting_gateway_backs_off_then_resumes_exactly(
    node: str, limited_gateway: GatewayProcess
):
    async with AsyncClient(limited_gateway.url, LIMITED_API_KEY) as client:
        run = await client.create_run("echo", words(40))
    async with SeveringProxy(httpx.URL(limited_gateway.url).port) as front:
        await front.down()  # refused: the gateway is "restarting"

        async def back_after_two(retry: dict[str, Any]) -> None:
            if retry["failures"] == 2:
                await front.up()

        result = await run_js(node, "follow", back_after_two, baseUrl=front.url, runId=run.run_id, token=run.token)
    refused = result["retries"][:2]
    assert [r["failures"] for r in refused] == [1, 2] and all(r["status"] is None for r in refused)
    assert 100 <= refused[0]["delayMs"] <= 200 and 200 <= refused[1]["delayMs"] <= 400
    assert result["done"]["status"] == "done"
    log = await stored_log(limited_gateway.env["RUNCAST_REDIS_URL"], run.run_id)
    assert [(e["id"], e["type"]) for e in result["events"]] == [(i, t) for i, t, _ in log]


async def test_js_stream_gives_up_with_failed_after_its_budget(
    node: str, limited_gateway: GatewayProcess, http: httpx.AsyncClient
):
    async with AsyncClient(limited_gateway.url, LIMITED_API_KEY) as client:
        run = await client.create_run("echo", words(1500))  # 30 s: the slot stays taken, however slow node starts
        first = ResumingViewer([limited_gateway.url], run.run_id, run.token)
        holding = asyncio.create_task(first.run(http, timeout_s=60))
        await wait_until(lambda: len(first.received) >= 1, 20, "the first viewer to hold the slot")
        result = await run_js(node, "followQuick", baseUrl=limited_gateway.url, runId=run.run_id, token=run.token)
        await client.cancel(run.run_id)  # the first viewer's stream ends with the run
    await holding
    done = result["done"]
    assert (
        done["status"] == "failed" and done["httpStatus"] == 503 and "gave up after 3 failed attempts" in done["detail"]
    )
    assert len(result["retries"]) == 2 and result["events"] == []
