"""Chunking policies: coalesced deltas become fewer CHUNK entries (fewer XADDs) that join to exactly the same text."""

from __future__ import annotations

import pytest

from runcast.shared.streaming import StreamConfig, StreamingChunk, StreamingEvent, StreamingEventType
from runcast.worker.agents import Agent
from runcast.worker.providers.scripted import ScriptedProvider, split_tokens
from runcast.worker.publisher import Coalescer
from tests.support.runs import run_job, worker_state

TEXT = (
    "Streaming is great. It keeps viewers engaged while the model thinks! "
    "Does it cost more writes? Not with a chunking policy.\nA new line ends a sentence too\n"
    "and the tail has no full stop"
)


def registry_with(config: StreamConfig) -> dict[str, Agent]:
    return {"echo": Agent("echo", chunking=config)}


async def test_sentence_policy_publishes_fewer_events_than_tokens_with_identical_content(real_redis_url: str):
    config = StreamConfig.parse("sentence", max_delay_ms=60_000)  # only boundaries flush here, not the clock
    async with worker_state(real_redis_url, registry=registry_with(config)) as state:
        run = await run_job(state, "echo", TEXT)

    chunks = run.of_type("chunk")
    tokens = split_tokens(TEXT)
    assert len(run.entries) == len(chunks) + 3  # one stream entry (one XADD) per published event
    assert len(chunks) < len(tokens) / 3
    assert "".join(c["delta"] for c in chunks) == TEXT == chunks[-1]["content"]
    assert [c["delta"] for c in chunks] == [
        "Streaming",  # the first token goes out unbatched
        " is great.",
        " It keeps viewers engaged while the model thinks!",
        " Does it cost more writes?",
        " Not with a chunking policy.",
        "\nA new line ends a sentence too",  # a line break starts a new sentence
        "\nand the tail has no full stop",  # flushed before METADATA
    ]
    assert [c["token_count"] for c in chunks][-1] == len(tokens)
    assert run.types[-2:] == ["metadata", "complete"]


async def test_size_policy_coalesces_to_at_least_n_characters(real_redis_url: str):
    config = StreamConfig.parse("size:24", max_delay_ms=60_000)
    async with worker_state(real_redis_url, registry=registry_with(config)) as state:
        run = await run_job(state, "echo", TEXT)
    deltas = [c["delta"] for c in run.of_type("chunk")]
    assert "".join(deltas) == TEXT
    assert all(len(d) >= 24 for d in deltas[1:-1]) and len(deltas) < len(split_tokens(TEXT)) / 2


async def test_passthrough_publishes_one_chunk_per_model_delta(real_redis_url: str):
    async with worker_state(real_redis_url, registry=registry_with(StreamConfig.parse("passthrough"))) as state:
        run = await run_job(state, "echo", TEXT)
    assert [c["delta"] for c in run.of_type("chunk")] == split_tokens(TEXT)


async def test_a_slow_model_still_streams_under_a_coalescing_policy(real_redis_url: str):
    """Deltas 150 ms apart with a 40 ms max delay: each is published on its own, long before the run ends."""
    config = StreamConfig.parse("size:1000", max_delay_ms=40)
    async with worker_state(
        real_redis_url, registry=registry_with(config), provider=ScriptedProvider(delay_ms=150)
    ) as state:
        run = await run_job(state, "echo", "one two three four")
    chunks = [e for e in run.events if e.type is StreamingEventType.CHUNK]
    assert [c.data.delta for c in chunks] == ["one", " two", " three", " four"]


def chunk(content: str, delta: str, n: int) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(content, delta, False, n), float(n))


def test_coalescer_flushes_pending_text_when_its_max_delay_passes_and_before_other_events():
    now = [0.0]
    coalescer = Coalescer(StreamConfig.parse("sentence", max_delay_ms=100), clock=lambda: now[0])
    assert [e.data.delta for e in coalescer.add(chunk("a", "a", 1))] == ["a"]  # first delta: at once
    assert coalescer.add(chunk("a b", " b", 2)) == []
    assert coalescer.add(chunk("a b c", " c", 3)) == []
    now[0] = 0.099
    assert coalescer.due() == []
    now[0] = 0.1
    [merged] = coalescer.due()
    assert (merged.data.content, merged.data.delta, merged.data.token_count, merged.timestamp) == (
        "a b c",
        " b c",
        3,
        2.0,
    )
    assert coalescer.add(chunk("a b c d", " d", 4)) == []
    tool = StreamingEvent(StreamingEventType.TOOL_CALL, {"tool_name": "x"})
    out = coalescer.add(tool)
    assert [e.type for e in out] == [StreamingEventType.CHUNK, StreamingEventType.TOOL_CALL]
    assert out[0].data.delta == " d" and coalescer.deadline is None
    assert [e.data.delta for e in coalescer.add(chunk("a b c d e", " e", 5))] == [" e"]  # fresh after an event


@pytest.mark.parametrize("spec", ["", "size:0", "size:-1", "size:x", "sentences", "passthrough:2"])
def test_bad_chunking_specs_are_refused(spec: str):
    with pytest.raises(ValueError, match="chunking must be"):
        StreamConfig.parse(spec)


def test_chunking_settings_are_validated_at_startup():
    from pydantic import ValidationError

    from runcast.shared.settings import Settings

    assert Settings(chunking="size:32", chunk_max_delay_ms=50).stream_config() == StreamConfig(32, max_delay_ms=50)
    with pytest.raises(ValidationError):
        Settings(chunking="words")
