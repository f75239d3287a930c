"""Stalled viewers (real gateway, worker and redis-server processes): clients that connect, send their request and
never read (a 4 KiB receive buffer) cost the gateway a bounded amount of memory each, whatever the run's length; a
stalled viewer that starts reading later gets every event once, in order, up to the terminal event; one stalled
longer than RUNCAST_VIEWER_STALL_S is closed and its resume gets exactly the rest. docs/reliability.md lists them.

The run is ~6 MB (the echo agent's chunks carry the text so far): on loopback the kernel's socket buffers alone take
a few MB per connection, so only a run bigger than that leaves anything for the gateway to hold; with the unbounded
writes this replaced, each stalled viewer cost the gateway MBs (docs/performance.md "Stalled viewers").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

import runcast
from runcast.shared.keys import events_key
from tests.support.faults import start_together
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.sse import create_run, read_sse
from tests.support.stalled import StalledViewer, memory_kib, open_stalled

pytestmark = pytest.mark.slow

STALLED = 100
PER_VIEWER_KIB = {"memory": 160, "log": 320}
"""The bound per stalled viewer: the ~64 KiB its transport may hold (plus one event), the connection itself (~30 KiB
for SSE, ~45 KiB for a WebSocket, idle), allocator fragmentation and noise; catching up from the log, also the page of
events (~32 KiB, `hub/pages.py`) it is in the middle of. Measured: SSE ~40 / ~160, WebSocket ~125 / ~240 KiB; before
this bound, ~520 / ~1,900 and ~140 / ~6,400 KiB (docs/performance.md "Stalled viewers")."""
STALL_S = 2.0
ENV = {
    "RUNCAST_STREAM_MAXLEN": "1000000",
    "RUNCAST_SCRIPTED_DELAY_MS": "1",
    "RUNCAST_MAX_VIEWERS_PER_RUN": "100000",
}


def big_text(tokens: int = 500, size: int = 48) -> str:
    """The echo agent's input for a run of ~6 MB: each chunk event carries the answer so far."""
    return " ".join(f"{i:0{size}d}" for i in range(tokens))


@pytest.fixture(scope="module")
def deployment(module_redis_url: str) -> Iterator[tuple[GatewayProcess, WorkerProcess]]:
    """A gateway with a 2 s stall limit (and a 1 s heartbeat: a quiet stream is checked every second), and a worker."""
    strict = GatewayProcess(module_redis_url, **ENV, RUNCAST_VIEWER_STALL_S=str(STALL_S), RUNCAST_SSE_PING_S="1")
    worker = WorkerProcess(module_redis_url, **ENV)
    start_together(strict, worker)
    yield strict, worker
    for proc in (strict, worker):
        proc.stop()


SMALL_HISTORY = 64
"""A hub that keeps only this many events of a run in memory: stalled viewers catch up from Redis, in pages."""


@pytest.fixture(params=["memory", "log"], ids=["backlog-in-memory", "catch-up-from-log"])
def fresh_gateway(
    request: pytest.FixtureRequest, module_redis_url: str, deployment: tuple[GatewayProcess, WorkerProcess]
) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway of its own for a memory measurement (the default stall limit, 60 s: nothing is closed), and where
    stalled viewers catch up from: `memory` (the hub keeps 2,048 events of a run) or `log` (SMALL_HISTORY: Redis)."""
    history = 2048 if request.param == "memory" else SMALL_HISTORY
    gateway = GatewayProcess(module_redis_url, **ENV, RUNCAST_HUB_HISTORY_SIZE=str(history)).start()
    yield gateway, request.param
    gateway.stop()


def stored(redis_url: str, run_id: str) -> tuple[list[tuple[str, str]], list[int]]:
    """(id, type) of every entry of the run in Redis, and the size of each event."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = client.xrange(events_key(run_id))
    finally:
        client.close()
    return [(entry_id, fields["type"]) for entry_id, fields in raw], [len(fields["event"]) for _, fields in raw]


async def run_watched_by_stalled_viewers(
    gateway: GatewayProcess, http: httpx.AsyncClient, *, websocket: bool
) -> tuple[dict, list[StalledViewer], list[tuple[str, str]], int]:
    """A warm-up run, then a big run with STALLED stalled viewers from its start and one viewer reading it all.
    Returns the run, the stalled viewers, the reader's (id, type) list, and the gateway's RSS before (KiB)."""
    warm = await create_run(http, gateway.url, "echo", "warm up")
    await read_sse(http, gateway.url, warm["run_id"], warm["token"])
    rss_before = memory_kib(gateway.pid)["VmRSS"]
    run = await create_run(http, gateway.url, "echo", big_text())
    stalled = await asyncio.to_thread(
        open_stalled, gateway.url, run["run_id"], run["token"], STALLED, websocket=websocket
    )
    if websocket:  # the reader speaks the same protocol: what the gateway caches per format is the run's once
        host, port = gateway.url.removeprefix("http://").split(":")
        reader = StalledViewer(host, int(port), run["run_id"], run["token"], websocket=True, rcvbuf=1 << 20).open()
        read = (await asyncio.to_thread(reader.read_all, 120)).events
    else:
        read = [(r.id or "", r.event) for r in await read_sse(http, gateway.url, run["run_id"], run["token"])]
    return run, stalled, read, rss_before


