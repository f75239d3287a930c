"""The many-runs benchmark's check of every run: read back from Redis, each run's log must be exactly what the echo
agent says for its input (start, one chunk per token in order, metadata, complete; the deltas join to the input)."""

from __future__ import annotations

import itertools
import json
from typing import Any

from bench.histogram import Histogram
from bench.loadgen import entry_int
from bench.stacks import RunStack


def input_text(tokens: int) -> str:
    return " ".join(f"w{i}" for i in range(tokens))


def check_run(entries: list[tuple[bytes, dict[bytes, bytes]]], status: bytes | None, text: str, tokens: int) -> str:
    """'' when a run's log is exactly what the echo agent says for `text`, else what is wrong."""
    types = [fields.get(b"type", b"").decode() for _, fields in entries]
    if status != b"completed":
        return f"status {status!r}"
    if types != ["start", *["chunk"] * tokens, "metadata", "complete"]:
        return f"event types {types[:3]}...{types[-2:]} ({len(types)} events)"
    ids = [entry_int(entry_id) for entry_id, _ in entries]
    if any(b <= a for a, b in itertools.pairwise(ids)):
        return "entry ids not strictly increasing"
    deltas = "".join(json.loads(fields[b"event"])["data"]["delta"] for _, fields in entries[1 : 1 + tokens])
    return "" if deltas == text else "chunk deltas do not join to the input"


def verify_runs(
    stack: RunStack, run_ids: list[str], text: str, tokens: int
) -> tuple[dict[str, Any], dict[str, str], Histogram]:
    """Every run's log from Redis: the viewers' expected (count, id checksum), the runs that are not exact, and each
    run's log length: the meta's `created_at` (the gateway created the run) to its `updated_at` after the terminal
    append (the worker sent it) — pick-up and pace in the worker, whatever the gateway's delivery did after."""
    assert stack.admin is not None
    expected: dict[str, tuple[int, int]] = {}
    wrong: dict[str, str] = {}
    logged = Histogram()
    for start in range(0, len(run_ids), 200):
        batch = run_ids[start : start + 200]
        with stack.admin.pipeline(transaction=False) as pipe:
            for run_id in batch:
                pipe.xrange(f"runcast:{{{run_id}}}:events")
                pipe.hmget(f"runcast:{{{run_id}}}:meta", "status", "created_at", "updated_at")
            replies = pipe.execute()
        for i, run_id in enumerate(batch):
            entries, (status, created_at, updated_at) = replies[2 * i], replies[2 * i + 1]
            if created_at and updated_at:
                logged.add(float(updated_at) - float(created_at))
            expected[run_id] = (len(entries), sum(entry_int(entry_id) for entry_id, _ in entries))
            problem = check_run(entries, status, text, tokens)
            if problem:
                wrong[run_id] = problem
    return expected, wrong, logged
