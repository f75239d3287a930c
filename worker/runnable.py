"""What a runcast worker runs: anything that turns one run's input into that run's StreamingEvents.

A registry (`RUNCAST_AGENTS`) maps names to `RunnableAgent`s: runcast's own `Agent` is one, and so is every
framework adapter (`from_jaf(...)`, ...). The worker job calls `run_events(agent, request)` and publishes what it
yields; everything around it — the Redis log, chunking (`agent.chunking`, else the worker default), heartbeats and
`worker_lost`, cancel, `GET /v1/agents` (`name` -> `description`), every delivery guarantee — is the same whatever
produced the events.

The contract of `RunnableAgent.stream(request)`:
- yield START first and exactly one terminal event (COMPLETE or ERROR) last, every event as it happens (one CHUNK
  per model delta, never text sliced after the fact), each with `run_id=request.run_id`;
- turn the framework's own failures into ERROR (`runcast.worker.adapters.base.framework_errors` does it);
- stop the framework's run when the iterator is closed or the task iterating it is cancelled (that is how cancel,
  worker shutdown and the job timeout reach it): let `CancelledError` through, cancel what it started.
`run_events` holds every source to the parts a bug could break: nothing after the first terminal event, and a
terminal ERROR when a source ends without one (otherwise the run would stay `running` for ever).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from runcast.shared.ids import new_run_id
from runcast.shared.streaming import StreamConfig, StreamingError, StreamingEvent, StreamingEventType
from runcast.worker.providers.base import Message

if TYPE_CHECKING:
    from runcast.worker.providers.base import ModelProvider

log = logging.getLogger("runcast.worker")


@dataclass(frozen=True)
class RunRequest:
    """Everything one run gives the agent that produces its events.

    `history`: the conversation before this run's input (user / assistant / tool messages, oldest first).
    `provider`: the worker's default model provider (runcast agents use it; framework adapters bring their own).
    `registry`: the worker's whole registry (runcast agents look their handoff targets up in it).
    `metadata`: the `metadata` object the run was created with (`POST /v1/runs`), e.g. a user id for the context.
    """

    run_id: str
    input: str
    history: Sequence[Message] = ()
    provider: ModelProvider | None = None
    registry: Mapping[str, RunnableAgent] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    trace_id: str | None = None

    @classmethod
    def from_meta(
        cls,
        run_id: str,
        meta: Mapping[str, str],
        *,
        provider: ModelProvider | None,
        registry: Mapping[str, RunnableAgent],
        history: Sequence[Message] = (),
    ) -> RunRequest:
        """The request for a run as the gateway created it (its meta hash: `input`, `metadata` JSON)."""
        try:
            metadata = json.loads(meta.get("metadata") or "{}")
        except ValueError:
            metadata = {}
        return cls(
            run_id=run_id,
            input=meta.get("input", ""),
            history=tuple(history),
            provider=provider,
            registry=registry,
            metadata=metadata if isinstance(metadata, dict) else {},
        )


@runtime_checkable
class RunnableAgent(Protocol):
    """Something a runcast worker can run: a name, a description (`GET /v1/agents`), an optional chunking policy,
    and `stream(request)`, the run's events as they happen (see the module docstring for the contract)."""

    name: str
    description: str
    chunking: StreamConfig | None

    def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        """The run's events as they happen: START first, then whatever the agent does, ending with one terminal
        event (COMPLETE or ERROR). Cancelling the iteration must stop the agent's work."""
        ...


async def run_events(agent: RunnableAgent, request: RunRequest) -> AsyncIterator[StreamingEvent]:
    """`agent.stream(request)`, stopped at its first terminal event and ended with an ERROR if it has none."""
    source = agent.stream(request)
    try:
        async for event in source:
            yield event
            if event.is_terminal:
                return
    finally:
        close = getattr(source, "aclose", None)
        if close is not None:
            with contextlib.suppress(RuntimeError):  # already running: being cancelled from elsewhere
                await close()
    log.error("run %s: agent %r ended without a terminal event", request.run_id, agent.name)
    error = StreamingError("internal_error", f"agent {agent.name!r} ended without a terminal event")
    yield StreamingEvent(StreamingEventType.ERROR, error, run_id=request.run_id, trace_id=request.trace_id)


async def stream_run(
    agent: RunnableAgent,
    input_text: str,
    *,
    history: Sequence[Message] = (),
    provider: ModelProvider | None = None,
    registry: Mapping[str, RunnableAgent] | None = None,
    metadata: Mapping[str, Any] | None = None,
    run_id: str | None = None,
) -> AsyncIterator[StreamingEvent]:
    """Run an agent in this process, without Redis or a worker (tests, notebooks, trying a registry out).

    The model provider defaults to the offline `scripted` one, as in a worker with RUNCAST_MODEL_PROVIDER unset.
    """
    if provider is None:
        from runcast.worker.providers.scripted import ScriptedProvider

        provider = ScriptedProvider(delay_ms=0)
    request = RunRequest(
        run_id=run_id or new_run_id(),
        input=input_text,
        history=tuple(history),
        provider=provider,
        registry=registry if registry is not None else {agent.name: agent},
        metadata=metadata or {},
    )
    async with contextlib.aclosing(run_events(agent, request)) as events:
        async for event in events:
            yield event


def check_runnable(name: str, agent: object) -> RunnableAgent:
    """`agent` if it is a RunnableAgent, else a TypeError that says what is missing."""
    missing = [attr for attr in ("name", "description", "chunking", "stream") if not hasattr(agent, attr)]
    if missing or not callable(getattr(agent, "stream", None)):
        raise TypeError(
            f"registry entry {name!r} ({type(agent).__name__}) is not a runnable agent (missing: "
            f"{', '.join(missing) or 'a callable stream'}); use runcast.Agent or an adapter such as from_jaf(...)"
        )
    return agent  # type: ignore[return-value]
