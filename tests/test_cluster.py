"""End to end on a real 3-master Redis Cluster: a `runcast gateway` and a `runcast worker` process with run streams
on the cluster (RUNCAST_REDIS_CLUSTER=true) and the arq queue on a separate plain redis-server
(RUNCAST_QUEUE_REDIS_URL). Viewers read whole runs and resume mid-run; every sequence must be exact. Independent of
the gateway's read path. Needs redis-server + redis-cli (real processes, real cluster; never faked)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from pydantic import ValidationError
from redis.asyncio import RedisCluster

from runcast.shared.keys import events_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.settings import Settings
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.redis_cluster import LocalCluster
from tests.support.sse import Received, create_run, read_sse

RUNS = 10


@pytest.fixture(scope="module", params=["direct", "hub"])
def cluster_env(request: pytest.FixtureRequest, redis_cluster: LocalCluster, module_redis_url: str) -> dict[str, str]:
    """Both gateway read paths (RUNCAST_FEED): the same viewer-visible behaviour is required of each."""
    return {
        "RUNCAST_REDIS_CLUSTER": "true",
        "RUNCAST_QUEUE_REDIS_URL": module_redis_url,
        "RUNCAST_QUEUE_NAME": "runcast:test-cluster-queue",  # no other module's worker can take these jobs
        "RUNCAST_FEED": request.param,
    }


@pytest.fixture(scope="module")
def cluster_gateway(redis_cluster: LocalCluster, cluster_env: dict[str, str]) -> Iterator[GatewayProcess]:
    proc = GatewayProcess(redis_cluster.url, **cluster_env).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cluster_worker(redis_cluster: LocalCluster, cluster_env: dict[str, str]) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(redis_cluster.url, **cluster_env).start()
    yield proc
    proc.stop()


def text_for(i: int) -> str:
    return f"run {i} streams these words one by one across a Redis Cluster"


def assert_exact(events: list[Received], stored_ids: list[str], text: str) -> None:
    """The viewer got every stored entry once, in order, with the right content, ending at `complete`."""
    assert [event.id for event in events] == stored_ids
    assert events[0].event == "start" and events[-1].event == "complete"
    chunks = [event for event in events if event.event == "chunk"]
    assert "".join(event.delta for event in chunks) == text
    assert chunks[-1].data["data"]["content"] == text


async def stored_ids(client: RedisCluster, run_id: str) -> list[str]:
    return [entry_id for entry_id, _fields in await client.xrange(events_key(run_id))]


async def test_runs_spread_over_the_cluster_stream_read_and_resume_exactly(
    cluster_gateway: GatewayProcess,
    cluster_worker: WorkerProcess,
    cluster_client: RedisCluster,
    http: httpx.AsyncClient,
    module_redis_url: str,
):
    base = cluster_gateway.url
    assert (await http.get(f"{base}/readyz")).status_code == 200
    created = [await create_run(http, base, "echo", text_for(i)) for i in range(RUNS)]
    nodes = {cluster_client.get_node_from_key(events_key(run["run_id"])).name for run in created}
    assert len(nodes) >= 2, f"all {RUNS} runs hashed to {nodes}"

    async def watch(run: dict) -> tuple[list[Received], list[Received]]:
        """A viewer that drops after 3 events, resumes with Last-Event-ID; and one that reads it all at once."""
        first = await read_sse(http, base, run["run_id"], run["token"], limit=3)
        rest = await read_sse(http, base, run["run_id"], run["token"], last_event_id=first[-1].id)
        whole = await read_sse(http, base, run["run_id"], run["token"])
        return first + rest, whole

    views = await asyncio.wait_for(asyncio.gather(*(watch(run) for run in created)), 60)
    for i, (run, (resumed, whole)) in enumerate(zip(created, views, strict=True)):
        ids = await stored_ids(cluster_client, run["run_id"])
        assert_exact(resumed, ids, text_for(i))
        assert_exact(whole, ids, text_for(i))
        auth = {"Authorization": f"Bearer {run['token']}"}
        status = (await http.get(f"{base}/v1/runs/{run['run_id']}", headers=auth)).json()
        assert status["status"] == "completed" and status["last_event_id"] == ids[-1]
        result = (await http.get(f"{base}/v1/runs/{run['run_id']}/result", headers=auth)).json()
        assert result["content"] == text_for(i) and result["is_complete"] is True
    # the jobs went through the plain queue Redis, never the cluster (arq keeps each job's result for a minute)
    result_keys = [f"arq:result:{run['run_id']}" for run in created]
    queue = redis_from_url(module_redis_url)
    try:
        assert await queue.exists(*result_keys) == RUNS
    finally:
        await queue.aclose()
    assert sum([await cluster_client.exists(key) for key in result_keys]) == 0


async def test_resume_from_the_query_parameter_after_the_run_ended(
    cluster_gateway: GatewayProcess,
    cluster_worker: WorkerProcess,
    cluster_client: RedisCluster,
    http: httpx.AsyncClient,
):
    run = await create_run(http, cluster_gateway.url, "echo", text_for(99))
    whole = await read_sse(http, cluster_gateway.url, run["run_id"], run["token"])
    ids = await stored_ids(cluster_client, run["run_id"])
    assert_exact(whole, ids, text_for(99))
    for cut in (1, len(ids) // 2, len(ids) - 2):
        rest = await read_sse(
            http, cluster_gateway.url, run["run_id"], run["token"], last_event_id=ids[cut - 1], resume_via="query"
        )
        assert [event.id for event in rest] == ids[cut:]


def test_a_cluster_needs_its_own_queue_redis():
    with pytest.raises(ValidationError, match="RUNCAST_QUEUE_REDIS_URL"):
        Settings(redis_url="redis://node:7000/0", redis_cluster=True)
    conf = Settings(redis_url="redis://node:7000/0", redis_cluster=True, queue_redis_url="redis://queue:6379/0")
    assert conf.queue_url == "redis://queue:6379/0"
    assert Settings(redis_url="redis://one:6379/0").queue_url == "redis://one:6379/0"
