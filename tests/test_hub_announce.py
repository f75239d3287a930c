"""The append script's announcement and how the hub reads it (real redis-server): every entry arrives byte for byte
whatever its text, and an announcement the hub cannot use sends it to the log instead of losing anything."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from runcast.gateway.hub.announcements import parse_announcement
from runcast.gateway.hub.fanout import Hub
from runcast.shared.ids import START_ID
from runcast.shared.keys import live_channel
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import Entry, StreamLog
from tests.support.hub import collect, eventually, hub_metric, new_run, publish

AWKWARD = ["héllo wörld ✓ 日本語", 'quotes " and \\ backslashes', "new\nlines\r\nand\ttabs", " 3 spaces ", ""]
AWKWARD += ["🙂" * 50]


async def test_entries_with_any_text_are_announced_and_delivered_byte_for_byte(log: StreamLog):
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        viewer = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
        await eventually(lambda: run_id in hub.runs and hub.runs[run_id].ready.is_set(), what="joined")
        announced = hub_metric("runcast_hub_announcements_total")
        events = [StreamingEvent(StreamingEventType.CHUNK, StreamingChunk("", text), run_id=run_id) for text in AWKWARD]
        await log.append_many(run_id, events[:3])  # several entries in one announcement
        for event in events[3:]:
            await log.append(run_id, event)
        await publish(log, run_id, 0)
        _, got = await asyncio.wait_for(viewer, 5)
        assert got == await log.read_all(run_id)  # ids, types and event JSON exactly as stored
        assert hub_metric("runcast_hub_announcements_total") - announced == 1 + len(events[3:]) + 1
    finally:
        await hub.close()


def test_an_announcement_is_the_previous_id_then_each_entry_by_byte_length():
    event = '{"delta":"é\\n"}'
    size = len(event.encode())
    payload = f"5-0\n6-0 chunk {size}\n{event}7-1 complete 2\n{{}}".encode()
    assert parse_announcement(payload) == ("5-0", [Entry("6-0", "chunk", event), Entry("7-1", "complete", "{}")])
    for broken in (b"no line", b"1-0\n2-0 chunk 99\n{}", b"1-0\n2-0 chunk\n{}", b"1-0\n2-0 chunk x\n{}"):
        with pytest.raises(ValueError):
            parse_announcement(broken)


async def test_an_unreadable_announcement_makes_the_hub_read_the_log_and_nothing_is_lost(log: StreamLog, redis: Redis):
    hub = Hub(log)
    try:
        run_id = await new_run(log)
        viewer = asyncio.create_task(collect(hub.subscribe(run_id, START_ID)))
        first = await publish(log, run_id, 2, end=False)
        await eventually(lambda: hub.runs[run_id].cursor == first[-1], what="first entries")
        fills = hub_metric("runcast_hub_gap_fills_total")
        await redis.publish(live_channel(run_id), b"\xff not an announcement")
        await eventually(lambda: hub_metric("runcast_hub_gap_fills_total") > fills, what="a read of the log")
        rest = await publish(log, run_id, 2)
        _, got = await asyncio.wait_for(viewer, 5)
        assert [entry.id for entry in got] == first + rest
    finally:
        await hub.close()
