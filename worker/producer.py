"""The publish API: a backend that runs its agent in its own process publishes the run's events into runcast.

    run = await client.create_run("support", text, external=True)     # run id + viewer token, as for any run
    async with runcast.publisher(redis).run(run.run_id) as events:    # claims the run, heartbeats, START
        await events.chunk("Hel")
        call_id = await events.tool_call("lookup_order", {"order_id": "A-42"})
        await events.tool_result("lookup_order", call_id, "shipped")
        await events.chunk("lo")
    # leaving the block: METADATA + COMPLETE; leaving it with an exception: ERROR `agent_error` with its message

The producer writes to the same log as a worker, through the same append script, so viewers get the same fan-out,
resume, terminal guarantee and `worker_lost`:

- only runs created with `external: true` can be published (the gateway never enqueues them, and a worker that
  is handed one anyway refuses it), and only by one producer: entering `run()` claims the run (`HSETNX` on its
  meta) or raises `RunAlreadyClaimed`;
- the producer heartbeats exactly like a worker (`runcast.worker.heartbeat.run_heartbeat`): a producer that is
  killed or cut off stops beating, and a gateway's sweeper ends the run with ERROR `worker_lost`;
- nothing can be published after the terminal event: the append script refuses it (a cancel from a viewer, the
  sweeper) and so does the publisher after its own `complete()`/`error()`: `RunEnded` is raised;
- events of one run keep the order of the calls, even calls not awaited one by one: each call is queued at once,
  a single writer per run appends what is queued in one round trip (`append_many`), and each call returns once its
  event is in the log. A failed append fails every later call of that run too, so no gap is ever published over.
  Each run has its own writer and log: runs never share or reorder each other's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from redis.asyncio import Redis

from runcast.shared.keys import meta_key
from runcast.shared.redis_client import redis_from_url
from runcast.shared.settings import get_settings
from runcast.shared.streaming import StreamingEvent
from runcast.shared.streamlog import TERMINAL_STATUSES, RunEnded, StreamLog, UnknownRun
from runcast.worker.durable import DurableStreamLog
from runcast.worker.events import RunEvents
from runcast.worker.heartbeat import run_heartbeat

log = logging.getLogger("runcast.producer")

MAX_BATCH = 256
"""Most events in one append (bounds the Lua script's argument list), as in the worker's publisher."""

EXTERNAL_FIELD = "external"
"""Meta field set on runs created with `external: true` (`POST /v1/runs`)."""
CLAIM_FIELD = "producer"
"""Meta field the producer publishing a run claims (HSETNX)."""


class RunNotExternal(RuntimeError):
    """The run was created for runcast's workers (without `external: true`): a worker publishes it."""


class RunAlreadyClaimed(RuntimeError):
    """Another producer is already publishing this run."""


def publisher(redis: Redis | str, **options: Any) -> Publisher:
    """A `Publisher` on a Redis client (`decode_responses=True`) or URL; see `Publisher` for the options."""
    return Publisher(redis, **options)


class Publisher:
    """Publishes runs created for an external producer. `redis` is the Redis runcast's gateways read (a client
    with `decode_responses=True`, or a URL: then the publisher owns the client and `aclose()` closes it).

    Defaults come from the same settings as a worker's: `lost_s` (RUNCAST_WORKER_LOST_S, how stale a heartbeat
    may get before the run is declared lost), `maxlen` (RUNCAST_STREAM_MAXLEN), `retention_s`
    (RUNCAST_RETENTION_S), `retry_s` (RUNCAST_REDIS_RETRY_S, how long an append retries a lost Redis).
    """

    def __init__(
        self,
        redis: Redis | str,
        *,
        lost_s: float | None = None,
        maxlen: int | None = None,
        retention_s: int | None = None,
        retry_s: float | None = None,
    ) -> None:
        settings = get_settings()
        self._owned = isinstance(redis, str)
        client = redis_from_url(redis) if isinstance(redis, str) else redis
        if not client.get_encoder().decode_responses:
            raise ValueError("runcast.publisher needs a Redis client made with decode_responses=True (or a URL)")
        self.redis = client
        self.lost_s = lost_s if lost_s is not None else settings.worker_lost_s
        self.log = DurableStreamLog(
            client,
            maxlen=maxlen or settings.stream_maxlen,
            retention_s=retention_s or settings.retention_s,
            retry_s=retry_s if retry_s is not None else settings.redis_retry_s,
        )

    def run(self, run_id: str, *, model_name: str = "external") -> RunPublisher:
        """The run's publisher, an async context manager (see the module docstring)."""
        return RunPublisher(self, run_id, model_name)

    async def aclose(self) -> None:
        """Close the Redis client, when this publisher made it from a URL."""
        if self._owned:
            await self.redis.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class RunPublisher:
    """One run's events from an external producer: `async with publisher.run(run_id) as run: ...`."""

    def __init__(self, owner: Publisher, run_id: str, model_name: str) -> None:
        self.run_id = run_id
        self._owner = owner
        self._model_name = model_name
        self._events: RunEvents | None = None
        self._writer = _OrderedWriter(owner.log, run_id)
        self._stack = contextlib.AsyncExitStack()
        self._calls = 0
        self.ended = False
        """True once this publisher sent the terminal event (or learnt that the run had ended)."""

    @property
    def content(self) -> str:
        """All the text published so far."""
        return self._events.content if self._events else ""

    async def __aenter__(self) -> RunPublisher:
        log_ = self._owner.log
        meta = await log_.get_meta(self.run_id)
        if meta is None:
            raise UnknownRun(f"no run {self.run_id} (unknown, or expired after its retention period)")
        if meta.get(EXTERNAL_FIELD) != "1":
            raise RunNotExternal(
                f"run {self.run_id} was created for runcast's workers; create it with external=true to publish it"
            )
        if meta.get("status") in TERMINAL_STATUSES:
            raise RunEnded(f"run {self.run_id} has already ended ({meta['status']}); nothing can be published")
        if not await log_.redis.hsetnx(meta_key(self.run_id), CLAIM_FIELD, uuid.uuid4().hex):
            raise RunAlreadyClaimed(f"run {self.run_id} is already being published by another producer")
        self._events = RunEvents(self.run_id, meta.get("agent", ""), self._model_name)
        await self._stack.enter_async_context(run_heartbeat(log_, self.run_id, self._owner.lost_s))
        try:
            await self._send(self._events.start())
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            if exc is None:
                if not self.ended:
                    with contextlib.suppress(RunEnded):  # ended from outside after the last call: nothing to add
                        await self.complete()
            elif isinstance(exc, Exception) and not isinstance(exc, RunEnded) and not self.ended:
                with contextlib.suppress(RunEnded):
                    await self.error("agent_error", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        finally:
            # The heartbeat's own exit: on CancelledError it ends the run with `worker_shutdown`; it always stops
            # beating and leaves the running index.
            await self._stack.__aexit__(exc_type, exc, tb)
        return False

    async def chunk(self, delta: str) -> None:
        """Publish one piece of text (CHUNK: `content` so far, `delta`, `token_count`). Empty text is skipped."""
        if not isinstance(delta, str):
            raise TypeError(f"chunk() takes text, not {type(delta).__name__}")
        event = self._live().chunk(delta)
        if event is not None:
            await self._send(event)

    async def tool_call(self, tool_name: str, arguments: dict[str, Any], call_id: str | None = None) -> str:
        """Publish TOOL_CALL; returns its `call_id` (made up when not given) for the matching `tool_result`."""
        self._calls += 1
        call_id = call_id or f"call_{self._calls}"
        await self._send(self._live().tool_call(tool_name, arguments, call_id))
        return call_id

    async def tool_result(
        self, tool_name: str, call_id: str, result: Any, *, failed: bool = False, execution_time_ms: float | None = None
    ) -> None:
        """TOOL_RESULT for the call `call_id` (`failed=True`: the tool raised; `result` carries the error)."""
        event = self._live().tool_result(tool_name, call_id, result, failed=failed, execution_time_ms=execution_time_ms)
        await self._send(event)

    async def agent_switch(self, to_agent: str, reason: str = "") -> None:
        """AGENT_SWITCH: the run is handed over to `to_agent` (a handoff)."""
        await self._send(self._live().agent_switch(to_agent, reason))

    def usage(self, total_tokens: int) -> None:
        """Count tokens (reported in METADATA); publishes nothing by itself."""
        self._live().add_tokens(total_tokens)

    def new_turn(self) -> None:
        """A new model turn begins (counted in METADATA; its text is kept apart from the previous turn's)."""
        self._live().new_turn()

    async def metadata(self) -> None:
        """METADATA now: agent, model, turns, tokens so far, elapsed time."""
        await self._send(self._live().metadata())

    async def complete(self) -> None:
        """End the run successfully: METADATA, then COMPLETE with all the text published."""
        events = self._live().finish()
        self.ended = True
        await self._send(*events)

    async def error(self, error_type: str, detail: str) -> None:
        """End the run with ERROR (`error_type`, e.g. `agent_error`, and `detail`)."""
        event = self._live().error(error_type, detail)
        self.ended = True
        await self._send(event)

    def _live(self) -> RunEvents:
        if self._events is None:
            raise RuntimeError("use the run's publisher inside `async with publisher.run(run_id) as run:`")
        if self.ended:
            raise RunEnded(f"run {self.run_id} has already ended; nothing can be published after its terminal event")
        return self._events

    async def _send(self, *events: StreamingEvent) -> None:
        try:
            await self._writer.submit(list(events))
        except RunEnded as exc:
            self.ended = True
            raise RunEnded(
                f"run {self.run_id} has already ended (cancelled, or declared lost); nothing can be published after "
                "its terminal event"
            ) from exc


class _OrderedWriter:
    """One run's appends, in call order: calls queue their events at once; one task appends what is queued."""

    def __init__(self, log_: StreamLog, run_id: str) -> None:
        self._log = log_
        self._run_id = run_id
        self._queue: list[tuple[list[StreamingEvent], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._failed: BaseException | None = None

    def submit(self, events: list[StreamingEvent]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._failed is not None:
            future.set_exception(self._failed)
            return future
        self._queue.append((events, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name=f"publish:{self._run_id}")
        return future

    async def _drain(self) -> None:
        while self._queue:
            batch = list(self._take())
            try:
                await self._log.append_many(self._run_id, [event for events, _ in batch for event in events])
            except BaseException as exc:  # every waiting call must learn why, cancellation included
                self._failed = exc if isinstance(exc, Exception) else RuntimeError(f"publishing stopped: {exc!r}")
                for _, future in [*batch, *self._queue]:
                    if not future.done():
                        future.set_exception(self._failed)
                self._queue.clear()
                if not isinstance(exc, Exception):
                    raise
                return
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _take(self) -> Iterator[tuple[list[StreamingEvent], asyncio.Future[None]]]:
        count = 0
        while self._queue and (count == 0 or count + len(self._queue[0][0]) <= MAX_BATCH):
            events, future = self._queue.pop(0)
            count += len(events)
            yield events, future
