"""Entries a Redis failover lost are re-sent with their own ids, or reported — never silently missing.

A promoted replica lacks the last entries the old primary acknowledged (asynchronous replication). Here the loss is
made by hand on one real Redis, exactly as the promoted replica would look: the stream's last entries deleted and the
meta hash's `last_event_id` (replicated with them, in the same script) set back. The Sentinel test
(`test_faults_failover.py`) does it for real.
"""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from runcast.shared.append import Behind, RunAppend
from runcast.shared.ids import new_run_id
from runcast.shared.keys import events_key, meta_key
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.shared.streamlog import StreamLog
from runcast.worker.durable import DurableStreamLog
from runcast.worker.tail import Tail
from runcast.worker.writer import AppendWriter, RunChannel


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


def start(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "scripted"), run_id=run_id)


def complete(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.COMPLETE, {"status": "completed"}, run_id=run_id)


async def lose_last(redis: Redis, run_id: str, count: int, status: str = "running") -> str:
    """Make the run's log look like a promoted replica's that lacked its last `count` entries; the new last id."""
    entries = await redis.xrange(events_key(run_id))
    kept = entries[: len(entries) - count]
    await redis.delete(events_key(run_id))  # (XDEL would leave the stream's last id where it was)
    for entry_id, fields in kept:
        await redis.xadd(events_key(run_id), fields, id=entry_id)
    top = kept[-1][0] if kept else ""
    await redis.hset(meta_key(run_id), mapping={"last_event_id": top, "status": status})
    return top


async def token_counts(log: StreamLog, run_id: str) -> list[int]:
    return [json.loads(e.event)["data"]["token_count"] for e in await log.read_all(run_id) if e.type == "chunk"]


async def open_run(log: StreamLog, writer: AppendWriter) -> tuple[str, RunChannel]:
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    channel = writer.open(run_id)
    channel.put([start(run_id)])
    return run_id, channel


async def test_an_append_after_a_lost_tail_answers_behind_and_appends_nothing(redis: Redis):
    log = StreamLog(redis)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    first = await log.append_many(run_id, [start(run_id), chunk(run_id, 1)])
    top = await lose_last(redis, run_id, 1)
    [reply] = await log.append_runs([RunAppend(run_id, [("9999999999999-0", "chunk", "{}")], "", False, first)])
    assert reply == Behind(top)
    assert [e.id for e in await log.read_all(run_id)] == [top], "a Behind reply appends nothing"
    [check] = await log.append_runs([RunAppend(run_id, [], "", False, top)])
    assert check == top, "an empty append whose expected id is there answers the log's last id"


async def test_acknowledged_chunks_a_failover_lost_are_resent_with_their_ids_before_new_ones(redis: Redis):
    log = DurableStreamLog(redis, retry_s=5)
    writer = AppendWriter(log)
    run_id, channel = await open_run(log, writer)
    channel.put([chunk(run_id, n) for n in range(1, 11)])
    await channel.flush()
    before = [e.id for e in await log.read_all(run_id)]
    await lose_last(redis, run_id, 4)

    channel.put([chunk(run_id, n) for n in range(11, 16)])
    await channel.flush()
    entries = await log.read_all(run_id)
    assert [e.id for e in entries][: len(before)] == before, "the lost entries come back with their own ids"
    assert await token_counts(log, run_id) == list(range(1, 16)), "no gap, no duplicate, in order"
    assert writer.failover_resent == 4 and writer.failover_gaps == 0
    channel.close()
    await writer.aclose()


async def test_lost_entries_older_than_the_tail_kept_are_reported_by_one_events_lost_notice(redis: Redis, monkeypatch):
    monkeypatch.setattr(Tail, "max_bytes", 600)  # keeps only the last few chunks
    log = DurableStreamLog(redis, retry_s=5)
    writer = AppendWriter(log)
    run_id, channel = await open_run(log, writer)
    for n in range(1, 31):  # one at a time: each ack extends the tail
        channel.put([chunk(run_id, n)])
        await channel.flush()
    top = await lose_last(redis, run_id, 25)
    kept, forgotten = len(channel.tail), channel.tail.forgotten
    assert 0 < kept < 25

    channel.put([chunk(run_id, 31)])
    await channel.flush()
    entries = await log.read_all(run_id)
    notices = [json.loads(e.event)["data"]["events_lost"] for e in entries if e.type == "metadata"]
    assert notices == [{"after": top, "through": forgotten}]
    counts = await token_counts(log, run_id)
    assert counts == list(range(1, 6)) + list(range(31 - kept, 32)), "kept ones re-sent, the rest reported"
    ids = [e.id for e in entries]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))) and len(set(ids)) == len(ids)
    assert writer.failover_gaps == 1
    channel.close()
    await writer.aclose()


async def test_a_run_that_ended_just_before_the_failover_gets_its_lost_terminal_event_back(redis: Redis):
    log = DurableStreamLog(redis, retry_s=5)
    writer = AppendWriter(log)
    run_id, channel = await open_run(log, writer)
    channel.put([chunk(run_id, 1), chunk(run_id, 2), complete(run_id)])
    await channel.flush()
    channel.close()
    await lose_last(redis, run_id, 2, status="running")  # the promoted replica has neither chunk 2 nor the end

    other_id, other = await open_run(log, writer)  # an idle run that still has its whole log
    await other.flush()
    writer.suspect_failover()  # what the worker's PrimaryWatch says when the primary changed
    await wait_for(lambda: writer.failover_resent == 2)
    entries = await log.read_all(run_id)
    assert [e.type for e in entries] == ["start", "chunk", "chunk", "complete"]
    assert (await redis.hget(meta_key(run_id), "status")) == "completed", "the re-sent end sets the status again"
    assert [e.type for e in await log.read_all(other_id)] == ["start"], "a run that lost nothing gets nothing"
    other.close()
    await writer.aclose()


async def wait_for(condition, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
