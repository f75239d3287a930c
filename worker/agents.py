"""Agents and tools, and the default registry of built-in agents (SPEC §4)."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from runcast.shared.streaming import StreamConfig, StreamingEvent
from runcast.worker.calculator import evaluate
from runcast.worker.providers.base import ModelProvider, ToolSpec
from runcast.worker.runnable import RunnableAgent, RunRequest, check_runnable

HANDOFF_PREFIX = "transfer_to_"


@dataclass(frozen=True)
class ModelSettings:
    """Per agent: the model (default RUNCAST_MODEL), its temperature, and the turns a run may take before it ends with
    ERROR `max_turns_exceeded`."""

    model: str | None = None
    temperature: float | None = None
    max_turns: int = 10


@dataclass(frozen=True)
class Tool:
    """A function the model may call. `fn` receives the validated `args_model` instance and returns the result
    (anything JSON-serialisable). A tool that raises or exceeds `timeout_s` gives the model its error as the
    result; the run goes on."""

    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[[Any], Awaitable[Any]]
    timeout_s: float = 30.0

    def spec(self) -> ToolSpec:
        """The tool as the model sees it: name, description, JSON schema of `args_model`."""
        return ToolSpec(self.name, self.description, self.args_model.model_json_schema())


@dataclass(frozen=True)
class Agent:
    """An agent: instructions (its system prompt), tools, the agents it may hand off to, and model settings.

    `chunking` overrides the worker's default chunking policy for this agent's text; `provider` overrides the
    worker's model provider (e.g. one agent on an OpenAI-compatible endpoint, the others scripted).
    """

    name: str
    instructions: str = ""
    tools: tuple[Tool, ...] = ()
    handoffs: tuple[str, ...] = ()
    model_settings: ModelSettings = field(default_factory=ModelSettings)
    description: str = ""
    chunking: StreamConfig | None = None
    provider: ModelProvider | None = None

    def tool(self, name: str) -> Tool | None:
        """This agent's tool called `name`, if any."""
        return next((t for t in self.tools if t.name == name), None)

    def tool_specs(self) -> list[ToolSpec]:
        """The tools the model sees: this agent's tools, then one `transfer_to_<agent>` per handoff."""
        specs = [t.spec() for t in self.tools]
        specs += [
            ToolSpec(
                f"{HANDOFF_PREFIX}{target}",
                f"Hand the conversation over to the {target!r} agent.",
                HandoffArgs.model_json_schema(),
            )
            for target in self.handoffs
        ]
        return specs

    def handoff_target(self, tool_name: str) -> str | None:
        """The agent a tool call hands off to, or None when it is an ordinary tool."""
        if tool_name.startswith(HANDOFF_PREFIX) and tool_name[len(HANDOFF_PREFIX) :] in self.handoffs:
            return tool_name[len(HANDOFF_PREFIX) :]
        return None

    def stream(self, request: RunRequest) -> AsyncIterator[StreamingEvent]:
        """The RunnableAgent interface: runcast's own run loop (`runcast.worker.runner`) on the request."""
        from runcast.worker.runner import run_agent_events  # the runner imports this module

        provider = self.provider or request.provider
        if provider is None:
            raise ValueError(f"agent {self.name!r} has no model provider: the request brings none and it has none")
        own = {name: agent for name, agent in request.registry.items() if isinstance(agent, Agent)}
        return run_agent_events(
            self,
            request.input,
            provider,
            registry=own or {self.name: self},
            run_id=request.run_id,
            trace_id=request.trace_id,
            history=list(request.history),
        )


class HandoffArgs(BaseModel):
    reason: str = Field("", description="why the conversation is handed over")


class CalculatorArgs(BaseModel):
    expression: str = Field(description="an arithmetic expression, e.g. '2 + 3 * 4'", max_length=200)


async def calculate(args: CalculatorArgs) -> int | float:
    return evaluate(args.expression)


calculator = Tool(
    name="calculator",
    description="Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
    args_model=CalculatorArgs,
    fn=calculate,
    timeout_s=5.0,
)

default_registry: dict[str, Agent] = {
    "echo": Agent(
        name="echo",
        instructions="Repeat the user's input back, token by token.",
        description="streams its input back, one token per chunk",
    ),
    "demo": Agent(
        name="demo",
        instructions="Answer arithmetic questions. Use the calculator tool for any arithmetic, then answer.",
        tools=(calculator,),
        description="calls the calculator tool on the arithmetic in the input, then answers",
    ),
    "triage": Agent(
        name="triage",
        instructions="Route the user to the right agent. Arithmetic goes to the demo agent.",
        handoffs=("demo",),
        description="hands the conversation off to demo",
    ),
    "chat": Agent(
        name="chat",
        instructions=(
            "You are a friendly assistant in a conversation. Start each answer by saying how many earlier messages "
            "of this conversation you can see and what the user said before, then answer."
        ),
        description="remembers the conversation: says how many earlier messages it sees and what you said before",
    ),
}


def load_registry(spec: str) -> Mapping[str, RunnableAgent]:
    """Load `module:attr`, a mapping of agent name -> runnable agent (RUNCAST_AGENTS): runcast `Agent`s and
    framework adapters (`from_jaf(...)`, ...) side by side."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"RUNCAST_AGENTS must be 'module:attr', got {spec!r}")
    registry = getattr(importlib.import_module(module_name), attr)
    if not isinstance(registry, Mapping):
        raise TypeError(f"{spec} is not a mapping of name -> agent")
    for name, agent in registry.items():
        check_runnable(name, agent)
        if not isinstance(agent, Agent):
            continue  # a framework's handoffs stay inside that framework
        missing = [target for target in agent.handoffs if target not in registry]
        if missing:
            raise ValueError(f"agent {agent.name!r} hands off to unknown agents: {', '.join(missing)}")
        foreign = [target for target in agent.handoffs if not isinstance(registry[target], Agent)]
        if foreign:
            raise ValueError(
                f"agent {agent.name!r} hands off to {', '.join(foreign)}, which runcast's run loop cannot continue "
                "(a runcast Agent hands off to runcast Agents; a framework agent's handoffs stay in its framework)"
            )
    return registry
