"""Shared pieces of the fault tests: a run's stored log (the truth viewers are checked against), waiting helpers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis.asyncio as aioredis

from runcast.shared.keys import events_key
from tests.support.eventsource import ResumingViewer
from tests.support.processes import Process
from tests.support.sse import Received, create_run


async def stored_log(redis_url: str, run_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, type, event) of every entry Redis holds for the run, in order."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = await client.xrange(events_key(run_id))
    finally:
        await client.aclose()
    return [(entry_id, fields["type"], json.loads(fields["event"])) for entry_id, fields in raw]


def as_log(received: list[Received]) -> list[tuple[str | None, str, dict[str, Any]]]:
    return [(r.id, r.event, r.data) for r in received]


def assert_clean_run(log: list[tuple[str, str, dict[str, Any]]], text: str) -> None:
    """The worker published the run exactly once: start, one chunk per token in order (no duplicate append), then
    one terminal `complete` whose content is the input."""
    types = [t for _, t, _ in log]
    assert types[0] == "start" and types[-1] == "complete", types[-3:]
    assert sum(t in ("complete", "error") for t in types) == 1
    chunks = [event["data"] for _, t, event in log if t == "chunk"]
    assert [c["token_count"] for c in chunks] == list(range(1, len(chunks) + 1)), "a chunk was duplicated or lost"
    assert "".join(c["delta"] for c in chunks) == text


async def assert_every_viewer_exact(
    redis_url: str, runs: list[dict[str, Any]], viewers: list[ResumingViewer], tokens: int
) -> int:
    """Every run was published once and complete (run i says `words(tokens, "r<i>-")`); every viewer received exactly
    its run's stored log. Returns the events delivered, counted."""
    delivered = 0
    for i, run in enumerate(runs):
        log = await stored_log(redis_url, run["run_id"])
        assert_clean_run(log, words(tokens, f"r{i}-"))
        for viewer in viewers:
            if viewer.run_id == run["run_id"]:
                assert as_log(viewer.received) == log
                delivered += len(viewer.received)
    return delivered


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def words(n: int, prefix: str = "w") -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


async def assert_a_new_run_streams_cleanly(http: Any, gateway_url: str, redis_url: str, tokens: int = 30) -> None:
    """After a fault: a run created now is published once and read to its end, i.e. the deployment still works."""
    text = words(tokens, "next")
    run = await create_run(http, gateway_url, "echo", text)
    await ResumingViewer([gateway_url], run["run_id"], run["token"]).run(http, timeout_s=60)
    assert_clean_run(await stored_log(redis_url, run["run_id"]), text)


def start_together(*procs: Process) -> None:
    """Start real processes side by side (each spends ~1 s importing): the suite pays for one start, not several."""
    with ThreadPoolExecutor(len(procs)) as pool:
        for future in [pool.submit(proc.start) for proc in procs]:
            future.result()
