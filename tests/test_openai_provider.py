"""The `openai` provider against a local, scripted OpenAI-compatible streaming server (real Redis stream)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from runcast.shared.streaming import StreamConfig
from runcast.worker.agents import Agent, ModelSettings, calculator
from runcast.worker.providers.openai import OpenAIProvider
from tests.support import fake_openai as fake
from tests.support.runs import finished, run_job, start_job, wait_for_entry, worker_state
from tests.support.sse import create_run, read_sse
from tests.support.stack import running_stack

REGISTRY = {
    "assistant": Agent("assistant", instructions="Be brief.", model_settings=ModelSettings(temperature=0.2)),
    "mathematician": Agent("mathematician", instructions="Use the calculator.", tools=(calculator,)),
}


@pytest.fixture
async def server() -> AsyncIterator[fake.FakeOpenAI]:
    async with fake.FakeOpenAI() as running:
        yield running


def provider_for(server: fake.FakeOpenAI, **options: float) -> OpenAIProvider:
    return OpenAIProvider(server.base_url, "sk-test", "fake-model", backoff_s=0.01, **options)  # type: ignore[arg-type]


async def test_text_deltas_become_chunks_as_they_arrive(real_redis_url: str, server: fake.FakeOpenAI):
    last_delta_may_go = asyncio.Event()
    server.enqueue(
        fake.text("Hel"), fake.text("lo"), fake.Gate(last_delta_may_go), fake.text(" world"), *fake.answer()[1:]
    )
    provider = provider_for(server)
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider) as state:
        run_id, job = await start_job(state, "assistant", "greet me")
        first = await wait_for_entry(state, run_id, "chunk")
        assert server.sent_texts == ["Hel", "lo"], "the first CHUNK is in Redis before the server sent its last delta"
        assert '"delta":"Hel"' in first.event
        last_delta_may_go.set()
        run = await finished(state, run_id, job)
    await provider.aclose()

    assert run.types == ["start", "chunk", "chunk", "chunk", "metadata", "complete"]
    assert [c["delta"] for c in run.of_type("chunk")] == ["Hel", "lo", " world"]
    assert run.of_type("complete")[0]["content"] == "Hello world"
    metadata = run.of_type("metadata")[0]
    assert metadata["model_name"] == "fake-model" and metadata["total_tokens"] == 10
    [request] = server.requests
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert request["model"] == "fake-model" and request["temperature"] == 0.2
    assert request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "greet me"},
    ]


async def test_streamed_tool_call_arguments_are_assembled_into_one_tool_call(
    real_redis_url: str, server: fake.FakeOpenAI
):
    server.enqueue(
        fake.tool_piece(0, "", call_id="call_abc", name="calculator"),
        fake.tool_piece(0, '{"expr'),
        fake.tool_piece(0, 'ession": "6'),
        fake.tool_piece(0, ' * 7"}'),
        fake.finish("tool_calls"),
        fake.Done(),
    )
    server.enqueue(*fake.answer("It is ", "42."))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server)) as state:
        run = await run_job(state, "mathematician", "six times seven?")

    assert run.types == ["start", "tool_call", "tool_result", "chunk", "chunk", "metadata", "complete"]
    [call] = run.of_type("tool_call")
    assert call == {
        "tool_name": "calculator",
        "arguments": {"expression": "6 * 7"},
        "call_id": "call_abc",
        "status": "started",
    }
    assert run.of_type("tool_result")[0]["result"] == 42
    first, second = server.requests
    assert first["tools"][0]["function"]["name"] == "calculator"
    assert first["tools"][0]["function"]["parameters"]["properties"]["expression"]["type"] == "string"
    assistant, tool_message = second["messages"][-2:]
    assert assistant["tool_calls"] == [
        {
            "id": "call_abc",
            "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "6 * 7"}'},
        }
    ]
    assert tool_message == {"role": "tool", "content": "42", "tool_call_id": "call_abc"}
    assert run.meta["status"] == "completed"


@pytest.mark.parametrize(
    "failure",
    [fake.error_chunk("the model fell over"), fake.Drop()],
    ids=["error-chunk", "dropped-connection"],
)
async def test_an_error_mid_stream_fails_the_run_and_is_never_retried(
    real_redis_url: str, server: fake.FakeOpenAI, failure: fake.Step
):
    server.enqueue(fake.text("Partial"), fake.text(" answer"), failure)
    server.enqueue(*fake.answer("a retry would stream this twice"))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server)) as state:
        run = await run_job(state, "assistant", "hi")

    assert run.types == ["start", "chunk", "chunk", "error"]
    error = run.of_type("error")[0]
    assert error["error_type"] == "model_error"
    if isinstance(failure, fake.Chunk):
        assert "the model fell over" in error["detail"]
    assert run.meta["status"] == "failed"
    assert len(server.requests) == 1, "no retry once a token has been streamed"


async def test_429_before_the_first_token_is_retried_then_streams(real_redis_url: str, server: fake.FakeOpenAI):
    server.enqueue(fake.Status(429, {"Retry-After": "0"}))
    server.enqueue(fake.Status(503))
    server.enqueue(*fake.answer("ok"))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server)) as state:
        run = await run_job(state, "assistant", "hi")
    assert run.types == ["start", "chunk", "metadata", "complete"]
    assert len(server.requests) == 3


async def test_retries_are_bounded_and_end_in_model_error(real_redis_url: str, server: fake.FakeOpenAI):
    for _ in range(3):
        server.enqueue(fake.Status(500, message="overloaded"))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server, max_retries=2)) as state:
        run = await run_job(state, "assistant", "hi")
    assert run.types == ["start", "error"]
    error = run.of_type("error")[0]
    assert error["error_type"] == "model_error" and "HTTP 500" in error["detail"] and "overloaded" in error["detail"]
    assert len(server.requests) == 3


async def test_a_client_error_is_not_retried(real_redis_url: str, server: fake.FakeOpenAI):
    server.enqueue(fake.Status(401, message="bad api key"))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server)) as state:
        run = await run_job(state, "assistant", "hi")
    assert run.of_type("error")[0]["error_type"] == "model_error" and len(server.requests) == 1


async def test_a_server_without_stream_options_is_asked_again_without_them(
    real_redis_url: str, server: fake.FakeOpenAI
):
    server.enqueue(fake.Status(400, message="Unrecognized request argument supplied: stream_options"))
    server.enqueue(*fake.answer("fine"))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server)) as state:
        run = await run_job(state, "assistant", "hi")
    assert run.types[-1] == "complete"
    assert "stream_options" in server.requests[0] and "stream_options" not in server.requests[1]


async def test_a_slow_stream_is_published_delta_by_delta_under_a_coalescing_policy(
    real_redis_url: str, server: fake.FakeOpenAI
):
    server.enqueue(
        fake.text("Slow"), fake.Sleep(0.2), fake.text(" but"), fake.Sleep(0.2), fake.text(" steady"), *fake.answer()[1:]
    )
    slow_ok = StreamConfig.parse("size:500", max_delay_ms=50)
    registry = {"assistant": Agent("assistant", chunking=slow_ok)}
    async with worker_state(real_redis_url, registry=registry, provider=provider_for(server)) as state:
        run = await run_job(state, "assistant", "hi")
    assert [c["delta"] for c in run.of_type("chunk")] == ["Slow", " but", " steady"]


async def test_a_stream_cut_before_the_first_token_is_retried(real_redis_url: str, server: fake.FakeOpenAI):
    server.enqueue(fake.Drop())
    server.enqueue(*fake.answer("second try"))
    async with worker_state(real_redis_url, registry=REGISTRY, provider=provider_for(server)) as state:
        run = await run_job(state, "assistant", "hi")
    assert run.of_type("complete")[0]["content"] == "second try" and len(server.requests) == 2


async def test_runcast_model_provider_openai_drives_runs_end_to_end(real_redis_url: str, server: fake.FakeOpenAI):
    """RUNCAST_MODEL_PROVIDER=openai + base URL/key/model settings: a run over real HTTP streams the fake's text."""
    server.enqueue(*fake.answer("Hi", " there"))
    settings = {"model_provider": "openai", "openai_base_url": server.base_url, "openai_api_key": "sk-e2e"}
    settings["queue_name"] = f"runcast:test:{uuid.uuid4().hex}"  # no other test's leftover run reaches this worker
    async with running_stack(real_redis_url, model="fake-e2e", **settings) as stack, httpx.AsyncClient() as http:
        run = await create_run(http, stack.url, "echo", "hello")
        events = await read_sse(http, stack.url, run["run_id"], run["token"])
    assert [e.event for e in events] == ["start", "chunk", "chunk", "metadata", "complete"]
    assert events[-1].data["data"]["content"] == "Hi there"
    assert server.authorizations == ["Bearer sk-e2e"] and server.requests[0]["model"] == "fake-e2e"
