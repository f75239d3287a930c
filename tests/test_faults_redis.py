"""The gateway and the worker ride through Redis faults while 50 viewers are mid-stream (real processes, a private
real redis-server per test): every viewer ends with the complete, exact sequence Redis holds, and the worker's run
completes normally (its appends retry idempotently) instead of failing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.support.eventsource import ResumingViewer
from tests.support.faults import (
    assert_every_viewer_exact,
    start_together,
    wait_until,
    words,
)
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.redis_server import RedisServer
from tests.support.requirements import real_redis_server
from tests.support.sse import create_run, read_sse

pytestmark = [
    pytest.mark.slow,
    real_redis_server,  # kill/restart
]

RUNS, VIEWERS_PER_RUN, TOKENS = 5, 10, 100  # 50 viewers; 100 tokens x 20 ms = a 2 s run


@pytest.fixture(scope="module")
def durable_redis() -> Iterator[RedisServer]:
    """AOF with fsync on every write: a restart must not lose an acknowledged entry some viewer already saw."""
    server = RedisServer(appendonly=True, extra=["--appendfsync", "always"]).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def deployment(durable_redis: RedisServer) -> Iterator[tuple[GatewayProcess, WorkerProcess]]:
    env = {"RUNCAST_WORKER_LOST_S": "8"}  # longer than the outage: a restart must not look like a lost worker
    worker, gateway = WorkerProcess(durable_redis.url, **env), GatewayProcess(durable_redis.url, **env)
    start_together(worker, gateway)
    yield gateway, worker
    gateway.stop()
    worker.stop()


async def start_viewers(
    http: httpx.AsyncClient, gateway: GatewayProcess
) -> tuple[list[dict], list[ResumingViewer], list[asyncio.Task]]:
    runs = [await create_run(http, gateway.url, "echo", words(TOKENS, f"r{i}-")) for i in range(RUNS)]
    viewers = [ResumingViewer([gateway.url], r["run_id"], r["token"]) for r in runs for _ in range(VIEWERS_PER_RUN)]
    tasks = [asyncio.create_task(v.run(http, timeout_s=60)) for v in viewers]
    await wait_until(lambda: all(len(v.received) >= 3 for v in viewers), 20, "every viewer mid-stream")
    return runs, viewers, tasks


async def assert_still_serving(http: httpx.AsyncClient, gateway: GatewayProcess, worker: WorkerProcess) -> None:
    """After the fault both processes are alive and a new run goes through end to end."""
    run = await create_run(http, gateway.url, "echo", "after the fault")
    events = await read_sse(http, gateway.url, run["run_id"], run["token"])
    assert events[-1].event == "complete"
    assert worker.alive() and gateway.alive(), worker.log()[-2000:]


async def test_killed_redis_connections_lose_and_duplicate_nothing(
    durable_redis: RedisServer, deployment: tuple[GatewayProcess, WorkerProcess], http: httpx.AsyncClient
):
    gateway, worker = deployment
    runs, viewers, tasks = await start_viewers(http, gateway)
    admin = redis.Redis(port=durable_redis.port)
    killed = 0
    for _ in range(3):  # three rounds, 300 ms apart, while the runs are streaming
        killed += admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.3)
    admin.close()
    await asyncio.gather(*tasks)

    assert killed >= 6, "the fault was not injected: no gateway/worker connections were killed"
    await assert_every_viewer_exact(durable_redis.url, runs, viewers, TOKENS)
    await assert_still_serving(http, gateway, worker)
    report(f"CLIENT KILL x3: {killed} connections killed", viewers, worker)


async def test_redis_restart_mid_stream_with_aof_loses_and_duplicates_nothing(
    durable_redis: RedisServer, deployment: tuple[GatewayProcess, WorkerProcess], http: httpx.AsyncClient
):
    gateway, worker = deployment
    readiness: list[int] = []

    async def poll_readyz() -> None:
        while True:
            try:
                readiness.append((await http.get(f"{gateway.url}/readyz", timeout=2)).status_code)
            except httpx.HTTPError:
                readiness.append(-1)
            await asyncio.sleep(0.05)

    runs, viewers, tasks = await start_viewers(http, gateway)
    poller = asyncio.create_task(poll_readyz())
    await asyncio.to_thread(durable_redis.stop)  # SIGKILL: no clean shutdown, only the AOF survives
    await asyncio.sleep(0.5)
    while_down = await http.get(runs[0]["status_url"], params={"token": runs[0]["token"]})
    await asyncio.sleep(0.5)
    down = list(readiness)
    await asyncio.to_thread(durable_redis.start)  # same port, same dir: reloads the AOF
    await asyncio.gather(*tasks)
    await wait_until(lambda: readiness[-1:] == [200], 10, "/readyz ready again")
    poller.cancel()

    assert 503 in down, f"/readyz must report not-ready while Redis is down, saw {sorted(set(down))}"
    assert while_down.status_code == 503 and while_down.headers["retry-after"] == "1", while_down.text
    assert "unavailable" in while_down.json()["detail"]
    await assert_every_viewer_exact(durable_redis.url, runs, viewers, TOKENS)
    await assert_still_serving(http, gateway, worker)
    report("redis-server SIGKILL + 1 s down + restart (AOF)", viewers, worker)


def report(fault: str, viewers: list[ResumingViewer], worker: WorkerProcess) -> None:
    """The figures README's Reliability section quotes (visible with `pytest -s`)."""
    events = sum(len(v.received) for v in viewers)
    print(
        f"\n[fault] {fault}: {len(viewers)} viewers, {events} events delivered, "
        f"{sum(v.broken for v in viewers)} viewer reconnects, lost 0, duplicated 0, "
        f"worker Redis retries so far {worker.log().count('redis unavailable')}"
    )
