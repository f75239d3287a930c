"""Unit specifications of the shared building blocks: ids, tokens, the event model, token splitting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runcast.shared.ids import BadEntryId, BadRunId, check_run_id, entry_key, new_run_id, parse_entry_id
from runcast.shared.keys import events_key, meta_key, run_id_from_events_key
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType, StreamingToolCall
from runcast.shared.tokens import TokenExpired, TokenInvalid, TokenMissing, TokenWrongRun, issue_token, verify_token
from runcast.worker.providers.scripted import split_tokens

SECRET = b"k" * 32


def test_entry_ids_compare_as_numbers_not_strings():
    assert entry_key("10-0") > entry_key("9-0")
    assert entry_key("9-10") > entry_key("9-9")


@pytest.mark.parametrize("bad", ["", "1", "1-", "-1", "a-b", "1-2-3", " 1-2", "1-2\n", "1" * 21 + "-0"])
def test_bad_entry_ids_are_refused(bad: str):
    with pytest.raises(BadEntryId):
        parse_entry_id(bad)


def test_run_ids_are_32_hex_and_keys_share_a_hash_tag():
    run_id = new_run_id()
    assert check_run_id(run_id) == run_id
    with pytest.raises(BadRunId):
        check_run_id(run_id.upper())
    assert events_key(run_id) == f"runcast:{{{run_id}}}:events"
    assert meta_key(run_id) == f"runcast:{{{run_id}}}:meta"
    assert run_id_from_events_key(events_key(run_id)) == run_id


def test_a_token_opens_its_own_run_only():
    run_a, run_b = new_run_id(), new_run_id()
    token = issue_token(SECRET, run_a, 60)
    verify_token(SECRET, token, run_a)
    with pytest.raises(TokenWrongRun):
        verify_token(SECRET, token, run_b)


def test_tokens_expire_and_cannot_be_forged():
    run_id = new_run_id()
    with pytest.raises(TokenExpired):
        verify_token(SECRET, issue_token(SECRET, run_id, 60, now=1000.0), run_id, now=1061.0)
    with pytest.raises(TokenInvalid):
        verify_token(SECRET, issue_token(b"other", run_id, 60), run_id)
    with pytest.raises(TokenMissing):
        verify_token(SECRET, None, run_id)
    for garbage in ["", "a.b.c", "!!!.???", "x" * 600]:
        with pytest.raises((TokenInvalid, TokenMissing)):
            verify_token(SECRET, garbage, run_id)


def test_event_json_matches_jaf_to_dict_and_round_trips():
    event = StreamingEvent(
        StreamingEventType.CHUNK, StreamingChunk("Hello, world", ", world", False, 2), 12.5, "r1", None
    )
    assert event.to_dict() == {
        "type": "chunk",
        "data": {"content": "Hello, world", "delta": ", world", "is_complete": False, "token_count": 2},
        "timestamp": 12.5,
        "run_id": "r1",
        "trace_id": None,
    }
    assert StreamingEvent.from_json(event.to_json()) == event
    call = StreamingEvent(StreamingEventType.TOOL_CALL, StreamingToolCall("calc", {"x": 1}, "c1"), 1.0)
    assert StreamingEvent.from_json(call.to_json()) == call


@given(st.text())
def test_scripted_tokens_join_back_to_the_input_exactly(text: str):
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(token.strip() for token in tokens[:-1])


async def test_a_run_ends_exactly_once_and_nothing_is_appended_after(redis_url: str | None):
    from runcast.demo import fake_clients, real_clients
    from runcast.shared.streamlog import RunEnded, StreamLog

    redis, _queue = real_clients(redis_url) if redis_url else fake_clients()
    log = StreamLog(redis)
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    first = await log.end_run(run_id, "cancelled", "by test")
    assert first is not None
    assert await log.end_run(run_id, "worker_lost", "too late") is None
    with pytest.raises(RunEnded):
        await log.append(run_id, StreamingEvent(StreamingEventType.CHUNK, StreamingChunk("a", "a")))
    meta = await log.get_meta(run_id)
    assert meta["status"] == "cancelled" and meta["last_event_id"] == first
    assert [e.id for e in await log.read_all(run_id)] == [first]
    await redis.aclose()
