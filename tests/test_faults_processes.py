"""Process faults (real processes, real Redis): a worker SIGKILLed mid-run, a gateway SIGKILLed mid-stream.

Viewers never wait forever: a run whose worker died ends with ERROR `worker_lost` within RUNCAST_WORKER_LOST_S plus
a sweep; viewers of a dead gateway resume on another with their last id and get exactly the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from runcast.shared.keys import heartbeat_key
from runcast.shared.resilience import RUNNING_KEY
from tests.support.eventsource import ResumingViewer
from tests.support.faults import as_log, assert_clean_run, start_together, stored_log, wait_until, words
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.sse import create_run

pytestmark = pytest.mark.slow

LOST_S = 2.0
ENV = {"RUNCAST_WORKER_LOST_S": str(LOST_S)}


@pytest.fixture(scope="module")
def deployment(module_redis_url: str) -> Iterator[tuple[list[GatewayProcess], WorkerProcess]]:
    """Two gateways and a worker. The tests below kill gateways[0] (the gateway test) and the worker (the worker
    test, last); everything else goes through gateways[1], so each test also passes on its own."""
    gateways = [GatewayProcess(module_redis_url, **ENV) for _ in range(2)]
    worker = WorkerProcess(module_redis_url, **ENV)
    start_together(*gateways, worker)
    yield gateways, worker
    for proc in (*gateways, worker):
        proc.stop()


@pytest.fixture
def gateways(deployment: tuple[list[GatewayProcess], WorkerProcess]) -> list[GatewayProcess]:
    return deployment[0]


@pytest.fixture
def worker(deployment: tuple[list[GatewayProcess], WorkerProcess]) -> WorkerProcess:
    if not deployment[1].alive():
        deployment[1].start()
    return deployment[1]


async def test_a_live_worker_keeps_its_long_run_alive_past_the_lost_timeout(
    module_redis_url: str, gateways: list[GatewayProcess], worker: WorkerProcess, http: httpx.AsyncClient
):
    """The heartbeat is refreshed while the agent runs: a run longer than RUNCAST_WORKER_LOST_S is not 'lost'."""
    text = words(int(LOST_S * 1.6 / 0.02))  # 1.6 x LOST_S at 20 ms a token
    run = await create_run(http, gateways[1].url, "echo", text)
    viewer = ResumingViewer([gateways[1].url], run["run_id"], run["token"])
    await viewer.run(http, timeout_s=30)
    assert_clean_run(await stored_log(module_redis_url, run["run_id"]), text)


async def test_gateway_sigkill_viewers_resume_on_the_other_gateway_with_exactly_the_rest(
    module_redis_url: str, gateways: list[GatewayProcess], worker: WorkerProcess, http: httpx.AsyncClient
):
    doomed, survivor = gateways
    text = words(150)
    run = await create_run(http, survivor.url, "echo", text)
    viewers = [ResumingViewer([doomed.url, survivor.url], run["run_id"], run["token"]) for _ in range(10)]
    tasks = [asyncio.create_task(v.run(http, timeout_s=30)) for v in viewers]
    await wait_until(lambda: all(len(v.received) >= 5 for v in viewers), 15, "viewers mid-stream")

    doomed.kill()
    await asyncio.gather(*tasks)

    log = await stored_log(module_redis_url, run["run_id"])
    assert_clean_run(log, text)
    for viewer in viewers:
        assert viewer.broken >= 1, "the viewer's stream on the killed gateway must have broken"
        assert as_log(viewer.received) == log
    print(f"\n[fault] gateway SIGKILL: {len(viewers)} viewers resumed on the other gateway, lost 0, duplicated 0")


async def test_worker_sigkill_mid_run_ends_the_run_with_worker_lost_for_every_viewer(
    module_redis_url: str, gateways: list[GatewayProcess], worker: WorkerProcess, http: httpx.AsyncClient
):
    live = [g for g in gateways if g.alive()]
    run = await create_run(http, live[-1].url, "echo", words(400))  # 8 s if the worker lived
    viewers = [ResumingViewer([g.url], run["run_id"], run["token"]) for g in live for _ in range(3)]
    tasks = [asyncio.create_task(v.run(http, timeout_s=30)) for v in viewers]
    await wait_until(lambda: all(len(v.received) >= 5 for v in viewers), 15, "viewers mid-stream")

    worker.kill()
    killed_at = time.monotonic()
    await asyncio.gather(*tasks)
    waited = time.monotonic() - killed_at

    log = await stored_log(module_redis_url, run["run_id"])
    assert log[-1][1] == "error" and log[-1][2]["data"]["error_type"] == "worker_lost"
    assert sum(t in ("complete", "error") for _, t, _ in log) == 1, "the run must end exactly once"
    for viewer in viewers:
        assert as_log(viewer.received) == log
    # stale after LOST_S, noticed by the next sweep (every LOST_S/3); generous headroom for a loaded CI machine
    assert waited < LOST_S + 6, f"viewers waited {waited:.1f}s after the worker died"
    status = (await http.get(run["status_url"], params={"token": run["token"]})).json()
    assert status["status"] == "failed"
    admin = redis.Redis.from_url(module_redis_url)
    assert admin.exists(heartbeat_key(run["run_id"])) == 0
    assert admin.zscore(RUNNING_KEY, run["run_id"]) is None
    admin.close()
    print(f"\n[fault] worker SIGKILL: {len(viewers)} viewers ended with worker_lost {waited:.2f}s after the kill")
