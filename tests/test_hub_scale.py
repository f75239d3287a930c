"""The hub following many runs at once (real redis-server): what Redis pays does not grow with the runs followed, and
hundreds of runs followed by one gateway process, with viewers coming and going, give every viewer exactly its part.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from bench.publisher import Publisher
from runcast.gateway.hub.fanout import Hub
from runcast.gateway.hub.reader import READER_NAME
from runcast.shared.ids import START_ID
from runcast.shared.keys import events_key
from runcast.shared.streamlog import Entry, StreamLog
from runcast.shared.tokens import issue_token
from tests.support.hub import eventually, hub_metric, hub_stream_reads, new_run, publish, server_stream_reads
from tests.support.processes import TEST_SECRET, GatewayProcess
from tests.support.sse import Received, read_sse


async def live_viewer(hub: Hub, run_id: str, got: list[Entry]) -> None:
    async for batch in hub.subscribe(run_id, START_ID):
        got.extend(batch)  # type: ignore[arg-type]


async def test_1000_runs_followed_and_idle_cost_no_stream_reads_and_events_cost_none_either(
    log: StreamLog, redis: Redis
):
    hub = Hub(log)
    runs = [await new_run(log) for _ in range(1_000)]
    got: dict[str, list[Entry]] = {run_id: [] for run_id in runs}
    viewers = [asyncio.create_task(live_viewer(hub, run_id, got[run_id])) for run_id in runs]
    try:
        await eventually(lambda: hub_metric("runcast_hub_runs_followed") == 1_000, within_s=30, what="1000 runs")
        await eventually(lambda: all(run.ready.is_set() for run in hub.runs.values()), within_s=30, what="joined")
        clients = [c for c in await redis.client_list() if c.get("name") == READER_NAME]
        assert len(clients) == 1 and int(clients[0]["sub"]) == 1_000  # one connection, one SUBSCRIBE per run

        reads, server_reads = hub_stream_reads(), await server_stream_reads(redis)
        await asyncio.sleep(3)  # 1,000 runs followed, nothing happening
        idle_reads = (hub_stream_reads() - reads, await server_stream_reads(redis) - server_reads)
        print(
            f"stream reads while 1,000 runs were followed and idle for 3 s: hub {idle_reads[0]:.0f}, "
            f"server {idle_reads[1]}"
        )
        assert idle_reads == (0, 0)

        busy = random.Random(3).sample(runs, 50)  # events on 50 of the 1,000 runs: announced, not read
        sent = {run_id: await publish(log, run_id, 4, end=False) for run_id in busy}
        await eventually(lambda: all(len(got[run_id]) == 4 for run_id in busy), what="50 runs delivered")
        assert all([entry.id for entry in got[run_id]] == sent[run_id] for run_id in busy)
        live_reads = (hub_stream_reads() - reads, await server_stream_reads(redis) - server_reads)
        print(f"stream reads for 200 events on 50 of the 1,000 runs: hub {live_reads[0]:.0f}, server {live_reads[1]}")
        assert live_reads == (0, 0)
    finally:
        for viewer in viewers:
            viewer.cancel()
        await asyncio.gather(*viewers, return_exceptions=True)
        await hub.close()


# -- 500 runs, one gateway process, viewers joining and leaving -----------------------------------------------------


RUNS = 500
EVENTS = 24  # per run, published over 2.4 s


@pytest.fixture
async def viewers_client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=limits) as client:
        yield client


async def test_500_runs_followed_by_one_gateway_with_viewers_joining_and_leaving_at_random_are_each_exact(
    module_redis_url: str, log: StreamLog, redis: Redis, viewers_client: httpx.AsyncClient
):
    gateway = GatewayProcess(module_redis_url, RUNCAST_MAX_VIEWERS_PER_RUN="100", RUNCAST_MAX_VIEWERS="5000").start()
    rng = random.Random(500)
    try:
        publisher = Publisher(redis, RUNS, payload_bytes=40)  # pipelined appends, spread over each tick like real runs
        await publisher.create_runs()
        runs = publisher.run_ids
        tokens = {run_id: issue_token(TEST_SECRET.encode(), run_id, 600) for run_id in runs}
        followed: list[float] = []

        async def publish_all() -> None:
            await publisher.steady(rate=10, duration=EVENTS / 10)
            await publisher.complete()

        async def sample_followed() -> None:
            while True:
                reply = await viewers_client.get(f"{gateway.url}/metrics")
                followed.extend(
                    float(line.split()[-1]) for line in reply.text.splitlines() if line.startswith("runcast_hub_runs_f")
                )
                await asyncio.sleep(0.2)

        async def viewer(run_id: str) -> tuple[int, list[Received]]:
            """Joins at a random moment at a random point of what exists, leaves after a few events, comes back."""
            await asyncio.sleep(rng.uniform(0, 2.0))
            stored = await redis.xrange(events_key(run_id))
            offset = rng.randint(0, max(0, len(stored) - 1))  # at least the last event is still ahead
            resume = stored[offset - 1][0] if offset else None
            token, url = tokens[run_id], gateway.url
            first = await read_sse(viewers_client, url, run_id, token, last_event_id=resume, limit=rng.randint(1, 6))
            await asyncio.sleep(rng.uniform(0, 0.5))  # away for a while: the run goes on
            rest: list[Received] = []
            if first[-1].event not in ("complete", "error"):
                rest = await read_sse(viewers_client, url, run_id, token, last_event_id=first[-1].id)
            return offset, first + rest

        sampler = asyncio.create_task(sample_followed())
        plans = runs + rng.sample(runs, 50)  # 550 viewers; 50 runs have two
        results = await asyncio.wait_for(asyncio.gather(publish_all(), *(viewer(run_id) for run_id in plans)), 90)
        sampler.cancel()
        stored = {run_id: [entry_id for entry_id, _ in await redis.xrange(events_key(run_id))] for run_id in runs}
        for run_id, (offset, events) in zip(plans, results[1:], strict=True):
            assert [event.id for event in events] == stored[run_id][offset:], f"run {run_id} from {offset}"
            assert events[-1].event == "complete"
        print(f"runs followed at once by the gateway: up to {max(followed):.0f}; {len(plans)} viewers all exact")
        assert max(followed) >= 300, "the gateway never followed hundreds of runs at once"
    finally:
        gateway.stop()
