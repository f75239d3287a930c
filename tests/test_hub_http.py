"""The fan-out hub behind real HTTP: real `runcast gateway` processes (RUNCAST_FEED defaults to `hub`), a real
redis-server, SSE viewers over loopback. Most runs are published by the test itself (straight into the run's stream)
so the pace and the content are known exactly."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator

import h11
import httpx
import pytest
from redis.asyncio import Redis

from runcast.shared.keys import events_key
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from tests.support.hub import new_run, parse_metrics, publish, server_stream_reads
from tests.support.processes import TEST_SECRET, GatewayProcess, WorkerProcess
from tests.support.sse import Received, create_run, read_sse

STREAM_READS = "runcast_hub_stream_reads_total"


@pytest.fixture
async def viewers_client() -> AsyncIterator[httpx.AsyncClient]:
    """Hundreds of concurrent streams: no connection-pool cap."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits) as client:
        yield client


def token_for(run_id: str) -> str:
    return issue_token(TEST_SECRET.encode(), run_id, 3600)


async def metrics(http: httpx.AsyncClient, base_url: str) -> dict:
    response = await http.get(f"{base_url}/metrics")
    response.raise_for_status()
    return parse_metrics(response.text)


def metric(sample: dict, name: str, **labels: str) -> float:
    return sample.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_for_metric(http: httpx.AsyncClient, base_url: str, name: str, at_least: float) -> None:
    for _ in range(500):
        if metric(await metrics(http, base_url), name) >= at_least:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{name} never reached {at_least}")


def hub_reads(sample: dict) -> float:
    return sum(metric(sample, STREAM_READS, command=c) for c in ("xread", "xrange", "xrevrange"))


def received_ids(events: list[Received]) -> list[str | None]:
    return [event.id for event in events]


# -- many viewers, one run -----------------------------------------------------------------------------------------


async def test_200_viewers_joining_at_random_offsets_during_and_after_a_run_each_get_exactly_their_suffix(
    gateway_proc: GatewayProcess, worker_proc: WorkerProcess, redis: Redis, viewers_client: httpx.AsyncClient
):
    base = gateway_proc.url
    run = await create_run(viewers_client, base, "echo", " ".join(f"word{i}" for i in range(100)))  # ~2 s
    run_id, token = run["run_id"], run["token"]
    rng = random.Random(2024)
    finished = asyncio.Event()

    async def viewer(delay_s: float) -> tuple[int, bool, list[Received]]:
        if delay_s < 0:
            await finished.wait()  # joins after the run ended
        else:
            await asyncio.sleep(delay_s)
        available = await redis.xrange(events_key(run_id))
        offset = rng.randint(0, len(available))
        resume = available[offset - 1][0] if offset else None
        ended = bool(available) and available[-1][1]["type"] in ("complete", "error")
        events = await read_sse(viewers_client, base, run_id, token, last_event_id=resume)
        return offset, ended, events

    async def watch_for_the_end() -> None:
        await read_sse(viewers_client, base, run_id, token)
        finished.set()

    watcher = asyncio.create_task(watch_for_the_end())
    plans = [rng.uniform(0, 1.0) for _ in range(120)] + [-1.0] * 80
    results = await asyncio.wait_for(asyncio.gather(*(viewer(d) for d in plans)), 60)
    await watcher

    whole = [(entry_id, fields["type"]) for entry_id, fields in await redis.xrange(events_key(run_id))]
    assert whole[-1][1] == "complete"
    for offset, _, events in results:
        assert [(e.id, e.event) for e in events] == whole[offset:], f"viewer resuming after {offset} events"
    joined_during = sum(1 for _, ended, _ in results if not ended)
    print(f"{joined_during} viewers joined while the run was live, {len(results) - joined_during} after it ended")
    assert joined_during >= 30, f"only {joined_during} viewers joined while the run was live"
    assert sum(1 for _, ended, _ in results if ended) >= 80


# -- reads do not grow with viewers --------------------------------------------------------------------------------


