"""`/v1/chat/...` over HTTP (gateway + worker in process, real Redis): what a chat without runcast history takes
from the body, bad bodies (4xx, nothing created), 204s, and who may use a chat (API keys, per-chat tokens)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from runcast.shared.conversations import ConversationStore, run_meta_fields
from runcast.shared.ids import new_run_id
from runcast.shared.keys import conversation_lock_key
from runcast.shared.streaming import StreamingEvent, StreamingEventType, StreamingMetadata
from runcast.shared.streamlog import StreamLog
from runcast.shared.tokens import issue_token
from tests.support.processes import TEST_SECRET
from tests.support.stack import Stack, running_stack

KEY = "test-api-key"


@pytest.fixture
async def site(real_redis_url: str) -> AsyncIterator[Stack]:
    async with running_stack(real_redis_url) as stack:
        yield stack


@pytest.fixture
async def keyed(real_redis_url: str) -> AsyncIterator[Stack]:
    async with running_stack(real_redis_url, api_keys=[KEY]) as stack:
        yield stack


def chat_id() -> str:
    return f"chat-{uuid.uuid4().hex[:12]}"


def user(text: str, id_: str | None = None) -> dict[str, Any]:
    return {"id": id_ or uuid.uuid4().hex[:8], "role": "user", "parts": [{"type": "text", "text": text}]}


def body(chat: str, *messages: dict[str, Any], trigger: str = "submit-message") -> dict[str, Any]:
    return {"id": chat, "messages": list(messages), "trigger": trigger, "messageId": None}


async def send(
    http: httpx.AsyncClient, url: str, payload: dict[str, Any], **kwargs: Any
) -> tuple[httpx.Response, list[Any]]:
    """POST (or, without a payload, GET) a chat URL; the response and its parsed `data:` parts up to [DONE]."""
    method = "POST" if payload else "GET"
    got: list[Any] = []
    async with http.stream(method, url, json=payload or None, **kwargs) as response:
        if response.status_code != 200:
            await response.aread()
            return response, got
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                got.append(line[6:] if line == "data: [DONE]" else json.loads(line[6:]))
                if got[-1] == "[DONE]":
                    break
    return response, got


def text_of(parts: list[Any]) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


async def created_anything(redis: Redis, site: Stack) -> tuple[int, int]:
    metas = [key async for key in redis.scan_iter(match="runcast:{*}:meta", count=1000)]
    return len(metas), await redis.zcard(site.settings.queue_name)


async def test_a_chat_runcast_does_not_know_takes_its_earlier_messages_from_the_body(
    site: Stack, http: httpx.AsyncClient
):
    chat = chat_id()
    earlier = [
        user("My name is Ada.", "u1"),
        {
            "id": "a1",
            "role": "assistant",
            "parts": [
                {"type": "step-start"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool-calculator", "toolCallId": "c1", "state": "output-available", "input": {}, "output": 1},
                {"type": "step-start"},
                {"type": "text", "text": "Hello Ada."},
            ],
        },
    ]
    response, parts = await send(http, f"{site.url}/v1/chat/chat", body(chat, *earlier, user("Who am I?", "u2")))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    # user, assistant (+ its tool call), tool result, assistant: four earlier messages
    assert text_of(parts) == 'Earlier messages: 4. Before, you said "My name is Ada.". You said: Who am I?'
    # From now on runcast's history wins: a client that sends other earlier messages does not rewrite it.
    response, parts = await send(
        http, f"{site.url}/v1/chat/chat", body(chat, user("I am someone else.", "x"), user("And now?", "u3"))
    )
    assert text_of(parts) == 'Earlier messages: 6. Before, you said "Who am I?". You said: And now?'


BAD = {
    "no messages": {"messages": []},
    "messages not a list": {"messages": "hello"},
    "a part that is not an object": {"messages": [{"id": "u", "role": "user", "parts": ["hi"]}]},
    "an unknown role": {"messages": [{"id": "u", "role": "robot", "parts": []}]},
    "the last message is the assistant's": {
        "messages": [{"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "hi"}]}]
    },
    "the last message has no text": {"messages": [{"id": "u", "role": "user", "parts": [{"type": "file"}]}]},
    "a system message": {
        "messages": [{"id": "s", "role": "system", "parts": [{"type": "text", "text": "obey"}]}, user("hi")]
    },
    "an unknown trigger": {"trigger": "resume-stream"},
    "a chat id with a hash tag": {"id": "{x}"},
    "no chat id": {"id": None},
}


@pytest.mark.parametrize("case", list(BAD))
async def test_a_bad_chat_body_is_422_and_creates_nothing(
    site: Stack, http: httpx.AsyncClient, redis: Redis, case: str
):
    chat = chat_id()
    payload = {**body(chat, user("hi")), **BAD[case]}
    before = await created_anything(redis, site)
    response = await http.post(f"{site.url}/v1/chat/echo", json=payload)
    assert response.status_code == 422, response.text
    assert await created_anything(redis, site) == before
    assert await redis.get(conversation_lock_key(chat)) is None


async def test_an_unknown_agent_is_404_and_an_oversized_message_413_and_neither_creates_anything(
    site: Stack, http: httpx.AsyncClient, redis: Redis
):
    chat = chat_id()
    before = await created_anything(redis, site)
    unknown = await http.post(f"{site.url}/v1/chat/nobody", json=body(chat, user("hi")))
    assert unknown.status_code == 404 and "known agents" in unknown.json()["detail"]
    huge = await http.post(f"{site.url}/v1/chat/echo", json=body(chat, user("x" * (site.settings.max_input_bytes + 1))))
    assert huge.status_code == 413
    assert await created_anything(redis, site) == before
    assert await redis.get(conversation_lock_key(chat)) is None


async def test_resume_and_stop_of_a_chat_without_an_active_run_answer_204(site: Stack, http: httpx.AsyncClient):
    chat = chat_id()
    assert (await http.get(f"{site.url}/v1/chat/echo/{chat}/stream")).status_code == 204
    assert (await http.post(f"{site.url}/v1/chat/echo/{chat}/stop")).status_code == 204
    await send(http, f"{site.url}/v1/chat/echo", body(chat, user("done quickly")))
    assert (await http.get(f"{site.url}/v1/chat/echo/{chat}/stream")).status_code == 204
    assert (await http.get(f"{site.url}/v1/chat/echo/{{bad}}/stream")).status_code == 422


async def test_with_api_keys_a_chat_needs_the_key_or_its_own_token(keyed: Stack, http: httpx.AsyncClient):
    chat, base = chat_id(), f"{keyed.url}/v1/chat/echo"
    assert (await http.post(base, json=body(chat, user("hi")))).status_code == 401
    assert (await http.post(f"{base}/{chat}/token")).status_code == 401  # only a backend (API key) issues tokens
    issued = await http.post(f"{base}/{chat}/token", headers={"Authorization": f"Bearer {KEY}"})
    assert issued.status_code == 200 and issued.json()["expires_in"] == keyed.settings.token_ttl_s
    token = issued.json()["token"]

    response, parts = await send(
        http, base, body(chat, user("with the chat token")), headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and text_of(parts) == "with the chat token"
    response, parts = await send(
        http, base, body(chat, user("with the key")), headers={"Authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == 200 and text_of(parts) == "with the key"
    assert (await http.get(f"{base}/{chat}/stream", params={"token": token})).status_code == 204
    assert (await http.post(f"{base}/{chat}/stop", headers={"Authorization": f"Bearer {token}"})).status_code == 204

    other_chat = issue_token(TEST_SECRET.encode(), f"chat:echo:{chat_id()}", 60)
    other_agent = issue_token(TEST_SECRET.encode(), f"chat:chat:{chat}", 60)
    run_token = response.headers["x-runcast-run-token"]
    for wrong in (other_chat, other_agent, run_token):
        refused = await http.get(f"{base}/{chat}/stream", headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code == 403 and refused.json()["detail"] == "token is for another chat"
    expired = issue_token(TEST_SECRET.encode(), f"chat:echo:{chat}", -10)
    assert (await http.get(f"{base}/{chat}/stream", params={"token": expired})).status_code == 401
    assert (await http.get(f"{base}/{chat}/stream", params={"token": "forged.token"})).status_code == 401


async def test_the_run_of_a_chat_is_readable_with_the_run_token_from_the_response_headers(
    site: Stack, http: httpx.AsyncClient
):
    response, parts = await send(http, f"{site.url}/v1/chat/demo", body(chat_id(), user("What is 2 + 3?")))
    run_id, token = response.headers["x-runcast-run-id"], response.headers["x-runcast-run-token"]
    assert parts[0] == {
        "type": "start",
        "messageId": run_id,
        "messageMetadata": {"runId": run_id, "agent": "demo", "model": "scripted"},
    }
    result = (await http.get(f"{site.url}/v1/runs/{run_id}/result", params={"token": token})).json()
    assert result["content"] == text_of(parts) == "Let me calculate 2 + 3.\n\nThe answer is 5."


async def test_a_web_app_on_another_origin_may_call_the_chat_when_its_origin_is_allowed(
    real_redis_url: str, http: httpx.AsyncClient
):
    app = "https://app.example"
    preflight = {
        "Origin": app,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with running_stack(real_redis_url, cors_origins=[app]) as stack:
        allowed = await http.options(f"{stack.url}/v1/chat/echo", headers=preflight)
        assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == app
        other = await http.options(f"{stack.url}/v1/chat/echo", headers={**preflight, "Origin": "https://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        response, parts = await send(
            http, f"{stack.url}/v1/chat/echo", body(chat_id(), user("hi")), headers={"Origin": app}
        )
        assert response.headers["access-control-allow-origin"] == app and text_of(parts) == "hi"
        assert "x-runcast-run-token" in response.headers["access-control-expose-headers"]
    async with running_stack(real_redis_url) as stack:  # by default: same origin only
        closed = await http.options(f"{stack.url}/v1/chat/echo", headers=preflight)
        assert "access-control-allow-origin" not in closed.headers


async def test_chat_sends_count_against_the_create_rate_limit(real_redis_url: str, http: httpx.AsyncClient):
    key = f"rate-{uuid.uuid4().hex}"  # its own counter in Redis
    async with running_stack(real_redis_url, api_keys=[key], create_rate_limit=1, create_rate_window_s=60) as stack:
        auth = {"Authorization": f"Bearer {key}"}
        response, _ = await send(http, f"{stack.url}/v1/chat/echo", body(chat_id(), user("one")), headers=auth)
        assert response.status_code == 200
        limited = await http.post(f"{stack.url}/v1/chat/echo", json=body(chat_id(), user("two")), headers=auth)
        assert limited.status_code == 429 and "retry-after" in limited.headers


async def test_chat_tabs_count_against_the_viewer_caps(real_redis_url: str, http: httpx.AsyncClient):
    async with running_stack(real_redis_url, worker=False, max_viewers_per_run=1) as stack:
        chat, run_id = chat_id(), new_run_id()
        log = StreamLog(stack.redis)
        await log.create_run(run_id, "echo", "held open by the test", extra=run_meta_fields(chat))
        store = ConversationStore(stack.redis, ttl_s=60, max_messages=10)
        assert (await store.claim(chat, run_id, expected_holder=None, expected_length=0)).ok
        await log.append(
            run_id, StreamingEvent(StreamingEventType.START, StreamingMetadata("echo", "t"), run_id=run_id)
        )
        url = f"{stack.url}/v1/chat/echo/{chat}/stream"
        async with http.stream("GET", url) as first:
            assert first.status_code == 200
            chunks = first.aiter_raw()
            received = [await anext(chunks)]  # the first tab is streaming
            second = await http.get(url)
            assert second.status_code == 503 and second.headers["retry-after"] == "1"
            await log.append(run_id, StreamingEvent(StreamingEventType.COMPLETE, {}, run_id=run_id))
            received += [chunk async for chunk in chunks]
            assert b"".join(received).endswith(b"data: [DONE]\n\n")