@pytest.mark.parametrize("websocket", [False, True], ids=["sse", "ws"])
async def test_stalled_viewers_cost_bounded_memory_each_and_get_the_whole_run_once_when_they_read(
    deployment: tuple[GatewayProcess, WorkerProcess],
    fresh_gateway: tuple[GatewayProcess, str],
    module_redis_url: str,
    http: httpx.AsyncClient,
    websocket: bool,
):
    gateway, backlog = fresh_gateway
    history = 2048 if backlog == "memory" else SMALL_HISTORY
    run, stalled, read, rss_before = await run_watched_by_stalled_viewers(gateway, http, websocket=websocket)
    try:
        log, sizes = stored(module_redis_url, run["run_id"])
        assert read == log, "the reading viewer did not get every event exactly once, in order"
        assert sum(sizes) > 5 << 20
        await asyncio.sleep(1.0)  # whatever the gateway would queue for the stalled viewers, it has by now
        peak = memory_kib(gateway.pid)["VmHWM"]
        # kept once for all viewers: the run's cached frames (all of it) and the hub's in-memory tail of it
        shared_kib = (sum(sizes) + sum(sizes[-history:])) // 1024
        per_viewer = (peak - rss_before - shared_kib) / STALLED
        protocol = "WebSocket" if websocket else "SSE"
        print(f"\n[stalled] {STALLED} stalled {protocol} viewers, {sum(sizes) >> 10} KiB run, backlog in {backlog}:")
        print(f"  gateway RSS {rss_before} KiB -> peak {peak} KiB; {per_viewer:.0f} KiB per stalled viewer")
        assert per_viewer < PER_VIEWER_KIB[backlog], f"{per_viewer:.0f} KiB per stalled viewer"
        # a stalled viewer that starts reading (well before the stall limit) gets the whole run, once, in order
        for viewer in stalled[:3]:
            outcome = await asyncio.to_thread(viewer.read_all, 120)
            assert outcome.events == log and outcome.ended == "terminal", (len(outcome.events), outcome.ended)
    finally:
        for viewer in stalled:
            viewer.close()
    assert gateway.alive() and deployment[1].alive()
    assert (await http.get(f"{gateway.url}/healthz")).status_code == 200


async def stall_count(http: httpx.AsyncClient, gateway: GatewayProcess) -> float:
    text = (await http.get(f"{gateway.url}/metrics")).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("runcast_viewer_stalls_total"))


@pytest.mark.parametrize("websocket", [False, True], ids=["sse", "ws"])
async def test_a_viewer_stalled_past_the_limit_is_closed_and_its_resume_gets_exactly_the_rest(
    deployment: tuple[GatewayProcess, WorkerProcess],
    module_redis_url: str,
    http: httpx.AsyncClient,
    websocket: bool,
):
    strict, worker = deployment
    closes = await stall_count(http, strict)
    run = await create_run(http, strict.url, "echo", big_text())
    [viewer] = await asyncio.to_thread(open_stalled, strict.url, run["run_id"], run["token"], 1, websocket=websocket)
    await read_sse(http, strict.url, run["run_id"], run["token"])  # the run has ended
    started = time.monotonic()
    closed = await stall_count(http, strict)
    while closed <= closes:
        assert time.monotonic() - started < STALL_S + 30, "the stalled viewer was never closed"
        await asyncio.sleep(0.1)
        closed = await stall_count(http, strict)
    first = await asyncio.to_thread(viewer.read_all, 60)
    log, _ = stored(module_redis_url, run["run_id"])
    assert first.ended != "terminal" and len(first.events) < len(log)
    if websocket:
        assert first.ended in ("close 1013", "eof", "reset"), first.ended
    assert first.events == log[: len(first.events)]
    # the client resumes after the last event it got: exactly the rest, ending with the terminal event
    host, port = strict.url.removeprefix("http://").split(":")
    resumed = StalledViewer(
        host, int(port), run["run_id"], run["token"], websocket=websocket, last_event_id=first.last_id, rcvbuf=1 << 20
    ).open()
    rest = await asyncio.to_thread(resumed.read_all, 60)
    assert first.events + rest.events == log and rest.ended == "terminal"
    assert strict.alive()
    assert worker.alive()
    assert (await http.get(f"{strict.url}/healthz")).status_code == 200


async def test_a_viewer_stalled_on_a_run_that_went_quiet_is_closed_too_and_resumes_exactly(
    deployment: tuple[GatewayProcess, WorkerProcess], module_redis_url: str, http: httpx.AsyncClient
):
    """No event comes after the stall: whichever way the viewer was being fed when it backed up (its own task
    catching up, which waits for the connection; or the hub writing to it directly until it could take no more, then
    nothing: the heartbeat helper finds it backed up and waits instead), it is closed after the limit all the same."""
    strict, _ = deployment
    closes = await stall_count(http, strict)
    run = await create_run(http, strict.url, "support", "hi", external=True)  # published from here
    [viewer] = await asyncio.to_thread(open_stalled, strict.url, run["run_id"], run["token"], 1)
    async with runcast.publisher(module_redis_url, lost_s=30).run(run["run_id"]) as producer:
        for _ in range(120):  # ~7 MB: each chunk event carries the text so far
            await producer.chunk("x" * 1000)
        started = time.monotonic()
        while await stall_count(http, strict) <= closes:  # the run stays open and quiet meanwhile
            assert time.monotonic() - started < STALL_S + 30, "the stalled viewer of a quiet run was never closed"
            await asyncio.sleep(0.1)
        first = await asyncio.to_thread(viewer.read_all, 60)
    log, _ = stored(module_redis_url, run["run_id"])
    assert first.ended in ("eof", "reset") and 0 < len(first.events) < len(log)
    host, port = strict.url.removeprefix("http://").split(":")
    resumed = StalledViewer(
        host, int(port), run["run_id"], run["token"], last_event_id=first.last_id, rcvbuf=1 << 20
    ).open()
    rest = await asyncio.to_thread(resumed.read_all, 60)
    assert first.events + rest.events == log and rest.ended == "terminal"
    assert strict.alive()