async def _viewers_of_an_identical_run(
    base: str, log: StreamLog, redis: Redis, http: httpx.AsyncClient, viewers: int
) -> tuple[float, int]:
    """N viewers at random offsets of a run the test publishes at a fixed pace; the hub's stream reads during it
    (its own metric, and independently the server's INFO commandstats)."""
    run_id = await new_run(log)
    early = await publish(log, run_id, 20, end=False)
    rng = random.Random(viewers)
    offsets = [rng.randint(0, len(early)) for _ in range(viewers)]
    before_metric, before_server = hub_reads(await metrics(http, base)), await server_stream_reads(redis)
    tasks = [
        asyncio.create_task(read_sse(http, base, run_id, token_for(run_id), last_event_id=early[k - 1] if k else None))
        for k in offsets
    ]
    await wait_for_metric(http, base, "runcast_hub_subscribers", viewers)  # all subscribed before the run goes on
    late = await publish(log, run_id, 60, pause_s=0.005)
    results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
    for k, events in zip(offsets, results, strict=True):
        assert received_ids(events) == (early + late)[k:]
    after_metric, after_server = hub_reads(await metrics(http, base)), await server_stream_reads(redis)
    return after_metric - before_metric, after_server - before_server


async def test_redis_stream_reads_do_not_grow_with_the_number_of_viewers(
    gateway_proc: GatewayProcess, log: StreamLog, redis: Redis, viewers_client: httpx.AsyncClient
):
    base = gateway_proc.url  # nothing else in this module reads streams meanwhile: the server's counts are the hub's
    few_metric, few_server = await _viewers_of_an_identical_run(base, log, redis, viewers_client, 5)
    many_metric, many_server = await _viewers_of_an_identical_run(base, log, redis, viewers_client, 200)
    print(
        f"stream reads by the hub: 5 viewers {few_metric:.0f} ({few_server}), 200 viewers {many_metric:.0f} "
        f"({many_server}) [metric (INFO commandstats)]"
    )
    assert few_metric == few_server and many_metric == many_server, "the metric disagrees with Redis' own count"
    assert many_server <= few_server * 1.5 + 5, "40x the viewers must not mean more Redis reads"
    assert many_server < 200


# -- a viewer that stops reading -----------------------------------------------------------------------------------


def _first_difference(got: list, expected: list) -> int | None:
    return next((i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b), None)


