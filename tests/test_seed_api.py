"""The seed framework's documented API (seed-streaming-responses.md) runs on runcast unchanged except for imports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from runcast.shared.streaming import (
    ChunkType,
    StreamChunk,
    StreamConfig,
    StreamingBuffer,
    StreamingChunk,
    StreamingCollector,
    StreamingEventType,
    replay_from_redis,
)
from runcast.worker.agents import Agent
from runcast.worker.providers.base import Message, ModelDelta, TextDelta, ToolSpec, Usage
from runcast.worker.streaming import RunConfig, RunState, StreamingAgent, run_streaming
from tests.support.runs import run_job, worker_state


def test_the_docs_streaming_buffer_example_runs_unchanged(capsys: pytest.CaptureFixture[str]):
    # --- verbatim from the seed doc, "StreamingBuffer" ---
    # Create buffer to accumulate streaming content
    buffer = StreamingBuffer()

    # Add chunks as they arrive
    chunk1 = StreamingChunk(content="Hello", delta="Hello", is_complete=False)
    chunk2 = StreamingChunk(content="Hello, world", delta=", world", is_complete=True)

    buffer.add_chunk(chunk1)
    buffer.add_chunk(chunk2)

    # Get accumulated content
    print(f"Full content: {buffer.content}")
    print(f"Is complete: {buffer.is_complete}")

    # Get final message
    final_message = buffer.get_final_message()
    print(f"Final message: {final_message.content}")
    # --- end of the doc's example ---

    assert capsys.readouterr().out.splitlines() == [
        "Full content: Hello, world",
        "Is complete: True",
        "Final message: Hello, world",
    ]


# The doc's collector example uses `initial_state` and `config` from its surroundings: these are ours.
initial_state = RunState.for_input("echo", "Hello from the seed API")
config = RunConfig()


async def test_the_docs_streaming_collector_example_runs_unchanged(capsys: pytest.CaptureFixture[str]):
    # --- verbatim from the seed doc, "StreamingCollector" ---
    # Create collector
    collector = StreamingCollector()

    # Collect stream events
    async def collect_and_analyze():
        # Create stream
        stream = run_streaming(initial_state, config)

        # Collect all events
        buffer = await collector.collect_stream(stream, run_id="demo_run")  # noqa: F841 (verbatim)

        # Analyze collected events
        events = collector.get_events_for_run("demo_run")
        print(f"Collected {len(events)} events")

        # Replay stream with delay
        async for event in collector.replay_stream("demo_run", delay_ms=100):
            print(f"Replaying: {event.type} - {event.timestamp}")

    # --- end of the doc's example ---
    await collect_and_analyze()

    lines = capsys.readouterr().out.splitlines()
    events = collector.get_events_for_run("demo_run")
    assert lines[0] == f"Collected {len(events)} events"
    assert [e.type.value for e in events] == [
        "start",
        "chunk",
        "chunk",
        "chunk",
        "chunk",
        "chunk",
        "metadata",
        "complete",
    ]
    assert len(lines) == 1 + len(events) and all(line.startswith("Replaying: ") for line in lines[1:])
    assert collector.get_buffer("demo_run").content == "Hello from the seed API"


class GatedModel:
    """Streams one token, then waits for the test before streaming the rest."""

    name = "gated"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stream(
        self,
        *,
        agent_name: str,
        model: str | None,
        messages: list[Message],
        tools: list[ToolSpec],
        temperature: float | None = None,
    ) -> AsyncIterator[ModelDelta]:
        yield TextDelta("first")
        await self.release.wait()
        yield TextDelta(" second")
        yield Usage(1, 2)


async def test_run_streaming_yields_each_token_as_it_arrives_not_after_the_run():
    model = GatedModel()
    config = RunConfig({"gated": Agent("gated")}, model)
    stream = run_streaming(RunState.for_input("gated", "go"), config)
    start = await anext(stream)
    first = await asyncio.wait_for(anext(stream), 5)  # the model has not finished: it is waiting for us
    assert start.type is StreamingEventType.START
    assert first.type is StreamingEventType.CHUNK and first.data.delta == "first"
    model.release.set()
    rest = [event async for event in stream]
    assert [e.type.value for e in rest] == ["chunk", "metadata", "complete"]
    assert rest[0].data.content == "first second" and rest[1].data.total_tokens == 3


async def test_run_streaming_continues_a_conversation_from_its_history():
    state = RunState(
        messages=[Message("user", "earlier"), Message("assistant", "reply"), Message("user", "what is 6 * 7")],
        current_agent_name="demo",
    )
    events = [e async for e in run_streaming(state, RunConfig())]
    assert [e.data.result for e in events if e.type is StreamingEventType.TOOL_RESULT] == [42]
    assert {e.run_id for e in events} == {state.run_id}


async def test_streaming_agent_stream_response_yields_text_pieces_then_a_final_chunk():
    agent = StreamingAgent("demo")
    chunks = [chunk async for chunk in agent.stream_response("what is 2 ** 10")]
    text = "".join(c.content for c in chunks if c.chunk_type is ChunkType.TEXT)
    assert "1024" in text
    kinds = [c.chunk_type for c in chunks]
    assert ChunkType.TOOL_CALL in kinds and ChunkType.TOOL_RESULT in kinds
    assert chunks[-1].is_final and all(not c.is_final for c in chunks[:-1])
    assert [c.sequence_number for c in chunks] == list(range(len(chunks)))
    assert all(isinstance(c, StreamChunk) and c.metadata["run_id"] for c in chunks)


async def test_a_finished_run_replays_straight_from_its_redis_stream(real_redis_url: str):
    async with worker_state(real_redis_url) as state:
        run = await run_job(state, "demo", "what is 3 + 4")
        collector = await StreamingCollector.from_redis(state.stream_log.redis, run.run_id)
        replayed = [e async for e in replay_from_redis(state.stream_log.redis, run.run_id, delay_ms=1)]

    assert collector.get_events_for_run(run.run_id) == run.events == replayed
    buffer = collector.get_buffer(run.run_id)
    assert buffer.is_complete and "7" in buffer.content and buffer.tool_results[0].result == 7
    assert [e async for e in collector.replay_stream(run.run_id)] == run.events


def test_stream_config_keeps_the_seed_fields_and_parses_policies():
    seed = StreamConfig(chunk_size=50, delay_ms=10, enable_sentence_boundaries=True, compression_enabled=False)
    assert seed.chunk_size == 50 and not seed.is_passthrough
    assert StreamConfig.parse("passthrough").is_passthrough
    assert StreamConfig.parse("size:40") == StreamConfig(chunk_size=40)
    error = StreamChunk(content="[Error: boom]", chunk_type=ChunkType.ERROR, is_final=True)
    assert error.chunk_type is ChunkType.ERROR and error.sequence_number == 0
