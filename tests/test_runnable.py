"""The interface a worker runs (`RunnableAgent`) and the adapter toolkit every framework adapter builds on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.worker.adapters.base import (
    CallbackStream,
    MissingExtra,
    TextSoFar,
    ToolClock,
    require_extra,
    with_framework_errors,
)
from runcast.worker.agents import Agent, default_registry, load_registry
from runcast.worker.events import RunEvents
from runcast.worker.providers.base import Message, ModelDelta
from runcast.worker.providers.scripted import ScriptedProvider
from runcast.worker.runnable import RunnableAgent, RunRequest, stream_run
from tests.support.runs import finished, start_job, wait_for_entry, worker_state


@dataclass
class Toy:
    """A RunnableAgent that is not a runcast Agent: it streams `words`, optionally pausing, and notes how it ended."""

    name: str = "toy"
    description: str = "a toy producer"
    chunking: StreamConfig | None = None
    words: tuple[str, ...] = ("one", " two", " three")
    pause_s: float = 0.0
    terminal: bool = True
    after_terminal: bool = False
    seen: list[RunRequest] = field(default_factory=list)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        self.seen.append(request)
        run = RunEvents(request.run_id, self.name, "toy-model")
        try:
            yield run.start()
            run.new_turn()
            for word in self.words:
                await asyncio.sleep(self.pause_s)
                chunk = run.chunk(word)
                assert chunk is not None
                yield chunk
            if self.terminal:
                for event in run.finish():
                    yield event
            if self.after_terminal:
                yield run.chunk(" after the end")  # type: ignore[misc]
        finally:
            self.stopped.set()


def test_runcast_agents_and_adapters_are_runnable_agents():
    assert isinstance(default_registry["echo"], RunnableAgent)
    assert isinstance(Toy(), RunnableAgent)


async def test_run_events_stops_at_the_first_terminal_event_and_closes_the_source():
    toy = Toy(after_terminal=True)
    events = [e async for e in stream_run(toy, "hi")]
    assert [e.type.value for e in events] == ["start", "chunk", "chunk", "chunk", "metadata", "complete"]
    assert toy.stopped.is_set()


async def test_a_source_that_ends_without_a_terminal_event_gets_an_error():
    events = [e async for e in stream_run(Toy(terminal=False), "hi", run_id="run-x")]
    assert events[-1].type.value == "error" and events[-1].run_id == "run-x"
    assert events[-1].data.error_type == "internal_error" and "without a terminal event" in events[-1].data.detail


class RecordingProvider(ScriptedProvider):
    def __init__(self) -> None:
        super().__init__(delay_ms=0)
        self.calls: list[list[Message]] = []

    def stream(self, **kwargs: Any) -> AsyncIterator[ModelDelta]:
        self.calls.append(list(kwargs["messages"]))
        return super().stream(**kwargs)


async def test_a_runcast_agent_runs_through_the_interface_with_the_history_before_its_input():
    history = [Message("user", "earlier"), Message("assistant", "an answer")]
    provider = RecordingProvider()
    events = [e async for e in stream_run(default_registry["echo"], "hello there", history=history, provider=provider)]
    assert events[-1].data == {"content": "hello there"}
    assert [(m.role, m.content) for m in provider.calls[0][1:]] == [
        ("user", "earlier"), ("assistant", "an answer"), ("user", "hello there"),
    ]  # fmt: skip


async def test_the_worker_job_runs_any_runnable_agent_with_its_chunking_and_the_run_metadata(real_redis_url: str):
    toy = Toy(chunking=StreamConfig.parse("size:100", max_delay_ms=10_000), words=("a", "b", "c", "d"))
    async with worker_state(real_redis_url, registry={"toy": toy}) as state:
        run_id, job = await start_job(state, "toy", "the input")
        result = await finished(state, run_id, job)
    assert result.result == "completed"
    assert result.types == ["start", "chunk", "chunk", "metadata", "complete"]  # first delta at once, rest coalesced
    assert [c["delta"] for c in result.of_type("chunk")] == ["a", "bcd"]
    assert toy.seen[0].input == "the input" and toy.seen[0].run_id == run_id and toy.seen[0].metadata == {}


async def test_cancelling_a_run_closes_a_runnable_agents_stream(real_redis_url: str):
    toy = Toy(words=tuple(f" w{i}" for i in range(200)), pause_s=0.05)
    async with worker_state(real_redis_url, registry={"toy": toy}) as state:
        run_id, job = await start_job(state, "toy", "x")
        await wait_for_entry(state, run_id, "chunk")
        await state.stream_log.end_run(run_id, "cancelled", "the run was cancelled by a client")
        assert await asyncio.wait_for(job, 10) == "cancelled"
    assert toy.stopped.is_set()


REGISTRY_WITH_TOY = {**default_registry, "toy": Toy()}
HANDS_OFF_TO_TOY = {"toy": Toy(), "router": Agent("router", handoffs=("toy",))}
NOT_RUNNABLE = {"echo": default_registry["echo"], "thing": object()}


def test_a_registry_mixes_runcast_agents_and_other_runnable_agents():
    registry = load_registry("tests.test_runnable:REGISTRY_WITH_TOY")
    assert set(registry) == {"echo", "demo", "triage", "chat", "toy"}
    with pytest.raises(ValueError, match="runcast Agent hands off to runcast Agents"):
        load_registry("tests.test_runnable:HANDS_OFF_TO_TOY")
    with pytest.raises(TypeError, match="'thing' \\(object\\) is not a runnable agent"):
        load_registry("tests.test_runnable:NOT_RUNNABLE")


def test_a_missing_extra_names_the_pip_extra():
    with pytest.raises(MissingExtra, match=r"pip install 'runcast\[nope\]'") as raised:
        require_extra("a_framework_that_is_not_installed", framework="Nope", extra="nope", package="nope-py")
    assert isinstance(raised.value, ImportError) and "nope-py" in str(raised.value)


async def test_a_framework_exception_becomes_the_runs_error_with_its_message():
    run = RunEvents("run-1", "agent", "model")

    async def failing() -> AsyncIterator[StreamingEvent]:
        yield run.start()
        raise ValueError("the framework broke")

    events = [e async for e in with_framework_errors(run, failing())]
    assert [e.type.value for e in events] == ["start", "error"]
    assert events[-1].data.error_type == "agent_error" and events[-1].data.detail == "ValueError: the framework broke"


async def test_callback_stream_keeps_the_order_of_pushes_from_the_loop_and_from_threads():
    bridge: CallbackStream[str] = CallbackStream()

    async def framework() -> str:
        for n in range(50):
            bridge.push(f"loop {n}")
        thread = threading.Thread(target=lambda: [bridge.push(f"thread {n}") for n in range(50)])
        thread.start()
        await asyncio.to_thread(thread.join)
        await asyncio.sleep(0.01)  # cross-thread pushes reach the queue through the loop
        return "result"

    got = [item async for item in bridge.items(framework())]
    assert got == [f"loop {n}" for n in range(50)] + [f"thread {n}" for n in range(50)]
    assert bridge.result == "result"


async def test_callback_stream_raises_the_frameworks_exception_after_what_it_pushed():
    bridge: CallbackStream[int] = CallbackStream()

    async def framework() -> None:
        bridge.push(1)
        raise RuntimeError("boom")

    got = []
    with pytest.raises(RuntimeError, match="boom"):
        async for item in bridge.items(framework()):
            got.append(item)
    assert got == [1]


async def test_closing_a_callback_stream_cancels_the_frameworks_run():
    bridge: CallbackStream[int] = CallbackStream()
    stopped = asyncio.Event()

    async def framework() -> None:
        try:
            for n in range(1000):
                bridge.push(n)
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            stopped.set()
            raise

    items = bridge.items(framework())
    async for item in items:
        if item == 3:
            break
    await items.aclose()  # type: ignore[attr-defined]
    assert stopped.is_set()


def test_text_so_far_gives_the_new_part_of_each_report():
    text = TextSoFar()
    assert [text.advance(s) for s in ("He", "Hell", "Hell", "Hello")] == ["He", "ll", "", "o"]
    assert text.advance("Help") == ""  # rewritten, not extended: nothing can be un-published
    text.reset()
    assert text.advance("Next") == "Next"


def test_tool_clock_times_a_call_from_its_start():
    clock = ToolClock()
    clock.start("c1")
    elapsed = clock.stop("c1")
    assert elapsed is not None and elapsed >= 0
    assert clock.stop("c1") is None and clock.stop("unknown") is None
