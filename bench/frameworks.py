"""Time to first chunk of a jaf-py agent: through runcast vs jaf-py's own `run_streaming`, same scripted model.

    python -m bench.frameworks [--runs 5] [--pause-ms 20]        (make bench-frameworks)

The agent (`tests.support.jaf_agents`): a tool call, a handoff, then 100 text deltas with `--pause-ms` before each
(100 x 20 ms). Through runcast: a real redis-server, `runcast gateway` and `runcast worker` processes (the worker runs
the agent with `from_jaf`), one SSE viewer; the clock starts before `POST /v1/runs` and stops when the viewer has
the first CHUNK (`of which after START`: from the START event, i.e. without the worker's pick-up of the job, which
is arq's poll of the queue, every 0.5 s by default). jaf-py alone: `jaf.core.streaming.run_streaming` in this
process on the same agent and model; the clock starts at the call. Runs go one after the other; progress goes to
stderr, the table and a JSON line to stdout.

jaf-py 2.6.22's `run_streaming` never returns on its own here: its loop sleeps on an `asyncio.Event` that only its
tool-event handler sets, so once the run's last tool event is consumed and the run ends, nothing wakes it (any run
that ends with text hangs). To measure jaf's own code path anyway, that wait is woken every 5 ms
(`_unstuck_run_streaming`), which adds at most 5 ms to jaf's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import statistics
import sys
import time
import types
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import jaf.core.streaming
from httpx_sse import aconnect_sse
from jaf.core.streaming import StreamingEventType, run_streaming
from jaf.core.types import ContentRole, Message, RunConfig, RunId, RunState, TraceId

from tests.support import jaf_agents
from tests.support.frameworks import FrameworkCase, framework_deployment
from tests.support.redis_server import RedisServer
from tests.support.scripted_model import prompt


@dataclass
class Timing:
    first_chunk_ms: list[float] = field(default_factory=list)
    start_to_chunk_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    chunks: list[int] = field(default_factory=list)
    first_chunk_chars: list[int] = field(default_factory=list)


async def through_runcast(url: str, text: str, timing: Timing) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        started = time.perf_counter()
        created = (await http.post(f"{url}/v1/runs", json={"agent": "jaf_support", "input": text})).json()
        chunks, start_seen = 0, started
        events = f"{url}/v1/runs/{created['run_id']}/events"
        async with aconnect_sse(http, "GET", events, params={"token": created["token"]}) as source:
            async for sse in source.aiter_sse():
                if sse.event == "start":
                    start_seen = time.perf_counter()
                elif sse.event == "chunk":
                    chunks += 1
                    if chunks == 1:
                        timing.first_chunk_ms.append((time.perf_counter() - started) * 1000)
                        timing.start_to_chunk_ms.append((time.perf_counter() - start_seen) * 1000)
                        timing.first_chunk_chars.append(len(json.loads(sse.data)["data"]["delta"]))
                elif sse.event in ("complete", "error"):
                    if sse.event == "error":
                        raise RuntimeError(f"the run failed: {sse.data}")
                    break
        timing.complete_ms.append((time.perf_counter() - started) * 1000)
        timing.chunks.append(chunks)


class _WakingEvent(asyncio.Event):
    async def wait(self) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.005):
                await super().wait()
        return True


@contextlib.contextmanager
def _unstuck_run_streaming() -> Iterator[None]:
    """jaf's run_streaming with its end-of-run wait woken every 5 ms (see the module docstring)."""
    proxy = types.ModuleType("asyncio")
    proxy.__dict__.update(vars(asyncio))
    proxy.Event = _WakingEvent  # type: ignore[attr-defined]
    original = jaf.core.streaming.asyncio
    jaf.core.streaming.asyncio = proxy  # type: ignore[attr-defined]
    try:
        yield
    finally:
        jaf.core.streaming.asyncio = original  # type: ignore[attr-defined]


