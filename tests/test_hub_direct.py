"""The hub writing live entries to a viewer's connection itself (a `Sink`) instead of waking the viewer's task.

In-process hub with a scripted sink (real redis-server): what goes to the sink and what comes out of the iterator
together are exactly the run, in order; a backed-up connection sends the viewer through catch-up; a closed one ends
it; the bytes are encoded once per pass for all viewers of a format. Then the real thing: plain `uvicorn
runcast.gateway.app:app` with each of its HTTP implementations, frames checked on the wire.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import httpx
import pytest

from runcast.gateway.hub.fanout import Hub
from runcast.gateway.wire.sse_response import PING_FRAME
from runcast.shared.ids import START_ID
from runcast.shared.keys import events_key
from runcast.shared.streamlog import Entry, Reset, StreamLog
from tests.support.hub import eventually, hub_metric, new_run, parse_metrics, publish
from tests.support.ports import free_port
from tests.support.processes import Process, runcast_env
from tests.support.stack import running_stack
from tests.test_sse_response import RETRY_FIELD, RawStream, expected_frames

ENCODED: list[int] = []


def encode_ids(entries: Sequence[Entry]) -> bytes:
    """The scripted format: ids, one per line; counts its calls."""
    ENCODED.append(len(entries))
    return b"".join(entry.id.encode() + b"\n" for entry in entries)


class ScriptedSink:
    encode = staticmethod(encode_ids)

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.full = False
        self.gone = False

    @property
    def ready(self) -> bool:
        return not self.gone and not self.full

    @property
    def closed(self) -> bool:
        return self.gone

    def write(self, data: bytes) -> bool:
        if self.full or self.gone:
            return False
        self.written.append(data)
        return True

    def ids(self) -> list[str]:
        return b"".join(self.written).decode().split()


class Viewer:
    """Runs `hub.subscribe(..., sink)` like the SSE route does: what the iterator yields is sent by the viewer."""

    def __init__(self, hub: Hub, run_id: str, sink: ScriptedSink) -> None:
        self.sink = sink
        self.yielded: list[Entry] = []
        self.resets: list[Reset] = []
        self.task = asyncio.create_task(self._run(hub, run_id))

    async def _run(self, hub: Hub, run_id: str) -> None:
        async for batch in hub.subscribe(run_id, START_ID, sink=self.sink):  # type: ignore[arg-type]
            if isinstance(batch, Reset):
                self.resets.append(batch)
            else:
                self.yielded.extend(batch)
                self.sink.written.append(encode_ids(batch))  # the viewer's own send, in order with the hub's writes
                # like the SSE response: the next batch only once the connection has drained
                await eventually(lambda: not self.sink.full, within_s=60, what="the connection to drain")

    def direct(self, hub: Hub, run_id: str) -> bool:
        run = hub.runs.get(run_id)
        return run is not None and any(s.direct and s.sink is self.sink for s in run.subscribers)


async def test_a_viewer_level_with_its_run_is_written_to_by_the_run_and_its_task_sends_only_the_backlog(
    log: StreamLog,
):
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        early = await publish(log, run_id, 3, end=False)
        viewer = Viewer(hub, run_id, ScriptedSink())
        await eventually(lambda: viewer.direct(hub, run_id), what="the viewer to go direct")
        direct = hub_metric("runcast_hub_direct_deliveries_total")
        late = await publish(log, run_id, 5)
        await asyncio.wait_for(viewer.task, 5)
        assert [entry.id for entry in viewer.yielded] == early  # its own task sent the backlog only
        assert viewer.sink.ids() == early + late  # everything once, in order
        assert hub_metric("runcast_hub_direct_deliveries_total") - direct == len(late)
        assert hub.runs == {}
    finally:
        await hub.close()


async def test_a_backed_up_connection_sends_the_viewer_through_catch_up_then_back_to_direct_writes(log: StreamLog):
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        viewer = Viewer(hub, run_id, ScriptedSink())
        await eventually(lambda: viewer.direct(hub, run_id), what="direct")
        first = await publish(log, run_id, 2, end=False)
        await eventually(lambda: viewer.sink.ids() == first, what="first entries written by the hub")
        catchups = hub_metric("runcast_hub_catchups_total")
        viewer.sink.full = True  # the transport holds too much: the hub must not write, nor wait
        refused = await publish(log, run_id, 3, end=False)
        await eventually(lambda: not viewer.direct(hub, run_id), what="detached")
        viewer.sink.full = False  # drained: its task catches up from memory and goes back to live
        await eventually(lambda: viewer.direct(hub, run_id), what="direct again")
        rest = await publish(log, run_id, 3)
        await asyncio.wait_for(viewer.task, 5)
        assert viewer.sink.ids() == first + refused + rest
        assert [entry.id for entry in viewer.yielded] == refused  # what the connection could not take, resent
        assert hub_metric("runcast_hub_catchups_total") == catchups + 1
    finally:
        await hub.close()


async def test_a_closed_connection_ends_the_subscription_without_a_catch_up(log: StreamLog):
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        viewer = Viewer(hub, run_id, ScriptedSink())
        other = Viewer(hub, run_id, ScriptedSink())
        await eventually(lambda: viewer.direct(hub, run_id) and other.direct(hub, run_id), what="direct")
        catchups = hub_metric("runcast_hub_catchups_total")
        viewer.sink.gone = True
        sent = await publish(log, run_id, 2, end=False)
        await asyncio.wait_for(viewer.task, 5)  # ended by the hub's next write, not by a ping or a timeout
        assert viewer.sink.ids() == [] and viewer.yielded == []
        assert hub_metric("runcast_hub_catchups_total") == catchups
        await eventually(lambda: other.sink.ids() == sent, what="the other viewer unaffected")
        other.task.cancel()
    finally:
        await hub.close()


async def test_one_pass_encodes_each_batch_once_for_all_the_viewers_of_a_format(log: StreamLog):
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        viewers = [Viewer(hub, run_id, ScriptedSink()) for _ in range(50)]
        await eventually(lambda: all(v.direct(hub, run_id) for v in viewers), what="50 direct viewers")
        ENCODED.clear()
        sent = await publish(log, run_id, 4, pause_s=0.02)
        await asyncio.wait_for(asyncio.gather(*(v.task for v in viewers)), 5)
        assert all(v.sink.ids() == sent for v in viewers)
        assert sum(ENCODED) == len(sent), f"{sum(ENCODED)} entries encoded for {len(sent)} events x 50 viewers"
    finally:
        await hub.close()


# -- the real thing: plain uvicorn, each HTTP implementation ---------------------------------------------------------


@pytest.mark.parametrize("http_impl", ["httptools", "h11"])
async def test_plain_uvicorn_streams_live_frames_written_by_the_hub_exactly_on_the_wire(
    module_redis_url: str, log: StreamLog, http_impl: str
):
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "runcast.gateway.app:app", "--port", str(port), "--http", http_impl]
    server = Process([*args, "--log-level", "warning"], runcast_env(module_redis_url)).start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{base}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)
            run_id = await new_run(log)
            early = await publish(log, run_id, 2, end=False)
            streams = [await RawStream.open(base, run_id) for _ in range(3)]
            for stream in streams:
                await stream.read_until(lambda s: len(s.chunks) >= 1)  # the backlog, sent by the viewer's task
            late = await publish(log, run_id, 4, pause_s=0.05)
            for stream in streams:
                await stream.read_to_end()
            sample = parse_metrics((await http.get(f"{base}/metrics")).text)
        raw = await log.redis.xrange(events_key(run_id))
        assert [entry_id for entry_id, _ in raw] == early + late
        for stream in streams:
            stream.close()
            assert stream.body == RETRY_FIELD + expected_frames(raw)
            assert stream.chunks[0] == RETRY_FIELD + expected_frames(raw[:2])
            assert len(stream.chunks) == 1 + len(late), "one chunk per live event, nothing else"
            assert stream.ended
        assert sample[("runcast_hub_direct_deliveries_total", ())] == 3 * len(late)
    finally:
        server.stop()


async def test_the_heartbeat_counts_from_the_hubs_writes_and_resumes_when_the_run_goes_quiet(real_redis_url: str):
    async with running_stack(real_redis_url, worker=False, sse_ping_s=1.0) as stack:
        log = StreamLog(stack.redis)
        run_id = await new_run(log)
        first = await publish(log, run_id, 1, end=False)
        stream = await RawStream.open(stack.url, run_id)
        try:
            await stream.read_until(lambda s: len(s.chunks) >= 1)  # the backlog, with `retry:` in front
            direct = hub_metric("runcast_hub_direct_deliveries_total")
            live = await publish(log, run_id, 30, end=False, pause_s=0.05)  # 1.5 s of frames, 0.05 s apart
            await stream.read_until(lambda s: len(s.chunks) >= 1 + len(live))
            busy = list(stream.chunks)
            await stream.read_until(lambda s: s.chunks[-2:] == [PING_FRAME, PING_FRAME], within_s=10)  # quiet now
        finally:
            stream.close()
    assert hub_metric("runcast_hub_direct_deliveries_total") - direct == len(live)
    assert busy[0].startswith(RETRY_FIELD) and PING_FRAME not in busy, "no ping while the hub writes every 0.05 s"
    ids = [line[4:].decode() for chunk in busy for line in chunk.split(b"\n") if line.startswith(b"id: ")]
    assert ids == first + live
