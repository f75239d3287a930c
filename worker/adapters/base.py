"""What every framework adapter shares: the optional-extra check, the event builder, framework errors -> ERROR,
a bridge from a framework's synchronous callback to an async iterator, text-so-far -> deltas, tool timing.

An adapter is a `RunnableAgent` (`runcast.worker.runnable`) whose `stream(request)` drives the framework's own
streaming API and maps what it reports to runcast events with `RunEvents`, so every framework's events have the
shapes runcast's own runner gives them. The pieces here exist so that no adapter re-solves them:

- `require_extra(...)`: import the framework or raise `MissingExtra`, whose message names `pip install runcast[x]`;
- `with_framework_errors(run, events)`: an exception from the framework ends the run with ERROR `agent_error` and
  the framework's message, instead of an `internal_error` without context;
- `CallbackStream`: run a framework coroutine that reports through a synchronous callback (jaf's `on_event`) and
  iterate what it reported, in order, without ever blocking the loop inside the callback; closing the iterator
  (cancel, shutdown) cancels the framework's run and waits for it to stop;
- `TextSoFar`: frameworks that report a message's text so far (not deltas) -> the new part of each report;
- `ToolClock`: tool calls reported as a start and an end -> `execution_time_ms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from types import ModuleType
from typing import Any, Generic, TypeVar

from runcast.shared.streaming import StreamingEvent
from runcast.worker.events import RunEvents

log = logging.getLogger("runcast.worker.adapters")

T = TypeVar("T")

CANCEL_GRACE_S = 5.0
"""How long a closed adapter waits for the framework's cancelled run to stop before it gives up on it (logged)."""


class MissingExtra(ImportError):
    """A framework adapter was used without its optional dependency installed."""

    def __init__(self, framework: str, extra: str, package: str, cause: BaseException | None = None) -> None:
        self.framework, self.extra, self.package = framework, extra, package
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        super().__init__(
            f"runcast's {framework} adapter needs {package}, which is not installed{detail}: "
            f"pip install 'runcast[{extra}]'"
        )


def require_extra(module: str, *, framework: str, extra: str, package: str) -> ModuleType:
    """Import `module` (the framework) or raise `MissingExtra` naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(framework, extra, package, exc) from exc


def describe(exc: BaseException) -> str:
    """A framework exception as ERROR `detail`: its type and its own message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def with_framework_errors(
    run: RunEvents, events: AsyncIterator[StreamingEvent], error_type: str = "agent_error"
) -> AsyncIterator[StreamingEvent]:
    """`events`, with an exception raised from inside the framework turned into the run's terminal ERROR.

    Cancellation is not an exception here: it goes through, so cancelling a run cancels the framework's work.
    """
    try:
        async with contextlib.aclosing(events) as inner:  # type: ignore[type-var]
            async for event in inner:
                yield event
    except Exception as exc:
        log.info("run %s: the framework failed: %s", run.run_id, describe(exc))
        yield run.error(error_type, describe(exc))


async def framework_run(
    run: RunEvents, events: AsyncIterator[StreamingEvent], error_type: str = "agent_error"
) -> AsyncIterator[StreamingEvent]:
    """An adapter's whole stream: START, then the framework's `events` (`with_framework_errors`).

    The inner generator is closed with this one (`aclosing`): closing the run's stream (a cancel, or the run's first
    terminal event) stops the framework's run there and then, not whenever the garbage collector finalizes a dropped
    generator."""
    yield run.start()
    async with contextlib.aclosing(with_framework_errors(run, events, error_type)) as inner:  # type: ignore[type-var]
        async for event in inner:
            yield event


def field_of(value: Any, name: str) -> Any:
    """`value[name]` or `value.name`: frameworks hand the same data over as dicts (`asdict`, TypedDicts) or as
    objects (dataclasses, pydantic models), depending on the event."""
    if isinstance(value, Mapping):
        return value.get(name)
    return getattr(value, name, None)


def maybe_json(value: Any) -> Any:
    """Tool arguments or results that arrive as JSON text, decoded; anything else (or text that is not JSON) as is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


_DONE = object()


class CallbackStream(Generic[T]):
    """Iterate, in order, what a framework coroutine reports through a synchronous callback.

    `push` is the callback: called on the event loop's thread it is a `put_nowait` on an unbounded queue (no
    await, no lock, nothing that could block the framework or reorder events); called from another thread it
    hands the item to the loop with `call_soon_threadsafe` (FIFO as well). `items(coroutine)` runs the coroutine
    as a task and yields each pushed item until the task is done, then its result is in `result` (its exception is
    raised). Closing the iterator early (the run was cancelled, or the consumer stopped) cancels the task and waits
    up to CANCEL_GRACE_S for it to stop.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.result: Any = None

    def push(self, item: T) -> None:
        if threading.get_ident() == self._thread:
            self._queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def items(self, coroutine: Awaitable[Any]) -> AsyncIterator[T]:
        task = asyncio.ensure_future(coroutine)
        # Done callbacks run after the task's last step, so every item it pushed is already queued before _DONE.
        task.add_done_callback(lambda _: self._queue.put_nowait(_DONE))
        try:
            while (item := await self._queue.get()) is not _DONE:
                yield item
            self.result = task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
                if not task.done():
                    log.warning("the framework's run did not stop within %.0f s of being cancelled", CANCEL_GRACE_S)


class TextSoFar:
    """Turns reports of a message's text so far into the new text of each report."""

    def __init__(self) -> None:
        self.text = ""

    def reset(self) -> None:
        """A new message begins (a new model turn)."""
        self.text = ""

    def advance(self, snapshot: str) -> str:
        """The part of `snapshot` not reported before ('' when nothing is new). A snapshot that does not extend
        what was reported (the framework rewrote the message) cannot be un-published: it is logged and skipped."""
        if snapshot.startswith(self.text):
            delta, self.text = snapshot[len(self.text) :], snapshot
            return delta
        if not self.text.startswith(snapshot):
            log.warning("a streamed message was rewritten, not extended; its new text is not published")
        return ""


class ToolClock:
    """Times tool calls that a framework reports as a start and, later, an end."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def start(self, call_id: str) -> None:
        self._started[call_id] = time.perf_counter()

    def stop(self, call_id: str) -> float | None:
        """Milliseconds since `start(call_id)`, or None when its start was not seen."""
        started = self._started.pop(call_id, None)
        return None if started is None else round((time.perf_counter() - started) * 1000, 3)


__all__ = [
    "CallbackStream",
    "MissingExtra",
    "RunEvents",
    "TextSoFar",
    "ToolClock",
    "describe",
    "field_of",
    "framework_run",
    "maybe_json",
    "require_extra",
    "with_framework_errors",
]
