"""runcast: durable, resumable streaming of AI agent runs.

What an application imports comes from here::

    from runcast import Client, AsyncClient          # talk to a gateway (sync / async)
    from runcast import Agent, Tool, ModelSettings   # define agents a runcast worker runs
    from runcast import StreamingEvent, StreamingEventType, StreamingBuffer
    from runcast import RunnableAgent                # run other frameworks' agents in runcast workers:
    from runcast import from_jaf, from_langgraph, from_openai_agents, from_pydantic_ai
    from runcast import publisher                    # publish a run from your own process (the publish API)

The parts live in sub-packages: `runcast.shared` (event model, Redis layout, stream log, settings, clients),
`runcast.worker` (arq worker, agent runtime, model providers), `runcast.gateway` (FastAPI app, fan-out hub).
Names are imported lazily, so `import runcast` is cheap and importing the gateway never loads the worker.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # clients
    "Client": "runcast.shared.sync_client",
    "AsyncClient": "runcast.shared.client",
    "RunHandle": "runcast.shared.client",
    "StreamItem": "runcast.shared.client",
    "ResetEvent": "runcast.shared.client",
    "RuncastError": "runcast.shared.client",
    "BadRequest": "runcast.shared.client",
    "AuthenticationError": "runcast.shared.client",
    "PermissionDenied": "runcast.shared.client",
    "RunNotFound": "runcast.shared.client",
    "ConflictError": "runcast.shared.client",
    "GatewayUnavailable": "runcast.shared.client",
    "RateLimited": "runcast.shared.client",
    "RetryPolicy": "runcast.shared.client",
    # the event model (seed-compatible)
    "StreamingEvent": "runcast.shared.streaming",
    "StreamingEventType": "runcast.shared.streaming",
    "StreamingChunk": "runcast.shared.streaming",
    "StreamingToolCall": "runcast.shared.streaming",
    "StreamingToolResult": "runcast.shared.streaming",
    "StreamingMetadata": "runcast.shared.streaming",
    "StreamingError": "runcast.shared.streaming",
    "StreamingBuffer": "runcast.shared.streaming",
    "StreamingCollector": "runcast.shared.streaming",
    "StreamConfig": "runcast.shared.streaming",
    # agents
    "Agent": "runcast.worker.agents",
    "Tool": "runcast.worker.agents",
    "ModelSettings": "runcast.worker.agents",
    "run_streaming": "runcast.worker.streaming",
    "StreamingAgent": "runcast.worker.streaming",
    "RunState": "runcast.worker.streaming",
    "RunConfig": "runcast.worker.streaming",
    # bring your own agent: the interface a worker runs, framework adapters, the publish API
    "RunnableAgent": "runcast.worker.runnable",
    "RunRequest": "runcast.worker.runnable",
    "stream_run": "runcast.worker.runnable",
    "from_jaf": "runcast.worker.adapters",
    "from_langgraph": "runcast.worker.adapters",
    "from_openai_agents": "runcast.worker.adapters",
    "from_pydantic_ai": "runcast.worker.adapters",
    "MissingExtra": "runcast.worker.adapters.base",
    "publisher": "runcast.worker.producer",
    "Publisher": "runcast.worker.producer",
    "RunPublisher": "runcast.worker.producer",
    "RunNotExternal": "runcast.worker.producer",
    "RunAlreadyClaimed": "runcast.worker.producer",
    "RunEnded": "runcast.shared.streamlog",
}

__all__ = [
    "Agent",
    "AsyncClient",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "ConflictError",
    "GatewayUnavailable",
    "MissingExtra",
    "ModelSettings",
    "PermissionDenied",
    "Publisher",
    "RateLimited",
    "ResetEvent",
    "RetryPolicy",
    "RunAlreadyClaimed",
    "RunConfig",
    "RunEnded",
    "RunHandle",
    "RunNotExternal",
    "RunNotFound",
    "RunPublisher",
    "RunRequest",
    "RunState",
    "RuncastError",
    "RunnableAgent",
    "StreamConfig",
    "StreamItem",
    "StreamingAgent",
    "StreamingBuffer",
    "StreamingChunk",
    "StreamingCollector",
    "StreamingError",
    "StreamingEvent",
    "StreamingEventType",
    "StreamingMetadata",
    "StreamingToolCall",
    "StreamingToolResult",
    "Tool",
    "from_jaf",
    "from_langgraph",
    "from_openai_agents",
    "from_pydantic_ai",
    "publisher",
    "run_streaming",
    "stream_run",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'runcast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, eagerly
    from runcast.shared.client import (
        AsyncClient,
        AuthenticationError,
        BadRequest,
        ConflictError,
        GatewayUnavailable,
        PermissionDenied,
        RateLimited,
        ResetEvent,
        RetryPolicy,
        RuncastError,
        RunHandle,
        RunNotFound,
        StreamItem,
    )
    from runcast.shared.streaming import (
        StreamConfig,
        StreamingBuffer,
        StreamingChunk,
        StreamingCollector,
        StreamingError,
        StreamingEvent,
        StreamingEventType,
        StreamingMetadata,
        StreamingToolCall,
        StreamingToolResult,
    )
    from runcast.shared.streamlog import RunEnded
    from runcast.shared.sync_client import Client
    from runcast.worker.adapters import from_jaf, from_langgraph, from_openai_agents, from_pydantic_ai
    from runcast.worker.adapters.base import MissingExtra
    from runcast.worker.agents import Agent, ModelSettings, Tool
    from runcast.worker.producer import Publisher, RunAlreadyClaimed, RunNotExternal, RunPublisher, publisher
    from runcast.worker.runnable import RunnableAgent, RunRequest, stream_run
    from runcast.worker.streaming import RunConfig, RunState, StreamingAgent, run_streaming
