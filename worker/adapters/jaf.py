"""jaf-py agents in runcast workers (`pip install 'runcast[jaf]'`; tested with jaf-py 2.6.22).

`JafAgent` runs `jaf.core.engine.run` with its own `RunConfig.on_event` and maps jaf's trace events to runcast
events as they happen. jaf reports a streamed answer as `AssistantMessageEvent`s whose message holds the text *so
far* (one per model delta, when the provider has `get_completion_stream`): the adapter publishes the new part of
each as one CHUNK, so a jaf agent streams token by token through runcast instead of jaf's own `run_streaming`,
which waits for the end of the run and slices the final text.

| jaf event | runcast event |
|---|---|
| `LLMCallStartEvent` | (a new model turn: turns and the agent's model in METADATA) |
| `AssistantMessageEvent` (text so far) | CHUNK with the new text (nothing when only tool-call pieces changed) |
| `LLMCallEndEvent` | usage -> tokens in METADATA; a turn that streamed nothing publishes its text as one CHUNK |
| `ToolCallStartEvent`, `ToolCallEndEvent` | TOOL_CALL / TOOL_RESULT (the tool's own result; `failed` unless success) |
| `HandoffEvent` | AGENT_SWITCH (reason: the handoff tool's message) |
| `RunEndEvent` completed / error | METADATA + COMPLETE / ERROR (`max_turns_exceeded` or `agent_error`, jaf's error) |
| `RunEndEvent` interrupted (tool approval) | ERROR `interrupted` (runcast runs have no approval step) |
| guardrail, memory, output-parse, retry, fallback events | not carried (a violation ends the run: ERROR) |

`on_event` is synchronous and jaf calls it on the event loop's thread, in the middle of its streaming loop: it only
appends to an unbounded queue (`CallbackStream.push`), so it never blocks jaf and never reorders events; the
translation happens in the consumer. Agents run as tools (`agent.as_tool()`) are sub-runs reporting through the
same callback: their events are recognised by run id (and the parent's model is never streaming while its tools
run), so they appear only as the parent's TOOL_CALL / TOOL_RESULT. Cancelling the runcast run cancels jaf's task.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.worker.adapters.base import (
    CallbackStream,
    RunEvents,
    TextSoFar,
    ToolClock,
    field_of,
    framework_run,
    maybe_json,
    require_extra,
)
from runcast.worker.providers.base import Message
from runcast.worker.runnable import RunRequest

# jaf imports litellm, which fetches a model price list from GitHub at import unless told not to: a worker must not
# stall on the network at start (offline: three retries, ~10 s). A user who wants the live list sets it to False.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
require_extra("jaf", framework="jaf-py", extra="jaf", package="jaf-py")

from jaf.core.engine import run as jaf_run  # noqa: E402
from jaf.core.types import (  # noqa: E402
    ContentRole,
    RunConfig,
    RunId,
    RunState,
    ToolCall,
    ToolCallFunction,
    TraceId,
)
from jaf.core.types import Message as JafMessage  # noqa: E402

log = logging.getLogger("runcast.worker.adapters.jaf")

_RESERVED = frozenset({"agent_registry", "model_provider", "on_event"})


class JafAgent:
    """A jaf-py agent as a runcast `RunnableAgent`.

    - `agent`, `model_provider`: the jaf `Agent` the run starts with and the jaf model provider (anything with
      `get_completion`, and `get_completion_stream` to stream tokens: without it each turn is one CHUNK);
    - `agents`: the other jaf agents it may hand off to (jaf's `agent_registry`; checked here);
    - `name` (default: the jaf agent's), `description` (`GET /v1/agents`), `chunking` (else the worker default);
    - `context`: jaf's run context for tools, a value or a function of the `RunRequest` (default: the run's
      `metadata` dict);
    - `on_event`: your own jaf `on_event`, called after runcast's (its exceptions are logged, never raised);
    - `run_config`: more `jaf.RunConfig` fields (`max_turns`, `model_override`, guardrails, `memory`, ...).
    """

    def __init__(
        self,
        agent: Any,
        model_provider: Any,
        *,
        agents: Iterable[Any] = (),
        name: str | None = None,
        description: str | None = None,
        chunking: StreamConfig | None = None,
        context: Any = None,
        on_event: Callable[[Any], None] | None = None,
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.agent = agent
        self.model_provider = model_provider
        self.name = name or agent.name
        self.description = description if description is not None else f"jaf-py agent {agent.name}"
        self.chunking = chunking
        self.registry = {a.name: a for a in (agent, *agents)}
        for jaf_agent in self.registry.values():
            missing = [target for target in jaf_agent.handoffs or () if target not in self.registry]
            if missing:
                raise ValueError(f"jaf agent {jaf_agent.name!r} hands off to {missing}: pass them in agents=[...]")
        reserved = _RESERVED & set(run_config or {})
        if reserved:
            raise ValueError(f"run_config may not set {sorted(reserved)}: the adapter sets them")
        self.context = context
        self.user_on_event = on_event
        self.run_config = dict(run_config or {})

    def model_name(self, agent_name: str | None = None) -> str:
        """The model an agent runs on, as jaf would pick it; else the provider's `model` or its class name (jaf's
        own fallback, "gpt-4o", says nothing about a provider that ignores it)."""
        agent = self.registry.get(agent_name or self.agent.name, self.agent)
        configured = agent.model_config.name if agent.model_config else None
        return (
            configured
            or self.run_config.get("model_override")
            or getattr(self.model_provider, "model", None)
            or type(self.model_provider).__name__
        )

    def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        run = RunEvents(request.run_id, self.agent.name, self.model_name(), trace_id=request.trace_id)
        return framework_run(run, self._run(request, run))

    async def _run(self, request: RunRequest, run: RunEvents) -> AsyncIterator[StreamingEvent]:
        bridge: CallbackStream[Any] = CallbackStream()
        config = RunConfig(
            agent_registry=self.registry,
            model_provider=self.model_provider,
            on_event=self._on_event(bridge),
            **self.run_config,
        )
        state = RunState(
            run_id=RunId(request.run_id),
            trace_id=TraceId(request.trace_id or request.run_id),
            messages=[*map(to_jaf_message, request.history), JafMessage(role=ContentRole.USER, content=request.input)],
            current_agent_name=self.agent.name,
            context=self.context(request) if callable(self.context) else _default(self.context, request),
            turn_count=0,
        )
        translate = Translator(run, request.run_id, self.model_name)
        async with contextlib.aclosing(bridge.items(jaf_run(state, config))) as reported:  # type: ignore[type-var]
            async for jaf_event in reported:
                for event in translate(jaf_event):
                    yield event
                    if event.is_terminal:
                        return
        # jaf's run() always reports its end; if it ever does not, its result still decides how the run ends
        for event in translate.outcome(field_of(bridge.result, "outcome")):
            yield event

    def _on_event(self, bridge: CallbackStream[Any]) -> Callable[[Any], None]:
        user = self.user_on_event

        def on_event(event: Any) -> None:
            bridge.push(event)
            if user is not None:
                try:
                    user(event)
                except Exception:
                    log.exception("the on_event given to JafAgent %r failed", self.name)

        return on_event


class Translator:
    """jaf trace events of one run -> runcast events (stateful: turns, text so far, tool timing, sub-runs)."""

    def __init__(self, run: RunEvents, run_id: str, model_for: Callable[[str], str]) -> None:
        self.run = run
        self.run_id = run_id
        self.model_for = model_for
        self.text = TextSoFar()
        self.clock = ToolClock()
        self.sub_runs: set[str] = set()
        self.calls = 0
        self.handoff_reasons: dict[str, str] = {}
        self.handlers: dict[str, Callable[[Any], list[StreamingEvent]]] = {
            "llm_call_start": self._llm_call_start,
            "assistant_message": self._assistant_message,
            "llm_call_end": self._llm_call_end,
            "tool_call_start": self._tool_call_start,
            "tool_call_end": self._tool_call_end,
            "handoff": self._handoff,
            "run_end": self._run_end,
        }

    def __call__(self, event: Any) -> list[StreamingEvent]:
        kind, data = getattr(event, "type", ""), getattr(event, "data", None)
        run_id = field_of(data, "run_id")
        if run_id is not None and str(run_id) != self.run_id:
            if kind == "run_start":
                self.sub_runs.add(str(run_id))
            elif kind == "run_end":
                self.sub_runs.discard(str(run_id))
            return []  # an agent-as-tool's own run: it shows as the parent's tool call
        if run_id is None and self.sub_runs:
            return []  # events without a run id (model text, handoffs) while a sub-run is going are the sub-run's
        handler = self.handlers.get(str(kind))
        return handler(data) if handler is not None else []

    def _llm_call_start(self, data: Any) -> list[StreamingEvent]:
        self.run.new_turn()
        self.text.reset()
        self.run.model_name = self.model_for(str(field_of(data, "agent_name") or self.run.agent_name))
        return []

    def _assistant_message(self, data: Any) -> list[StreamingEvent]:
        return self._text(_text_of(field_of(field_of(data, "message"), "content")))

    def _llm_call_end(self, data: Any) -> list[StreamingEvent]:
        usage = field_of(data, "usage") or {}
        total = field_of(usage, "total_tokens")
        if total is None and usage:
            total = (field_of(usage, "prompt_tokens") or 0) + (field_of(usage, "completion_tokens") or 0)
        self.run.add_tokens(total)
        # A provider without get_completion_stream (or jaf's fallback after a failed stream): the turn's text
        # arrives whole here, or completes what was streamed (nothing new when everything was streamed).
        return self._text(_text_of(field_of(field_of(field_of(data, "choice"), "message"), "content")))

    def _text(self, content: str) -> list[StreamingEvent]:
        chunk = self.run.chunk(self.text.advance(content))
        return [chunk] if chunk is not None else []

    def _tool_call_start(self, data: Any) -> list[StreamingEvent]:
        self.calls += 1
        call_id = str(field_of(data, "call_id") or f"call_{self.run.turns}_{self.calls}")
        self.clock.start(call_id)
        return [self.run.tool_call(str(field_of(data, "tool_name")), field_of(data, "args"), call_id)]

    def _tool_call_end(self, data: Any) -> list[StreamingEvent]:
        call_id = str(field_of(data, "call_id") or "")
        result = tool_output(field_of(data, "result"))
        handoff = maybe_json(result)
        if isinstance(handoff, dict) and "handoff_to" in handoff:
            self.handoff_reasons[str(handoff["handoff_to"])] = str(handoff.get("message") or "")
        failed = (field_of(data, "execution_status") or "success") != "success"
        elapsed = self.clock.stop(call_id)
        return [
            self.run.tool_result(
                str(field_of(data, "tool_name")), call_id, result, failed=failed, execution_time_ms=elapsed
            )
        ]

    def _handoff(self, data: Any) -> list[StreamingEvent]:
        source, target = str(field_of(data, "from_") or field_of(data, "from") or ""), str(field_of(data, "to"))
        return [self.run.agent_switch(target, self.handoff_reasons.pop(target, ""), from_agent=source or None)]

    def _run_end(self, data: Any) -> list[StreamingEvent]:
        return self.outcome(field_of(data, "outcome"))

    def outcome(self, outcome: Any) -> list[StreamingEvent]:
        status = field_of(outcome, "status")
        if status == "completed":
            return self.run.finish()
        if status == "interrupted":
            return [self.run.error("interrupted", "the jaf run stopped for a tool approval; runcast runs have none")]
        error = field_of(outcome, "error") or {}
        tag = str(field_of(error, "_tag") or type(error).__name__)
        error_type = "max_turns_exceeded" if tag == "MaxTurnsExceeded" else "agent_error"
        return [self.run.error(error_type, f"{tag}: {error_detail(error)}")]


def error_detail(error: Any) -> str:
    """A jaf error (`ModelBehaviorError(detail=...)`, `MaxTurnsExceeded(turns=...)`, ...) as text."""
    for key in ("detail", "reason"):
        value = field_of(error, key)
        if value:
            return str(value)
    fields = error.items() if isinstance(error, dict) else vars(error).items() if hasattr(error, "__dict__") else ()
    return ", ".join(f"{k}={v}" for k, v in fields if k != "_tag") or str(error)


def tool_output(raw: Any) -> Any:
    """What the tool itself returned: jaf wraps it as `{"hitl_status", "result" | "message", ...}` for the model."""
    wrapped = maybe_json(raw)
    if isinstance(wrapped, dict) and "hitl_status" in wrapped:
        return wrapped.get("result", wrapped.get("message", raw))
    return raw


def to_jaf_message(message: Message) -> JafMessage:
    """A runcast conversation message as a jaf message (roles, tool calls and tool-call ids carried over)."""
    calls = [
        ToolCall(
            id=call.get("id", ""),
            type="function",
            function=ToolCallFunction(
                name=call.get("function", {}).get("name", ""),
                arguments=call.get("function", {}).get("arguments", ""),
            ),
        )
        for call in message.tool_calls
    ]
    return JafMessage(
        role=ContentRole(message.role),
        content=message.content,
        tool_call_id=message.tool_call_id,
        tool_calls=calls or None,
    )


def _default(context: Any, request: RunRequest) -> Any:
    return dict(request.metadata) if context is None else context


def _text_of(content: Any) -> str:
    """A jaf message's content: a string, or content parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(field_of(part, "text") or "") for part in content if field_of(part, "type") == "text")
    return ""