async def jaf_alone(text: str, timing: Timing) -> None:
    state = RunState(
        run_id=RunId(uuid.uuid4().hex),
        trace_id=TraceId(uuid.uuid4().hex),
        messages=[Message(role=ContentRole.USER, content=text)],
        current_agent_name=jaf_agents.triage.name,
        context={},
        turn_count=0,
    )
    registry = {jaf_agents.triage.name: jaf_agents.triage, jaf_agents.support.name: jaf_agents.support}
    config = RunConfig(agent_registry=registry, model_provider=jaf_agents.ScriptedJafProvider())
    started = time.perf_counter()
    chunks, start_seen = 0, started
    async for event in run_streaming(state, config):
        if event.type == StreamingEventType.START:
            start_seen = time.perf_counter()
        elif event.type == StreamingEventType.CHUNK:
            chunks += 1
            if chunks == 1:
                timing.first_chunk_ms.append((time.perf_counter() - started) * 1000)
                timing.start_to_chunk_ms.append((time.perf_counter() - start_seen) * 1000)
                timing.first_chunk_chars.append(len(event.data.delta))
        elif event.type in (StreamingEventType.COMPLETE, StreamingEventType.ERROR):
            break
    timing.complete_ms.append((time.perf_counter() - started) * 1000)
    timing.chunks.append(chunks)


def _row(name: str, values: list[str]) -> str:
    return f"{name:<34}" + "".join(f"{v:>26}" for v in values)


def render(timings: dict[str, Timing], runs: int, pause_ms: int) -> str:
    def ms(values: list[float]) -> str:
        return f"{statistics.median(values):.0f} (max {max(values):.0f})"

    names = list(timings)
    lines = [
        f"jaf-py agent: tool call, handoff, 100 deltas x {pause_ms} ms; {runs} runs each; median (max)",
        _row("", names),
        _row("time to first CHUNK, ms", [ms(t.first_chunk_ms) for t in timings.values()]),
        _row("  of which after START, ms", [ms(t.start_to_chunk_ms) for t in timings.values()]),
        _row("time to COMPLETE, ms", [ms(t.complete_ms) for t in timings.values()]),
        _row("CHUNK events per run", [f"{statistics.median(t.chunks):.0f}" for t in timings.values()]),
        _row("first CHUNK, characters", [f"{statistics.median(t.first_chunk_chars):.0f}" for t in timings.values()]),
    ]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Timing]:
    text = prompt(pause_ms=args.pause_ms)
    runcast_timing, jaf_timing = Timing(), Timing()
    server = RedisServer().start()
    case = FrameworkCase("jaf_support", "tests.support.jaf_agents:registry", jaf_agents.direct_output)
    try:
        with framework_deployment(server.url, case) as deployment:
            await through_runcast(deployment.url, text, Timing())  # warm-up: first job, connections
            for n in range(args.runs):
                await through_runcast(deployment.url, text, runcast_timing)
                print(f"runcast run {n + 1}/{args.runs}", file=sys.stderr)
    finally:
        server.cleanup()
    # jaf's engine prints as it runs (in the worker: to its log)
    with contextlib.redirect_stdout(io.StringIO()), _unstuck_run_streaming():
        await jaf_alone(text, Timing())  # warm-up
        for n in range(args.runs):
            await jaf_alone(text, jaf_timing)
            print(f"jaf-py run {n + 1}/{args.runs}", file=sys.stderr)
    return {"runcast (gateway + worker, SSE)": runcast_timing, "jaf-py run_streaming": jaf_timing}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.frameworks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per side (after one warm-up run)")
    parser.add_argument("--pause-ms", type=int, default=20, help="the scripted model's pause before each delta")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.pause_ms < 0:
        parser.error("--runs must be >= 1 and --pause-ms >= 0")
    timings = asyncio.run(main_async(args))
    print(render(timings, args.runs, args.pause_ms))
    print(json.dumps({name: vars(timing) for name, timing in timings.items()}))


if __name__ == "__main__":
    main()
