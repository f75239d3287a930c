"""The append script (`runcast.shared.append`) on a real Redis: many runs per call, appender-chosen ids that make a
resend idempotent, refusal after the terminal event, and a foreign entry reported as a conflict."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from runcast.shared.append import ENDED, UNKNOWN, Conflict, IdClock, RunAppend
from runcast.shared.ids import entry_key, new_run_id
from runcast.shared.keys import events_key, meta_key
from runcast.shared.streaming import (
    StreamingChunk,
    StreamingError,
    StreamingEvent,
    StreamingEventType,
    StreamingMetadata,
)
from runcast.shared.streamlog import StreamLog


def start(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "scripted"), run_id=run_id)


def chunk(run_id: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(f"t{n}", f"t{n}", False, n), run_id=run_id)


def complete(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.COMPLETE, {"content": "done"}, run_id=run_id)


async def new_runs(log: StreamLog, count: int) -> list[str]:
    run_ids = [new_run_id() for _ in range(count)]
    for run_id in run_ids:
        await log.create_run(run_id, "echo", "x")
    return run_ids


async def test_one_call_appends_to_many_runs_in_order_and_sets_their_status(log: StreamLog):
    run_ids = await new_runs(log, 5)
    ids = IdClock()
    appends = [RunAppend.build(run_id, [start(run_id), chunk(run_id, 1), chunk(run_id, 2)], ids) for run_id in run_ids]
    replies = await log.append_runs(appends)
    for run_id, append, reply in zip(run_ids, appends, replies, strict=True):
        entries = await log.read_all(run_id)
        assert [e.id for e in entries] == [entry[0] for entry in append.entries]
        assert [e.type for e in entries] == ["start", "chunk", "chunk"]
        assert reply == entries[-1].id
        meta = await log.get_meta(run_id)
        assert meta is not None and meta["status"] == "running" and meta["last_event_id"] == entries[-1].id


async def test_a_resent_call_that_had_landed_appends_nothing_and_answers_the_same_ids(log: StreamLog):
    run_ids = await new_runs(log, 3)
    ids = IdClock()
    first = [RunAppend.build(run_id, [start(run_id), chunk(run_id, 1)], ids) for run_id in run_ids]
    replies = await log.append_runs(first)
    assert await log.append_runs(first) == replies  # the reply was "lost": the same call again
    for run_id in run_ids:
        assert [e.type for e in await log.read_all(run_id)] == ["start", "chunk"]


async def test_a_resend_after_a_partial_landing_appends_only_the_missing_events(redis: Redis, log: StreamLog):
    (run_id,) = await new_runs(log, 1)
    ids = IdClock()
    append = RunAppend.build(run_id, [start(run_id), chunk(run_id, 1), chunk(run_id, 2)], ids)
    landed = RunAppend(run_id, append.entries[:1], "running")  # as if only the first event had made it
    await log.append_runs([landed])
    (reply,) = await log.append_runs([append])
    entries = await log.read_all(run_id)
    assert [e.id for e in entries] == [entry[0] for entry in append.entries] and reply == entries[-1].id


async def test_the_resent_terminal_event_of_the_run_is_recognised_as_landed(log: StreamLog):
    (run_id,) = await new_runs(log, 1)
    ids = IdClock()
    await log.append_runs([RunAppend.build(run_id, [start(run_id)], ids)])
    end = RunAppend.build(run_id, [chunk(run_id, 1), complete(run_id)], ids)
    replies = await log.append_runs([end])
    assert await log.append_runs([end]) == replies  # not "ended": these are our own events
    assert [e.type for e in await log.read_all(run_id)] == ["start", "chunk", "complete"]
    assert (await log.get_meta(run_id) or {})["status"] == "completed"


async def test_nothing_is_appended_after_the_terminal_event(log: StreamLog):
    run_ids = await new_runs(log, 2)
    ids = IdClock()
    await log.append_runs([RunAppend.build(run_id, [start(run_id)], ids) for run_id in run_ids])
    await log.end_run(run_ids[0], "cancelled", "stop")
    late = [RunAppend.build(run_id, [chunk(run_id, 1)], ids) for run_id in run_ids]
    ended, appended = await log.append_runs(late)
    assert ended == ENDED and isinstance(appended, str)
    assert [e.type for e in await log.read_all(run_ids[0])] == ["start", "error"]
    assert [e.type for e in await log.read_all(run_ids[1])] == ["start", "chunk"]


async def test_an_unknown_run_is_answered_without_touching_the_others(log: StreamLog):
    (known,) = await new_runs(log, 1)
    unknown = new_run_id()
    ids = IdClock()
    replies = await log.append_runs([RunAppend.build(r, [start(r)], ids) for r in (unknown, known)])
    assert replies[0] == UNKNOWN and isinstance(replies[1], str)
    assert await log.read_all(unknown) == []


async def test_ids_behind_someone_elses_entry_are_a_conflict_and_append_nothing(redis: Redis, log: StreamLog):
    (run_id,) = await new_runs(log, 1)
    foreign = await log.append_many(run_id, [start(run_id)])  # Redis chose this id (its clock)
    behind = IdClock(clock=lambda: 1.0)  # an appender whose clock is far behind
    append = RunAppend.build(run_id, [chunk(run_id, 1)], behind)
    (reply,) = await log.append_runs([append])
    assert reply == Conflict(foreign)
    behind.advance_past(foreign)
    append.renumber(behind)
    (reply,) = await log.append_runs([append])
    entries = await log.read_all(run_id)
    assert [e.type for e in entries] == ["start", "chunk"] and reply == entries[-1].id
    assert entry_key(entries[1].id) > entry_key(foreign)


async def test_ttl_is_rearmed_only_when_asked_and_always_at_the_end(redis: Redis):
    log = StreamLog(redis, retention_s=500)
    (run_id,) = await new_runs(log, 1)
    ids = IdClock()
    await log.append_runs([RunAppend.build(run_id, [start(run_id)], ids)])  # a status change: TTL set
    await redis.expire(events_key(run_id), 100)
    await log.append_runs([RunAppend.build(run_id, [chunk(run_id, 1)], ids, refresh_ttl=False)])
    assert await redis.ttl(events_key(run_id)) <= 100  # a plain token did not rewrite it
    await log.append_runs([RunAppend.build(run_id, [complete(run_id)], ids, refresh_ttl=False)])
    assert 100 < await redis.ttl(events_key(run_id)) <= 500  # the end always does
    assert 100 < await redis.ttl(meta_key(run_id)) <= 500


async def test_a_failing_command_inside_the_script_is_an_error_not_a_conflict(redis: Redis, log: StreamLog):
    (run_id,) = await new_runs(log, 1)
    await redis.set(events_key(run_id), "not a stream")
    with pytest.raises(ResponseError):
        await log.append_runs([RunAppend.build(run_id, [start(run_id)], IdClock())])


async def test_the_meta_hash_follows_the_logs_last_entry(log: StreamLog):
    (run_id,) = await new_runs(log, 1)
    ids = IdClock()
    await log.append_runs([RunAppend.build(run_id, [start(run_id)], ids)])
    (last,) = await log.append_runs([RunAppend.build(run_id, [chunk(run_id, n) for n in range(3)], ids)])
    meta = await log.get_meta(run_id)
    assert meta is not None and meta["last_event_id"] == last
    assert float(meta["updated_at"]) == pytest.approx(entry_key(last)[0] / 1000, abs=5)


async def test_an_error_event_ends_the_run_as_cancelled_or_failed(log: StreamLog):
    run_ids = await new_runs(log, 2)
    ids = IdClock()
    cancelled = StreamingEvent(StreamingEventType.ERROR, StreamingError("cancelled", "x"), run_id=run_ids[0])
    failed = StreamingEvent(StreamingEventType.ERROR, StreamingError("model_error", "x"), run_id=run_ids[1])
    await log.append_runs([RunAppend.build(run_ids[0], [cancelled], ids), RunAppend.build(run_ids[1], [failed], ids)])
    assert [(await log.get_meta(r) or {})["status"] for r in run_ids] == ["cancelled", "failed"]
