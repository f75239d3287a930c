"""LangGraph graphs in runcast workers (`pip install 'runcast[langgraph]'`; tested with langgraph 1.2, langchain-core
1.8).

`LangGraphAgent` streams a compiled graph with `graph.astream(inputs, stream_mode=["messages", "updates"],
subgraphs=True)` and maps what LangGraph reports to runcast events as it happens (`langgraph_events.Translator`):
`messages` gives each model delta as it is produced (`AIMessageChunk`, with the node that speaks), `updates` gives
each node's output (the finished AI message with its `tool_calls`, the `ToolMessage`s of a `ToolNode`). A callback
handler on the run's config (`langgraph_events.ToolWatcher`) times each tool and notices a tool that returns
`Command(goto=...)` (a handoff): it only records, the stream alone decides the order of events.

`subgraphs=True` because multi-agent graphs are usually built from agents that are graphs themselves
(`create_react_agent`, a hand-built sub-graph): without it LangGraph does not stream their tokens at all.

Cancelling the runcast run cancels the task iterating `astream`; LangGraph cancels its running node tasks (and with
them the model's stream and any tool) on the way out and waits for them. Closing the iterator early does the same
(`aclosing`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.worker.adapters.base import RunEvents, describe, framework_run, require_extra
from runcast.worker.providers.base import Message
from runcast.worker.runnable import RunRequest

require_extra("langgraph", framework="LangGraph", extra="langgraph", package="langgraph")

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager  # noqa: E402
from langchain_core.messages import BaseMessage, HumanMessage, convert_to_messages  # noqa: E402
from langgraph.constants import START  # noqa: E402
from langgraph.errors import GraphRecursionError  # noqa: E402

from runcast.worker.adapters.langgraph_events import ToolWatcher, Translator  # noqa: E402

STREAM_MODES = ["messages", "updates"]
DEFAULT_MODEL_NAME = "langgraph"
"""START's model name until a model call reports its own (`ls_model_name`), unless `model_name=` is given."""

Inputs = Callable[[RunRequest], Any]
Config = Mapping[str, Any] | Callable[[RunRequest], Mapping[str, Any]]


class LangGraphAgent:
    """A compiled LangGraph graph as a runcast `RunnableAgent`.

    - `graph`: the compiled graph (`StateGraph(...).compile()`, `create_react_agent(...)`, ...);
    - `name` (default: the graph's name), `description` (`GET /v1/agents`), `chunking` (else the worker default);
    - `first_agent`: the agent START names (default: the node the graph starts at, when it has a single entry edge);
    - `model_name`: the model START names (later METADATA use the model each call reports);
    - `inputs`: the graph's input for a run, a function of the `RunRequest` (default: `{"messages": [history...,
      HumanMessage(input)]}`, see `default_inputs`);
    - `config`: the `RunnableConfig` to run with (`recursion_limit`, `configurable`, your own callbacks, ...), a
      mapping or a function of the `RunRequest`; `configurable.thread_id` defaults to the run id;
    - `context`: LangGraph's run context (`context_schema`), a value or a function of the `RunRequest`;
    - `subgraphs`: stream the tokens of agents that are sub-graphs (default True).
    """

    def __init__(
        self,
        graph: Any,
        *,
        name: str | None = None,
        description: str | None = None,
        chunking: StreamConfig | None = None,
        first_agent: str | None = None,
        model_name: str | None = None,
        inputs: Inputs | None = None,
        config: Config | None = None,
        context: Any = None,
        subgraphs: bool = True,
    ) -> None:
        if not callable(getattr(graph, "astream", None)):
            raise TypeError(
                f"from_langgraph needs a compiled graph (StateGraph(...).compile()), got {type(graph).__name__}"
            )
        self.graph = graph
        graph_name = str(getattr(graph, "name", None) or "LangGraph")
        self.name = name or graph_name
        self.description = description if description is not None else f"LangGraph graph {graph_name}"
        self.chunking = chunking
        self.first_agent = first_agent or entry_node(graph) or graph_name
        self.model_name = model_name or DEFAULT_MODEL_NAME
        self.inputs = inputs or default_inputs
        self.config = config
        self.context = context
        self.subgraphs = subgraphs

    def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        run = RunEvents(request.run_id, self.first_agent, self.model_name, trace_id=request.trace_id)
        return framework_run(run, self._run(request, run))

    async def _run(self, request: RunRequest, run: RunEvents) -> AsyncIterator[StreamingEvent]:
        watcher = ToolWatcher()
        inputs = self.inputs(request)
        translate = Translator(run, watcher, known=_messages_of(inputs))
        options: dict[str, Any] = {"stream_mode": STREAM_MODES, "subgraphs": self.subgraphs}
        if self.context is not None:
            options["context"] = self.context(request) if callable(self.context) else self.context
        stream = self.graph.astream(inputs, self.run_config(request, watcher), **options)
        try:
            async with contextlib.aclosing(stream) as items:
                async for item in items:
                    for event in translate(item):
                        yield event
        except GraphRecursionError as exc:  # LangGraph's step limit: runcast's name for running out of turns
            yield run.error("max_turns_exceeded", describe(exc))
            return
        for event in translate.outcome():
            yield event

    def run_config(self, request: RunRequest, watcher: BaseCallbackHandler) -> dict[str, Any]:
        """The user's config for this run, with the adapter's callback handler added to its callbacks and
        `configurable.thread_id` defaulting to the run id (a graph with a checkpointer needs one)."""
        given = self.config(request) if callable(self.config) else self.config
        config = dict(given or {})
        config["callbacks"] = _with_handler(config.get("callbacks"), watcher)
        config["configurable"] = {"thread_id": request.run_id, **(config.get("configurable") or {})}
        return config


def default_inputs(request: RunRequest) -> dict[str, Any]:
    """A `MessagesState` graph's input: the conversation so far, then the run's input as the user's message."""
    return {"messages": [*to_langchain_messages(request.history), HumanMessage(request.input)]}


def to_langchain_messages(history: Sequence[Message]) -> list[BaseMessage]:
    """runcast conversation messages (OpenAI-shaped) as LangChain messages, tool calls and their ids carried over.
    Tool-call arguments that are not a JSON object are kept under `_raw` (LangChain's tool calls hold objects)."""
    return convert_to_messages([_openai_message(message) for message in history])


def _openai_message(message: Message) -> dict[str, Any]:
    shaped: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        shaped["tool_calls"] = [
            {**call, "function": {**call.get("function", {}), "arguments": _json_object(call)}}
            for call in message.tool_calls
        ]
    if message.tool_call_id is not None:
        shaped["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        shaped["name"] = message.name
    return shaped


def _json_object(call: Mapping[str, Any]) -> str:
    arguments = call.get("function", {}).get("arguments") or "{}"
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError):
        parsed = None
    return arguments if isinstance(parsed, dict) else json.dumps({"_raw": arguments})


def entry_node(graph: Any) -> str | None:
    """The node a `StateGraph` starts at, when it has exactly one plain edge from START (else None)."""
    builder = getattr(graph, "builder", None)
    if builder is None or getattr(builder, "branches", {}).get(START):
        return None
    targets = [end for start, end in getattr(builder, "edges", ()) if start == START]
    return targets[0] if len(targets) == 1 else None


def _with_handler(callbacks: Any, handler: BaseCallbackHandler) -> Any:
    if callbacks is None:
        return [handler]
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        return manager
    return [*callbacks, handler]


def _messages_of(inputs: Any) -> list[BaseMessage]:
    messages = inputs.get("messages") if isinstance(inputs, Mapping) else None
    return [m for m in messages or () if isinstance(m, BaseMessage)]
