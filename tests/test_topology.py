"""Production topology without docker: one real Redis, 2 gateway processes, 2 worker processes on loopback.

Viewers hop between gateways mid-run (k events from one, resume on the other with the last id, and so on): every
sequence equals one uninterrupted read, because a gateway holds no state of its own. Both workers take runs, from
the one queue, and their streams are served by either gateway.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.support.nginx import LoadBalancer, nginx_binary
from tests.support.processes import GatewayProcess, WorkerProcess, start_all
from tests.support.requirements import require
from tests.support.sse import TERMINAL, Received, create_run, read_sse

RUNS = 20


@pytest.fixture(scope="module")
def topology(module_redis_url: str) -> Iterator[tuple[list[GatewayProcess], list[WorkerProcess]]]:
    gateways = [GatewayProcess(module_redis_url), GatewayProcess(module_redis_url)]
    workers = [WorkerProcess(module_redis_url), WorkerProcess(module_redis_url)]
    try:
        start_all(*workers, *gateways)
        yield gateways, workers
    finally:
        for proc in [*gateways, *workers]:
            proc.stop()


async def hopping_read(
    http: httpx.AsyncClient, urls: list[str], run: dict, k: int, first: int
) -> tuple[list[Received], list[str]]:
    """Read k events from one gateway, then resume on the next with the last id received, until the run ends."""
    received: list[Received] = []
    used: list[str] = []
    while not received or received[-1].event not in TERMINAL:
        url = urls[(first + len(used)) % len(urls)]
        last_id = received[-1].id if received else None
        received += await read_sse(http, url, run["run_id"], run["token"], last_event_id=last_id, limit=k)
        used.append(url)
    return received, used


async def test_viewers_hopping_between_gateways_see_exactly_one_uninterrupted_sequence(
    topology: tuple[list[GatewayProcess], list[WorkerProcess]], http: httpx.AsyncClient
):
    gateways, workers = topology
    urls = [gateway.url for gateway in gateways]

    async def one_run(i: int) -> tuple[dict, list[Received], list[str], list[Received]]:
        await asyncio.sleep(i % (RUNS // 2) * 0.05)  # runs arrive over half a second and overlap
        text = " ".join(f"run{i}-w{j}" for j in range(12 + i % 5))
        run = await create_run(http, urls[i % 2], "echo", text)  # created on either gateway
        live_whole = asyncio.create_task(read_sse(http, urls[(i + 1) % 2], run["run_id"], run["token"]))
        hopped, used = await hopping_read(http, urls, run, k=1 + i % 4, first=i % 2)
        return run, hopped, used, await live_whole

    # arq workers poll the queue every 0.5 s and each poll takes every job waiting; two workers started together
    # poll in step, so which one wins is down to timing. To show that *each* worker serves runs through the same
    # gateways, half the runs are created while worker 2 is paused (SIGSTOP), half while worker 1 is.
    results = []
    for paused in (1, 0):
        workers[paused].signal(signal.SIGSTOP)
        try:
            first = len(results)
            results += await asyncio.gather(*(one_run(i) for i in range(first, first + RUNS // 2)))
        finally:
            workers[paused].signal(signal.SIGCONT)

    for i, (run, hopped, used, live_whole) in enumerate(results):
        final_whole = await read_sse(http, urls[i % 2], run["run_id"], run["token"])
        assert hopped == live_whole == final_whole, f"run {i}: resuming across gateways changed the sequence"
        assert final_whole[0].event == "start" and final_whole[-1].event == "complete"
        assert set(used) == set(urls), f"run {i} was read through one gateway only"

    run_ids = {run["run_id"] for run, *_ in results}
    taken = [set(re.findall(r"\b([0-9a-f]{32}):run_agent", worker.log())) & run_ids for worker in workers]
    assert taken[0] | taken[1] == run_ids, "every run was executed by one of the workers"
    assert not taken[0] & taken[1], "no run was executed twice"
    assert taken[0] == {run["run_id"] for run, *_ in results[: RUNS // 2]}, "worker 1 ran the first half"
    assert taken[1] == {run["run_id"] for run, *_ in results[RUNS // 2 :]}, "worker 2 ran the second half"


@pytest.fixture(scope="module")
def load_balancer(topology: tuple[list[GatewayProcess], list[WorkerProcess]]) -> Iterator[LoadBalancer]:
    """deploy/nginx.conf, for real, in front of both gateways."""
    binary = nginx_binary()
    require(binary is not None, "needs nginx (apt-get install -y nginx-light)")
    assert binary is not None
    balancer = LoadBalancer([gateway.port for gateway in topology[0]]).start(binary)
    yield balancer
    balancer.stop()


async def test_load_balancer_config_streams_sse_live_and_resumes_through_it(
    load_balancer: LoadBalancer, topology: tuple[list[GatewayProcess], list[WorkerProcess]], http: httpx.AsyncClient
):
    lb = load_balancer.url
    run = await create_run(http, lb, "echo", " ".join(f"w{i}" for i in range(40)))
    assert run["events_url"].startswith(f"{lb}/v1/runs/"), "run URLs must point at the load balancer"

    first = await read_sse(http, lb, run["run_id"], run["token"], limit=3)
    status = (await http.get(f"{lb}/v1/runs/{run['run_id']}", params={"token": run["token"]})).json()
    assert status["status"] == "running", "events reached us while the run was live: nothing buffered them"
    rest = await read_sse(http, lb, run["run_id"], run["token"], last_event_id=first[-1].id)
    whole = await read_sse(http, topology[0][0].url, run["run_id"], run["token"])
    assert first + rest == whole

    log = load_balancer.access_log()
    assert "token=" not in log, "the access log must not record run tokens"
    used = {gateway.port for gateway in topology[0] if f"upstream=127.0.0.1:{gateway.port}" in log}
    assert len(used) == 2, f"the load balancer used both gateways:\n{log}"


async def test_load_balancer_config_upgrades_websockets(
    load_balancer: LoadBalancer, topology: tuple[list[GatewayProcess], list[WorkerProcess]], http: httpx.AsyncClient
):
    run = await create_run(http, load_balancer.url, "echo", "through nginx over a websocket")
    messages = []
    async with websockets.connect(f"{run['ws_url']}?token={run['token']}") as socket:
        async for raw in socket:
            messages.append(json.loads(raw))
        assert socket.close_code == 1000
    whole = await read_sse(http, topology[0][1].url, run["run_id"], run["token"])
    assert [(m["id"], m["event"]) for m in messages] == [(e.id, e.data) for e in whole]
