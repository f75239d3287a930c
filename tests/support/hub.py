"""Helpers for the fan-out hub's tests: publish a scripted run straight into Redis, collect what a feed yields,
and count Redis stream reads (the hub's own metric and, independently, the server's INFO commandstats)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from prometheus_client import REGISTRY
from redis.asyncio import Redis

from runcast.shared.ids import new_run_id
from runcast.shared.streaming import StreamingChunk, StreamingEvent, StreamingEventType
from runcast.shared.streamlog import Entry, Reset, StreamLog

STREAM_READ_COMMANDS = ("xread", "xrange", "xrevrange")


RETRY_FIELD = b"retry: 1000\n"
"""The SSE `retry:` field the gateway prefixes to a stream's first event frame (never a data-less frame of its own)."""


async def new_run(log: StreamLog) -> str:
    run_id = new_run_id()
    await log.create_run(run_id, "echo", "scripted by the test")
    return run_id


def chunk(run_id: str, i: int, padding: int = 0) -> StreamingEvent:
    delta = f" w{i}" + "x" * padding
    return StreamingEvent(StreamingEventType.CHUNK, StreamingChunk(content="", delta=delta), run_id=run_id)


def complete(run_id: str) -> StreamingEvent:
    return StreamingEvent(StreamingEventType.COMPLETE, {"content": "done"}, run_id=run_id)


async def publish(
    log: StreamLog, run_id: str, count: int, *, pause_s: float = 0.0, end: bool = True, padding: int = 0
) -> list[str]:
    """Append `count` chunks (and a COMPLETE when `end`), one XADD each; the ids in order."""
    ids = []
    for i in range(count):
        ids.append(await log.append(run_id, chunk(run_id, i, padding)))
        if pause_s:
            await asyncio.sleep(pause_s)
    if end:
        ids.append(await log.append(run_id, complete(run_id)))
    return ids


async def collect(batches: AsyncIterator[list[Entry] | Reset]) -> tuple[list[Reset], list[Entry]]:
    resets: list[Reset] = []
    entries: list[Entry] = []
    async for batch in batches:
        if isinstance(batch, Reset):
            assert not entries, "a Reset may only come before the entries it explains"
            resets.append(batch)
        else:
            assert batch, "the feed never yields an empty batch"
            entries.extend(batch)
    return resets, entries


def hub_metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def hub_stream_reads() -> float:
    return sum(hub_metric("runcast_hub_stream_reads_total", command=c) for c in STREAM_READ_COMMANDS)


async def server_stream_reads(redis: Redis) -> int:
    """XREAD + XRANGE + XREVRANGE calls the server has executed (INFO commandstats), for an independent count."""
    stats = await redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in STREAM_READ_COMMANDS)


async def eventually(predicate: Callable[[], object], within_s: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text from a gateway's /metrics as {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