def _stalled_viewer(port: int, run_id: str) -> socket.socket:
    """A raw HTTP client that sends its request, then reads nothing (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    request = f"GET /v1/runs/{run_id}/events?token={token_for(run_id)} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    sock.sendall(request.encode())
    return sock


async def _read_stalled_viewer(sock: socket.socket) -> list[tuple[str, str]]:
    """Read the stalled viewer's whole response now; (id, event) of every SSE frame up to the terminal one."""
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # reading again, at full speed
    loop = asyncio.get_running_loop()
    conn = h11.Connection(h11.CLIENT)
    body = bytearray()
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))  # mirror the request we sent
    conn.send(h11.EndOfMessage())
    while b"event: complete" not in body or not body.endswith(b"\n\n"):
        data = await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 30)
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Response):
                assert event.status_code == 200
            elif isinstance(event, h11.Data):
                body.extend(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        if not data:
            break
    sock.close()
    frames = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in fields:
            frames.append((fields["id"], fields["event"]))
    return frames


async def test_a_viewer_that_stops_reading_delays_no_one_and_later_gets_every_event_in_order(
    log: StreamLog, viewers_client: httpx.AsyncClient, module_redis_url: str
):
    # A 4-event inbox and no in-memory tail: the stalled viewer must be detached and catch up from Redis.
    gateway = GatewayProcess(module_redis_url, RUNCAST_HUB_QUEUE_SIZE="4", RUNCAST_HUB_HISTORY_SIZE="0").start()
    try:
        run_id = await new_run(log)
        stalled = _stalled_viewer(gateway.port, run_id)
        others = [
            asyncio.create_task(read_sse(viewers_client, gateway.url, run_id, token_for(run_id))) for _ in range(3)
        ]
        await wait_for_metric(viewers_client, gateway.url, "runcast_hub_subscribers", 4)
        sent = await publish(log, run_id, 500, padding=16_000)  # ~8 MB: twice what the kernel may buffer (4 MB)
        loop = asyncio.get_running_loop()
        published_at = loop.time()
        results = await asyncio.wait_for(asyncio.gather(*others), 60)
        others_done_s = loop.time() - published_at
        for events in results:  # the others finished while one viewer read nothing at all
            assert received_ids(events) == sent, f"a reading viewer got {len(events)} of {len(sent)} events"
        still_there = metric(await metrics(viewers_client, gateway.url), "runcast_hub_subscribers")
        assert still_there == 1, f"the stalled viewer should still be subscribed ({still_there} subscribers)"
        frames = await _read_stalled_viewer(stalled)
        got = [frame_id for frame_id, _ in frames]
        assert got == sent, f"stalled viewer: {len(got)} frames, first difference at {_first_difference(got, sent)}"
        assert frames[-1][1] == "complete"
        assert metric(await metrics(viewers_client, gateway.url), "runcast_hub_catchups_total") >= 1
        print(f"others finished {others_done_s:.2f}s after the last publish; the stalled viewer caught up")
    finally:
        gateway.stop()


# -- viewers leaving, the reader's connection killed ---------------------------------------------------------------


async def test_readers_stop_after_the_last_viewer_disconnects_mid_run(
    gateway_proc: GatewayProcess, log: StreamLog, viewers_client: httpx.AsyncClient
):
    base = gateway_proc.url
    run_id = await new_run(log)
    await publish(log, run_id, 2, end=False)
    viewers = [
        asyncio.create_task(read_sse(viewers_client, base, run_id, token_for(run_id), limit=5)) for _ in range(10)
    ]
    await wait_for_metric(viewers_client, base, "runcast_hub_runs_followed", 1)
    assert metric(await metrics(viewers_client, base), "runcast_hub_readers") == 1
    await publish(log, run_id, 5, end=False)  # the run goes on; every viewer leaves after 5 events
    for events in await asyncio.wait_for(asyncio.gather(*viewers), 10):
        assert len(events) == 5
    sample: dict = {}
    for _ in range(250):
        sample = await metrics(viewers_client, base)
        if metric(sample, "runcast_hub_readers") == 0 and metric(sample, "runcast_hub_subscribers") == 0:
            break
        await asyncio.sleep(0.02)
    assert metric(sample, "runcast_hub_readers") == 0
    assert metric(sample, "runcast_hub_runs_followed") == 0
    assert metric(sample, "runcast_hub_subscribers") == 0


async def test_killing_the_hub_readers_connection_mid_run_loses_nothing(
    gateway_proc: GatewayProcess, log: StreamLog, redis: Redis, viewers_client: httpx.AsyncClient
):
    base = gateway_proc.url
    run_id = await new_run(log)
    viewers = [asyncio.create_task(read_sse(viewers_client, base, run_id, token_for(run_id))) for _ in range(20)]
    errors_before = metric(await metrics(viewers_client, base), "runcast_hub_reader_errors_total")
    sent: list[str] = []
    kills = 0
    for round_ in range(4):
        sent += await publish(log, run_id, 15, pause_s=0.01, end=round_ == 3)
        if round_ < 3:
            reader_ids = [c["id"] for c in await redis.client_list() if c.get("name") == "runcast-hub-reader"]
            assert reader_ids, "the hub's reader connection is not there"
            for client_id in reader_ids:
                kills += await redis.client_kill_filter(_id=client_id)
    results = await asyncio.wait_for(asyncio.gather(*viewers), 20)
    for events in results:
        assert received_ids(events) == sent
    assert kills >= 3
    errors_after = metric(await metrics(viewers_client, base), "runcast_hub_reader_errors_total")
    assert errors_after - errors_before >= 3, "the reader never noticed its connection die"
