"""The conversation store's atomic steps and the gateway's claim rules, on a real Redis: one holder at a time, a
completed turn always recorded before the next run reads the history, and no conversation locked for good."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from redis.asyncio import Redis

from runcast.gateway import conversations
from runcast.gateway.conversations import ConversationBusy
from runcast.shared.conversations import BadConversationId, ConversationStore, check_conversation_id
from runcast.shared.ids import new_run_id
from runcast.shared.keys import conversation_history_key, conversation_lock_key
from runcast.shared.settings import Settings
from runcast.shared.streamlog import StreamLog
from tests.support.processes import TEST_SECRET

TTL_S = 300


@pytest.fixture
def store(redis: Redis) -> ConversationStore:
    return ConversationStore(redis, ttl_s=TTL_S, max_messages=4)


@pytest.fixture
def gateway(redis: Redis, log: StreamLog) -> SimpleNamespace:
    """What `runcast.gateway.conversations` reads of the gateway's state."""
    settings = Settings(secret=TEST_SECRET, conversation_ttl_s=TTL_S, max_history_messages=4)
    return SimpleNamespace(settings=settings, redis=redis, stream_log=log)


def conversation() -> str:
    return f"c-{uuid.uuid4().hex[:12]}"


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def run_with_status(log: StreamLog, status: str) -> str:
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "x")
    await log.set_status(run_id, status)
    return run_id


@pytest.mark.parametrize("bad", ["", "{x}", "a/b", ".hidden", "x" * 129, "white space", "ünï"])
def test_conversation_ids_that_could_break_keys_or_paths_are_refused(bad: str):
    with pytest.raises(BadConversationId):
        check_conversation_id(bad)


def test_ai_sdk_and_uuid_chat_ids_are_accepted():
    for good in ["Xh3kP0aZq9LmN2bC", str(uuid.uuid4()), "user:42:chat_7", "a"]:
        assert check_conversation_id(good) == good


async def test_claim_is_a_compare_and_set_on_the_holder_and_the_history_length(store: ConversationStore, redis: Redis):
    conv = conversation()
    assert (await store.claim(conv, "r1", expected_holder=None, expected_length=0, append=[user("a")])).ok
    lost = await store.claim(conv, "r2", expected_holder=None, expected_length=1)
    assert not lost.ok and lost.holder == "r1"
    assert not (await store.claim(conv, "r2", expected_holder="r1", expected_length=0)).ok  # history changed
    assert (await store.claim(conv, "r2", expected_holder="r1", expected_length=1, keep=0, append=[user("b")])).ok
    assert await store.holder(conv) == "r2" and await store.messages(conv) == [user("b")]
    for key in (conversation_lock_key(conv), conversation_history_key(conv)):
        assert 0 < await redis.ttl(key) <= TTL_S


async def test_only_the_holder_records_its_turn_which_releases_the_conversation(store: ConversationStore):
    conv = conversation()
    await store.claim(conv, "r1", expected_holder=None, expected_length=0)
    assert not await store.record_turn(conv, "someone-else", [user("intruder")])
    assert await store.record_turn(conv, "r1", [user("q"), {"role": "assistant", "content": "a"}])
    assert await store.holder(conv) is None
    assert not await store.record_turn(conv, "r1", [user("again")]), "a retried record must not append twice"
    assert [m["content"] for m in await store.messages(conv)] == ["q", "a"]


async def test_recording_keeps_the_newest_max_messages(store: ConversationStore):
    conv = conversation()
    for n in range(3):
        await store.claim(conv, f"r{n}", expected_holder=None, expected_length=len(await store.messages(conv)))
        await store.record_turn(conv, f"r{n}", [user(f"q{n}"), {"role": "assistant", "content": f"a{n}"}])
    assert [m["content"] for m in await store.messages(conv)] == ["q1", "a1", "q2", "a2"]


@pytest.mark.parametrize("status", ["queued", "running"])
async def test_a_claim_while_the_holder_is_queued_or_running_fails_with_its_id(
    gateway: SimpleNamespace, store: ConversationStore, log: StreamLog, status: str
):
    conv, holder = conversation(), await run_with_status(log, status)
    await store.claim(conv, holder, expected_holder=None, expected_length=0)
    with pytest.raises(ConversationBusy) as busy:
        await conversations.claim(gateway, conv, new_run_id())  # type: ignore[arg-type]
    assert busy.value.run_id == holder and await store.holder(conv) == holder
    assert await conversations.active_run(gateway, conv) == holder  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["failed", "cancelled", "expired"])
async def test_a_holder_that_ended_without_a_turn_is_replaced_at_once(
    gateway: SimpleNamespace, store: ConversationStore, log: StreamLog, status: str
):
    conv = conversation()
    holder = new_run_id() if status == "expired" else await run_with_status(log, status)
    await store.claim(conv, holder, expected_holder=None, expected_length=0)
    assert await conversations.active_run(gateway, conv) is None  # type: ignore[arg-type]
    successor = new_run_id()
    await asyncio.wait_for(conversations.claim(gateway, conv, successor), 1)  # type: ignore[arg-type]
    assert await store.holder(conv) == successor


async def test_the_next_run_waits_for_a_completed_run_to_record_its_turn(
    gateway: SimpleNamespace, store: ConversationStore, log: StreamLog
):
    conv, holder = conversation(), await run_with_status(log, "completed")
    await store.claim(conv, holder, expected_holder=None, expected_length=0)
    seen: list[list[dict]] = []

    def plan(history: list[dict]) -> tuple[None, list[dict]]:
        seen.append(history)
        return None, []

    claiming = asyncio.create_task(conversations.claim(gateway, conv, "next", plan))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)  # the worker is slow to record the turn: the claim must still be waiting
    assert not claiming.done()
    await store.record_turn(conv, holder, [user("q"), {"role": "assistant", "content": "a"}])
    await asyncio.wait_for(claiming, 2)
    assert seen[-1] == [user("q"), {"role": "assistant", "content": "a"}], "the next run must see the turn"
    assert await store.holder(conv) == "next"


async def test_a_completed_holder_that_never_releases_is_taken_over_after_the_wait(
    gateway: SimpleNamespace, store: ConversationStore, log: StreamLog, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(conversations, "RELEASE_WAIT_S", 0.3)
    conv, holder = conversation(), await run_with_status(log, "completed")  # its worker died before recording
    await store.claim(conv, holder, expected_holder=None, expected_length=0)
    await asyncio.wait_for(conversations.claim(gateway, conv, "next"), 3)  # type: ignore[arg-type]
    assert await store.holder(conv) == "next"
    assert not await store.record_turn(conv, holder, [user("late")]), "a late record must not land in a later turn"
    assert await store.messages(conv) == []
