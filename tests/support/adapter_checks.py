"""In-process helpers for every framework adapter's unit tests (no Redis, no processes): run an agent and look at
its events, check that cancelling the task that iterates them stops the framework's model, and that runcast
imports without the framework.

The end-to-end checks (gateway + worker + redis-server) are in `tests.support.frameworks`.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from runcast.shared.streaming import StreamingEvent
from runcast.worker.runnable import RunnableAgent, stream_run
from tests.support.scripted_model import DELTAS, STOPPED_LOCALLY, prompt


async def collect(agent: RunnableAgent, text: str, **kwargs: Any) -> list[StreamingEvent]:
    """All of a run's events, in-process (`stream_run`; `kwargs`: history, metadata, run_id, ...)."""
    return [event async for event in stream_run(agent, text, **kwargs)]


def kinds(events: list[StreamingEvent]) -> list[str]:
    return [event.type.value for event in events]


def data(event: StreamingEvent) -> dict[str, Any]:
    return event.to_dict()["data"]


def text_of(events: list[StreamingEvent]) -> str:
    """The run's text: its CHUNKs' deltas joined."""
    return "".join(data(e)["delta"] for e in events if e.type.value == "chunk")


async def cancel_after_chunks(agent: RunnableAgent, chunks: int = 3) -> dict:
    """Run `agent` on the scripted prompt (20 ms between deltas), cancel the task iterating its events after
    `chunks` CHUNKs (as the worker stops a cancelled run), and check that the scripted model's stream was stopped
    mid-way and that no task the framework started is left. Returns the model's stop record."""
    enough = asyncio.Event()
    seen = 0

    async def consume() -> None:
        nonlocal seen
        async for event in stream_run(agent, prompt(pause_ms=20)):
            seen += event.type.value == "chunk"
            if seen == chunks:
                enough.set()

    STOPPED_LOCALLY.clear()
    task = asyncio.create_task(consume())
    await asyncio.wait_for(enough.wait(), 30)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the run ended by itself before it was cancelled")
    stopped = STOPPED_LOCALLY["ungated"]
    assert chunks <= stopped["delivered"] < len(DELTAS), stopped
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not pending, f"the framework's run is still going: {pending}"
    return stopped


def message_without(module: str, code: str) -> str:
    """Run `code` in a fresh interpreter in which `module` cannot be imported (as if not installed); its output."""
    script = f"import sys\nsys.modules[{module!r}] = None\n{code}"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout
