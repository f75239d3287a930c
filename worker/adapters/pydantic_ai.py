"""PydanticAI agents in runcast workers (`pip install 'runcast[pydantic-ai]'`; tested with pydantic-ai-slim 2.68).

`PydanticAIAgent` drives the agent with `agent.iter(...)` and streams every node of the run: a `ModelRequestNode`'s
stream gives the model's response as `PartStartEvent` / `PartDeltaEvent`s (each `TextPartDelta` is one model delta
-> one CHUNK), a `CallToolsNode`'s stream gives `FunctionToolCallEvent` / `FunctionToolResultEvent` (and their
output-tool twins) -> TOOL_CALL / TOOL_RESULT. The model's stream is awaited in the task that iterates the runcast
run, so cancelling that task (cancel, shutdown, job timeout) cancels the model's stream and any tool then running.

Hand-offs. PydanticAI has none built in: its docs hand control from one agent to another by *programmatic hand-off*
(application code runs the next agent with the conversation so far) decided by a typed output. runcast is that
application code: give an agent `handoff_output("support", ...)` in its `output_type` and pass the target agents in
`agents=[...]`; when its run ends with a `Handoff`, the adapter publishes AGENT_SWITCH and runs the target agent on
the whole conversation (`result.all_messages()`, no new prompt), carrying the run's usage over so `usage_limits`
bound the whole chain. *Delegation* (a tool that runs another agent and returns its answer) needs nothing: it is
the parent's TOOL_CALL / TOOL_RESULT, the delegate's own events stay inside the tool.

| PydanticAI | runcast event |
|---|---|
| `ModelRequestNode` | a new model turn (turns and model name in METADATA) |
| `PartStartEvent(TextPart)`, `PartDeltaEvent(TextPartDelta)` | one CHUNK each (the part's first text, the delta) |
| `FunctionToolCallEvent`, `OutputToolCallEvent` | TOOL_CALL (the complete arguments) |
| `FunctionToolResultEvent`, `OutputToolResultEvent` | TOOL_RESULT (`failed` unless the return's `outcome` is success) |
| run output `Handoff` (from `handoff_output`) | AGENT_SWITCH, then the target agent's run in the same runcast run |
| run output `DeferredToolRequests` | ERROR `interrupted` (runcast runs have no approval step) |
| run output that is not streamed text (structured output) | one last CHUNK with the output (JSON for non-text) |
| `agent_run.usage` | `total_tokens` in METADATA (the whole chain's) |
| `UsageLimitExceeded`, `ModelAPIError`, other exceptions | ERROR `usage_limit_exceeded`, `model_error`, `agent_error` |
| thinking parts, tool-call argument deltas, native (provider-run) tools, custom events | not carried |
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.worker.adapters.base import (
    RunEvents,
    TextSoFar,
    ToolClock,
    describe,
    framework_run,
    require_extra,
)
from runcast.worker.providers.base import Message
from runcast.worker.runnable import RunRequest

require_extra("pydantic_ai", framework="PydanticAI", extra="pydantic-ai", package="pydantic-ai-slim")

from pydantic_ai import Agent, ToolOutput  # noqa: E402
from pydantic_ai.exceptions import ModelAPIError, UsageLimitExceeded  # noqa: E402
from pydantic_ai.messages import (  # noqa: E402
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    PartDeltaEvent,
    PartEndEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    ToolCallEvent,
    ToolCallPart,
    ToolResultEvent,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model  # noqa: E402
from pydantic_ai.run import AgentRunResult  # noqa: E402
from pydantic_ai.tools import DeferredToolRequests  # noqa: E402
from pydantic_ai.usage import RunUsage  # noqa: E402
from pydantic_core import to_jsonable_python  # noqa: E402

log = logging.getLogger("runcast.worker.adapters.pydantic_ai")

MAX_HANDOFFS = 100
"""Hand-offs one runcast run may make (a loop of hand-offs is also ended by the usage limits: each is a request)."""
_RESERVED = frozenset({"user_prompt", "message_history", "deps", "usage", "run_id", "conversation"})
_ERROR_TYPES: tuple[tuple[type[BaseException], str], ...] = (
    (UsageLimitExceeded, "usage_limit_exceeded"),
    (ModelAPIError, "model_error"),
)


@dataclass(frozen=True)
class Handoff:
    """A run's output that hands the conversation to another agent (`agent`: its name; `reason`: why)."""

    agent: str
    reason: str = ""


def handoff_output(
    *targets: Agent[Any, Any] | str, name: str = "handoff", description: str | None = None
) -> ToolOutput[Handoff]:
    """An output tool the model calls to hand the conversation to one of `targets` (agents or their names).

    Put it in the agent's `output_type` next to its usual output, e.g. `output_type=[str, handoff_output(support)]`:
    the model then either answers or calls `handoff(agent_name=..., reason=...)`, whose `agent_name` is restricted
    to the targets' names. The run ends with a `Handoff`; `from_pydantic_ai(..., agents=[support])` runs the target.
    """
    names = tuple(target if isinstance(target, str) else _agent_name(target) for target in targets)
    if not names:
        raise ValueError("handoff_output needs at least one agent to hand off to")

    def handoff(agent_name: str, reason: str) -> Handoff:
        return Handoff(agent_name, reason)

    # The model sees the targets as an enum: the argument's annotation is a Literal of their names.
    handoff.__annotations__ = {"agent_name": Literal[names], "reason": str, "return": Handoff}
    default = f"Hand the conversation over to another agent ({', '.join(names)}) that will answer the user; "
    default += "`reason` says why, in a few words."
    return ToolOutput(handoff, name=name, description=description or default)


class PydanticAIAgent:
    """A PydanticAI agent as a runcast `RunnableAgent`.

    - `agent`: the `pydantic_ai.Agent` the run starts with (it needs a `name`, or pass `name=`);
    - `agents`: the agents it (or they) may hand off to with `handoff_output(...)`, by their names;
    - `name` (default: the agent's), `description` (`GET /v1/agents`), `chunking` (else the worker default);
    - `deps`: the run's dependencies, a value or a function of the `RunRequest` (default: None);
    - `run_options`: more `agent.iter(...)` arguments for every run (`model`, `model_settings`, `usage_limits`,
      `instructions`, `toolsets`, `metadata`, ...); the adapter sets the prompt, history, deps, usage and run id.
    """

    def __init__(
        self,
        agent: Agent[Any, Any],
        *,
        agents: Iterable[Agent[Any, Any]] = (),
        name: str | None = None,
        description: str | None = None,
        chunking: StreamConfig | None = None,
        deps: Any = None,
        run_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.name = name or _agent_name(agent)
        self.description = description if description is not None else f"PydanticAI agent {self.name}"
        self.chunking = chunking
        self.agents = {_agent_name(target): target for target in agents}
        reserved = _RESERVED & set(run_options or {})
        if reserved:
            raise ValueError(f"run_options may not set {sorted(reserved)}: the adapter sets them")
        self.deps = deps
        self.run_options = dict(run_options or {})

    def model_name(self, agent: Agent[Any, Any] | None = None) -> str:
        """The model an agent runs on: the run's `model` option, else the agent's own."""
        model = self.run_options.get("model") or (agent or self.agent).model
        if isinstance(model, Model):
            return model.model_name
        return str(model) if model else "unknown"

    def _name_of(self, agent: Agent[Any, Any]) -> str:
        return agent.name or self.name  # only the first agent may be unnamed (then `name=` names it)

    def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        run = RunEvents(request.run_id, self._name_of(self.agent), self.model_name(), trace_id=request.trace_id)
        return framework_run(run, self._run(request, run))

    async def _run(self, request: RunRequest, run: RunEvents) -> AsyncIterator[StreamingEvent]:
        try:
            async for event in self._chain(request, run):
                yield event
        except (UsageLimitExceeded, ModelAPIError) as exc:
            log.info("run %s: the PydanticAI run failed: %s", run.run_id, describe(exc))
            yield run.error(_error_type(exc), describe(exc))

    async def _chain(self, request: RunRequest, run: RunEvents) -> AsyncIterator[StreamingEvent]:
        """The first agent's run, then the run of each agent it hands off to, as one runcast run."""
        agent, prompt, history = self.agent, request.input, to_model_messages(request.history)
        deps = self.deps(request) if callable(self.deps) else self.deps
        translate = Translator(run)
        ended: list[AgentRunResult[Any]] = []
        usage: RunUsage | None = None
        for segment in range(MAX_HANDOFFS + 1):
            # The first run has runcast's run id; each hand-off's run a derived one (PydanticAI refuses a run id
            # that is already in the history, and the previous agent's messages carry it).
            options = {
                "deps": deps,
                "usage": usage,
                "run_id": request.run_id if segment == 0 else f"{request.run_id}:{segment}",
                **self.run_options,
            }
            async for event in self._agent_run(agent, prompt, history, options, translate, ended):
                yield event
            result = ended.pop()
            usage, output = result.usage, result.output
            if not isinstance(output, Handoff):
                for event in self._end(run, translate, output, usage):
                    yield event
                return
            target = self.agents.get(output.agent)
            if target is None:
                raise LookupError(
                    f"{self._name_of(agent)} handed off to {output.agent!r}, which is not in agents=[...]"
                )
            yield run.agent_switch(output.agent, output.reason, from_agent=self._name_of(agent))
            history = result.all_messages(output_tool_return_content=f"Handed off to {output.agent}.")
            agent, prompt = target, None
        raise RuntimeError(f"more than {MAX_HANDOFFS} hand-offs in one run")

    async def _agent_run(
        self,
        agent: Agent[Any, Any],
        prompt: str | None,
        history: list[ModelMessage],
        options: dict[str, Any],
        translate: Translator,
        ended: list[AgentRunResult[Any]],
    ) -> AsyncIterator[StreamingEvent]:
        """One `agent.iter(...)`, every model request and tool-call node streamed; its result goes to `ended`."""
        async with agent.iter(prompt, message_history=history, **options) as agent_run:
            async for node in agent_run:
                if Agent.is_model_request_node(node):
                    translate.new_turn(self.model_name(agent))
                elif not Agent.is_call_tools_node(node):
                    continue
                async with node.stream(agent_run.ctx) as framework_events:
                    async for framework_event in framework_events:
                        for event in translate(framework_event):
                            yield event
            if agent_run.result is None:  # pragma: no cover - iter() ends at End, which always has a result
                raise RuntimeError("the PydanticAI run ended without a result")
            ended.append(agent_run.result)

    @staticmethod
    def _end(run: RunEvents, translate: Translator, output: Any, usage: RunUsage) -> list[StreamingEvent]:
        if isinstance(output, DeferredToolRequests):
            return [
                run.error("interrupted", "the PydanticAI run stopped for deferred tool calls; runcast runs have none")
            ]
        events = translate.final_output(output)
        run.add_tokens(usage.total_tokens)
        return [*events, *run.finish()]


class Translator:
    """PydanticAI stream events of one runcast run -> runcast events (stateful: turns, text per part, tool timing)."""

    def __init__(self, run: RunEvents) -> None:
        self.run = run
        self.parts: dict[int, TextSoFar] = {}
        self.clock = ToolClock()
        self.turn_text = False

    def new_turn(self, model_name: str) -> None:
        self.run.new_turn()
        self.run.model_name = model_name
        self.parts.clear()
        self.turn_text = False

    def __call__(self, event: Any) -> list[StreamingEvent]:
        if isinstance(event, PartStartEvent | PartEndEvent) and isinstance(event.part, TextPart):
            # A start carries the part's first text; an end the whole part (normally nothing new by then). A start
            # for an index seen before replaces that part: only what extends the published text can be added.
            return self._text(event.index, event.part.content)
        if isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
            text = self.parts.setdefault(event.index, TextSoFar())
            return self._text(event.index, text.text + event.delta.content_delta)
        if isinstance(event, ToolCallEvent):
            return [self._tool_call(event.part)]
        if isinstance(event, ToolResultEvent):
            return [self._tool_result(event.part)]
        return []

    def _text(self, index: int, snapshot: str) -> list[StreamingEvent]:
        chunk = self.run.chunk(self.parts.setdefault(index, TextSoFar()).advance(snapshot))
        if chunk is None:
            return []
        self.turn_text = True
        return [chunk]

    def _tool_call(self, part: ToolCallPart) -> StreamingEvent:
        self.clock.start(part.tool_call_id)
        return self.run.tool_call(part.tool_name, part.args_as_dict(), part.tool_call_id)

    def _tool_result(self, part: ToolReturnPart) -> StreamingEvent:
        failed = part.outcome != "success"
        result = to_jsonable_python(part.content, fallback=str)
        elapsed = self.clock.stop(part.tool_call_id)
        return self.run.tool_result(part.tool_name, part.tool_call_id, result, failed=failed, execution_time_ms=elapsed)

    def final_output(self, output: Any) -> list[StreamingEvent]:
        """The run's output when the model did not stream it as text (an output tool's structured answer): one
        CHUNK, so COMPLETE's `content` carries the answer."""
        if isinstance(output, str) and (self.turn_text or not output):
            return []
        text = output if isinstance(output, str) else json.dumps(to_jsonable_python(output, fallback=str))
        self.parts.clear()
        chunk = self.run.chunk(text)
        return [chunk] if chunk is not None else []


def to_model_messages(history: Sequence[Message]) -> list[ModelMessage]:
    """A runcast conversation as PydanticAI messages: user / system / tool messages become parts of a
    `ModelRequest` (consecutive ones share it, as PydanticAI groups tool returns), assistant messages a
    `ModelResponse` with its text and tool calls."""
    messages: list[ModelMessage] = []
    tool_names: dict[str, str] = {}
    for message in history:
        if message.role == "assistant":
            parts: list[ModelResponsePart] = [TextPart(message.content)] if message.content else []
            for call in message.tool_calls:
                function = call.get("function", {})
                call_id, tool_name = str(call.get("id", "")), str(function.get("name", ""))
                tool_names[call_id] = tool_name
                parts.append(ToolCallPart(tool_name, function.get("arguments") or "{}", tool_call_id=call_id))
            if parts:
                messages.append(ModelResponse(parts=parts))
            continue
        part = _request_part(message, tool_names)
        if messages and isinstance(messages[-1], ModelRequest):
            messages[-1] = ModelRequest(parts=[*messages[-1].parts, part])
        else:
            messages.append(ModelRequest(parts=[part]))
    return messages


def _request_part(message: Message, tool_names: Mapping[str, str]) -> ModelRequestPart:
    if message.role == "user":
        return UserPromptPart(message.content)
    if message.role == "system":
        return SystemPromptPart(message.content)
    if message.role == "tool":
        call_id = message.tool_call_id or ""
        tool_name = message.name or tool_names.get(call_id, "")
        return ToolReturnPart(tool_name, message.content, tool_call_id=call_id)
    raise ValueError(f"a conversation message has an unknown role {message.role!r}")


def _agent_name(agent: Agent[Any, Any]) -> str:
    if not agent.name:
        raise ValueError("a PydanticAI agent used by runcast needs a name: Agent(..., name='support')")
    return agent.name


def _error_type(exc: BaseException) -> str:
    return next((error_type for kind, error_type in _ERROR_TYPES if isinstance(exc, kind)), "agent_error")
