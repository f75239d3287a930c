"""The scripted model behind every framework adapter's tests: one plan, whatever framework's fake model speaks it.

A run's prompt carries its script (`prompt(...)`): the first agent calls the `lookup_order` tool, then hands off
to the second agent, which streams `DELTAS` (100 pieces), `pause_ms` before each. With `gate`, the model
stops after the first delta until the test opens the gate (`open_gate`): what viewers see before that was
published while the model was still producing, i.e. token by token, not sliced after the run. With `fail`, the
model raises `ScriptedFailure` carrying the marker. Every fake model (a jaf provider, a PydanticAI FunctionModel,
an OpenAI-compatible fake server, a LangGraph chat model) asks `next_step` what to do and streams `text_deltas`.

The gate and the "model stopped" record live in Redis (`RUNCAST_TEST_MODEL_REDIS_URL`, set for the worker by the
harness) because the model runs in a real worker process; without it (in-process tests) a stop is recorded in
`STOPPED_LOCALLY`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import redis
import redis.asyncio

DELTAS = ["Your"] + [f" w{i}" for i in range(1, 100)]
"""What the last agent streams, one model delta each (100)."""
FINAL_OUTPUT = "".join(DELTAS)
FIRST_AGENT = "triage"
SECOND_AGENT = "support"
TOOL_NAME = "lookup_order"
TOOL_ARGS = {"order_id": "A-42"}
TOOL_OUTPUT = "order A-42: shipped"
HANDOFF_REASON = "order questions go to support"
USAGE = {"prompt_tokens": 12, "completion_tokens": 100, "total_tokens": 112}

MODEL_REDIS_ENV = "RUNCAST_TEST_MODEL_REDIS_URL"
"""Where a model in a worker process finds its gate and records its stop (the harness sets it for the worker)."""
GATE_TIMEOUT_S = 60.0
_KEY = "runcast-test:model"
_FIELD = re.compile(r"#(gate|pause_ms|fail)=(\S+)")
STOPPED_LOCALLY: dict[str, dict] = {}
"""Runs whose model stream was cancelled or closed before its end, when no Redis is configured (in-process)."""


class ScriptedFailure(RuntimeError):
    """The failure a `#fail=` script asks for (the framework's own error path must carry its message)."""


@dataclass(frozen=True)
class Script:
    gate: str | None = None
    pause_ms: int = 0
    fail: str | None = None

    @classmethod
    def parse(cls, prompt_text: str) -> Script:
        fields = dict(_FIELD.findall(prompt_text))
        return cls(fields.get("gate"), int(fields.get("pause_ms", 0)), fields.get("fail"))

    @property
    def key(self) -> str:
        return self.gate or self.fail or "ungated"


def prompt(*, gate: str | None = None, pause_ms: int = 0, fail: str | None = None) -> str:
    """A user message that carries its script."""
    parts = ["Where is my order A-42?"]
    parts += [f"#gate={gate}"] if gate else []
    parts += [f"#pause_ms={pause_ms}"] if pause_ms else []
    parts += [f"#fail={fail}"] if fail else []
    return " ".join(parts)


def next_step(agent_name: str, tool_results: int, *, handoffs: bool = True) -> Literal["tool", "handoff", "text"]:
    """What the model does now: the first agent looks the order up, then hands off; the other one answers.
    Without handoffs (a framework that has none) the first agent answers itself after the tool."""
    if agent_name == FIRST_AGENT and tool_results == 0:
        return "tool"
    if agent_name == FIRST_AGENT and handoffs:
        return "handoff"
    return "text"


def fail_if_asked(script: Script) -> None:
    if script.fail:
        raise ScriptedFailure(f"the scripted model failed on purpose ({script.fail})")


def gate_key(gate: str) -> str:
    return f"{_KEY}:gate:{gate}"


def stopped_key(key: str) -> str:
    return f"{_KEY}:stopped:{key}"


async def open_gate(client: redis.asyncio.Redis, gate: str) -> None:
    await client.rpush(gate_key(gate), "open")
    await client.expire(gate_key(gate), 300)


async def model_stopped(client: redis.asyncio.Redis, key: str) -> dict | None:
    """How the model's stream was stopped early (`{"at": epoch s, "delivered": n}`), or None."""
    raw = await client.get(stopped_key(key))
    return json.loads(raw) if raw else None


async def text_deltas(script: Script, redis_url: str | None = None) -> AsyncIterator[str]:
    """`DELTAS` as the model produces them, `pause_ms` before each; with a gate, the model waits there after the
    first delta (before the second one's pause).

    Stopped before the end (the task cancelled, or the stream closed by the framework) it records when and after
    how many deltas, so a test can prove the framework's run really stopped. The gate and the record use Redis at
    `redis_url`, else RUNCAST_TEST_MODEL_REDIS_URL (a fake model server started by the test passes the test's URL).
    """
    redis_url = redis_url or os.environ.get(MODEL_REDIS_ENV)
    delivered = 0
    try:
        for delta in DELTAS:
            if delivered == 1 and script.gate:
                await _wait_at_gate(script.gate, redis_url)
            if script.pause_ms:
                await asyncio.sleep(script.pause_ms / 1000)
            yield delta
            delivered += 1
    except (asyncio.CancelledError, GeneratorExit):
        _record_stop(script.key, delivered, redis_url)
        raise


async def _wait_at_gate(gate: str, redis_url: str | None) -> None:
    if redis_url is None:
        raise RuntimeError(f"a gated script needs Redis: set {MODEL_REDIS_ENV} or pass redis_url")
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        if await client.blpop([gate_key(gate)], timeout=GATE_TIMEOUT_S) is None:
            raise TimeoutError(f"the test never opened gate {gate}")
    finally:
        await client.aclose()


def _record_stop(key: str, delivered: int, url: str | None) -> None:
    record = {"at": time.time(), "delivered": delivered}
    if url is None:
        STOPPED_LOCALLY[key] = record
        return
    client = redis.Redis.from_url(url)  # synchronous: this runs while the task is being cancelled
    try:
        client.set(stopped_key(key), json.dumps(record), ex=300)
    finally:
        client.close()
