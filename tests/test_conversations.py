"""Conversations in runcast's own API (`POST /v1/runs` with `messages` or `conversation_id`): the agent sees the
history, a conversation remembers each completed turn, has one active run at a time, is never left locked by a run
that ended otherwise, and bad or oversized bodies are refused with nothing created. Gateway + worker on a real Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from runcast import AsyncClient, ConflictError
from runcast.shared.keys import AGENTS_KEY, conversation_lock_key
from tests.support.processes import GatewayProcess, WorkerProcess, start_all
from tests.support.sse import read_sse
from tests.support.stack import Stack, running_stack

LIMITS = {"max_history_messages": 4, "max_history_bytes": 600}


@pytest.fixture
async def site(real_redis_url: str) -> AsyncIterator[Stack]:
    async with running_stack(real_redis_url, **LIMITS) as stack:
        yield stack


def new_conversation() -> str:
    return f"conv-{uuid.uuid4().hex[:12]}"


async def create(http: httpx.AsyncClient, site: Stack, **body: Any) -> httpx.Response:
    return await http.post(f"{site.url}/v1/runs", json={"agent": "chat", **body})


async def answer(http: httpx.AsyncClient, site: Stack, run: dict[str, Any]) -> dict[str, Any]:
    """Follow the run to its end; its result."""
    await read_sse(http, site.url, run["run_id"], run["token"])
    return (await http.get(f"{site.url}/v1/runs/{run['run_id']}/result", params={"token": run["token"]})).json()


async def created_anything(redis: Redis, site: Stack) -> tuple[int, int]:
    """(run meta hashes, queued jobs): what a refused request must not change."""
    metas = [key async for key in redis.scan_iter(match="runcast:{*}:meta", count=1000)]
    return len(metas), await redis.zcard(site.settings.queue_name)


async def test_a_run_with_prior_messages_shows_the_agent_those_messages(site: Stack, http: httpx.AsyncClient):
    history = [
        {"role": "user", "content": "What is 2 + 2?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "4", "tool_call_id": "c1", "name": "calculator"},
        {"role": "assistant", "content": "It is 4."},
    ]
    response = await create(http, site, input="And now?", messages=history)
    assert response.status_code == 202, response.text
    result = await answer(http, site, response.json())
    assert result["content"] == 'Earlier messages: 4. Before, you said "What is 2 + 2?". You said: And now?'


async def test_a_conversation_remembers_each_completed_turn(site: Stack, http: httpx.AsyncClient):
    conversation = new_conversation()
    first = (await create(http, site, input="My name is Ada.", conversation_id=conversation)).json()
    assert (await answer(http, site, first))["content"] == "Earlier messages: 0. You said: My name is Ada."
    second = (await create(http, site, input="What is my name?", conversation_id=conversation)).json()
    expected = 'Earlier messages: 2. Before, you said "My name is Ada.". You said: What is my name?'
    assert (await answer(http, site, second))["content"] == expected

    status = (await http.get(second["status_url"], params={"token": second["token"]})).json()
    assert status["conversation_id"] == conversation
    stored = (await http.get(f"{site.url}/v1/conversations/{conversation}")).json()
    assert stored["active_run_id"] is None
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", "My name is Ada."),
        ("assistant", "Earlier messages: 0. You said: My name is Ada."),
        ("user", "What is my name?"),
        ("assistant", expected),
    ]
    assert stored["messages"][1]["id"] == first["run_id"]


async def test_a_conversation_keeps_only_its_newest_messages(site: Stack, http: httpx.AsyncClient, redis: Redis):
    conversation = new_conversation()
    for n in range(3):  # 6 messages, the limit is 4
        run = (await create(http, site, input=f"turn {n}", conversation_id=conversation)).json()
        await answer(http, site, run)
    stored = (await http.get(f"{site.url}/v1/conversations/{conversation}")).json()["messages"]
    assert [m["content"] for m in stored if m["role"] == "user"] == ["turn 1", "turn 2"]


async def test_a_second_run_while_one_is_active_gets_409_with_its_id_and_creates_nothing(
    site: Stack, http: httpx.AsyncClient, redis: Redis
):
    conversation = new_conversation()
    first = (await create(http, site, input=" ".join(["word"] * 40), conversation_id=conversation)).json()
    before = await created_anything(redis, site)
    busy = await create(http, site, input="me too", conversation_id=conversation)
    assert busy.status_code == 409
    stored = (await http.get(f"{site.url}/v1/conversations/{conversation}")).json()
    assert stored["active_run_id"] == first["run_id"] and stored["messages"] == []
    assert stored["pending_message"] == {"role": "user", "content": " ".join(["word"] * 40)}
    assert busy.json()["active_run_id"] == first["run_id"] and first["run_id"] in busy.json()["detail"]
    assert await created_anything(redis, site) == before
    await answer(http, site, first)
    assert (await create(http, site, input="now", conversation_id=conversation)).status_code == 202


async def test_a_cancelled_run_does_not_lock_its_conversation_nor_add_a_turn(site: Stack, http: httpx.AsyncClient):
    conversation = new_conversation()
    run = (await create(http, site, input=" ".join(["word"] * 200), conversation_id=conversation)).json()
    cancelled = await http.post(f"{site.url}/v1/runs/{run['run_id']}/cancel", params={"token": run["token"]})
    assert cancelled.status_code == 202
    after = await create(http, site, input="Are you there?", conversation_id=conversation)
    assert after.status_code == 202, after.text  # at once: the cancelled run no longer holds it
    assert (await answer(http, site, after.json()))["content"] == "Earlier messages: 0. You said: Are you there?"


async def test_a_failed_run_does_not_lock_its_conversation(site: Stack, http: httpx.AsyncClient, redis: Redis):
    await redis.hset(AGENTS_KEY, "ghost", "listed, but no worker has it: its runs fail")
    conversation = new_conversation()
    try:
        run = (
            await http.post(
                f"{site.url}/v1/runs", json={"agent": "ghost", "input": "hi", "conversation_id": conversation}
            )
        ).json()
        assert (await answer(http, site, run))["error"]["error_type"] == "unknown_agent"
    finally:
        await redis.hdel(AGENTS_KEY, "ghost")
    # This path of the worker never releases (it stops before the agent): the run's status does. The next run
    # goes through at once, and sees no turn of the failed one.
    after = await create(http, site, input="hello", conversation_id=conversation)
    assert after.status_code == 202, after.text
    assert await redis.get(conversation_lock_key(conversation)) == after.json()["run_id"]
    assert (await answer(http, site, after.json()))["content"] == "Earlier messages: 0. You said: hello"


TOOL_CALL = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": "{}"}}
BAD_BODIES = {
    "messages and conversation_id": {"input": "x", "messages": [], "conversation_id": "c"},
    "a system message": {"input": "x", "messages": [{"role": "system", "content": "obey"}]},
    "a tool result without its call id": {"input": "x", "messages": [{"role": "tool", "content": "4"}]},
    "a tool result for no earlier call": {
        "input": "x",
        "messages": [{"role": "tool", "content": "4", "tool_call_id": "nope"}],
    },
    "tool calls on a user message": {"input": "x", "messages": [{"role": "user", "tool_calls": [TOOL_CALL]}]},
    "an unknown field in a message": {"input": "x", "messages": [{"role": "user", "content": "a", "extra": 1}]},
    "content that is not text": {"input": "x", "messages": [{"role": "user", "content": 42}]},
    "a conversation id with a hash tag": {"input": "x", "conversation_id": "{other}"},
    "an empty conversation id": {"input": "x", "conversation_id": ""},
    "a conversation id that is too long": {"input": "x", "conversation_id": "c" * 129},
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_a_bad_history_or_conversation_is_422_and_creates_nothing(
    site: Stack, http: httpx.AsyncClient, redis: Redis, case: str
):
    before = await created_anything(redis, site)
    response = await create(http, site, **BAD_BODIES[case])
    assert response.status_code == 422, response.text
    assert await created_anything(redis, site) == before


@pytest.mark.parametrize(
    ("case", "messages"),
    [
        ("too many messages", [{"role": "user", "content": "hi"}] * (LIMITS["max_history_messages"] + 1)),
        ("too many bytes", [{"role": "user", "content": "x" * LIMITS["max_history_bytes"]}]),
    ],
)
async def test_history_past_its_limits_is_413_and_creates_nothing(
    site: Stack, http: httpx.AsyncClient, redis: Redis, case: str, messages: list[dict[str, str]]
):
    conversation_free = new_conversation()
    before = await created_anything(redis, site)
    response = await create(http, site, input="x", messages=messages)
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]
    assert await created_anything(redis, site) == before
    assert await redis.get(conversation_lock_key(conversation_free)) is None


async def test_history_at_its_limits_is_accepted(site: Stack, http: httpx.AsyncClient):
    messages = [{"role": "user", "content": "hi"}] * LIMITS["max_history_messages"]
    response = await create(http, site, input="x", messages=messages)
    assert response.status_code == 202, response.text
    assert (await answer(http, site, response.json()))["content"].startswith("Earlier messages: 4.")


def _turn(base: str, conversation: str, text: str) -> str:
    """One run of the conversation through the gateway at `base`, followed to its end; its final text."""
    run = httpx.post(f"{base}/v1/runs", json={"agent": "chat", "input": text, "conversation_id": conversation})
    assert run.status_code == 202, run.text
    run_id, token = run.json()["run_id"], run.json()["token"]
    with httpx.stream("GET", f"{base}/v1/runs/{run_id}/events", params={"token": token}, timeout=30) as events:
        for line in events.iter_lines():
            if line in ("event: complete", "event: error"):
                break
    return httpx.get(f"{base}/v1/runs/{run_id}/result", params={"token": token}).json()["content"]


def test_a_conversations_history_survives_a_gateway_restart(module_redis_url: str):
    """The history lives in Redis, not in a gateway: a new gateway process continues the conversation."""
    conversation = new_conversation()
    worker = WorkerProcess(module_redis_url)
    first = GatewayProcess(module_redis_url)
    start_all(worker, first)
    try:
        assert _turn(first.url, conversation, "My name is Ada.") == "Earlier messages: 0. You said: My name is Ada."
        first.stop()
        assert not first.alive()
        second = GatewayProcess(module_redis_url).start()
        try:
            answer = _turn(second.url, conversation, "What is my name?")
            assert answer == 'Earlier messages: 2. Before, you said "My name is Ada.". You said: What is my name?'
            stored = httpx.get(f"{second.url}/v1/conversations/{conversation}").json()
            assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [
                "My name is Ada.",
                "What is my name?",
            ]
        finally:
            second.stop()
    finally:
        first.stop()
        worker.stop()


async def test_the_python_client_continues_a_conversation_and_names_the_active_run(site: Stack):
    conversation = new_conversation()
    async with AsyncClient(site.url) as client:
        first = await client.create_run("chat", " ".join(["word"] * 30), conversation_id=conversation)
        with pytest.raises(ConflictError) as busy:
            await client.create_run("chat", "too soon", conversation_id=conversation)
        assert busy.value.status_code == 409 and busy.value.active_run_id == first.run_id
        async for _ in client.stream(first.run_id, first.token):
            pass
        second = await client.create_run("chat", "and now?", conversation_id=conversation)
        async for _ in client.stream(second.run_id, second.token):
            pass
        assert (await client.result(second.run_id, second.token))["content"].startswith("Earlier messages: 2.")
        stored = await client.conversation(conversation)
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
        alone = await client.create_run("chat", "hi", messages=[{"role": "user", "content": "earlier"}])
        async for _ in client.stream(alone.run_id, alone.token):
            pass
        assert (await client.result(alone.run_id, alone.token))["content"].startswith("Earlier messages: 1.")
