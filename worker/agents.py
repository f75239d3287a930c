"""Agents and tools, and the default registry of built-in agents (SPEC §4)."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class ModelSettings:
    model: str | None = None
    temperature: float | None = None
    max_turns: int = 10


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args_model: type[BaseModel]
    fn: Callable[..., Awaitable[Any]]
    timeout_s: float = 30.0


@dataclass(frozen=True)
class Agent:
    name: str
    instructions: str = ""
    tools: tuple[Tool, ...] = ()
    handoffs: tuple[str, ...] = ()
    model_settings: ModelSettings = field(default_factory=ModelSettings)
    description: str = ""


default_registry: dict[str, Agent] = {
    "echo": Agent(
        name="echo",
        instructions="Repeat the user's input back, token by token.",
        description="streams its input back, one token per chunk",
    ),
}


def load_registry(spec: str) -> Mapping[str, Agent]:
    """Load `module:attr`, a mapping of agent name -> Agent (RUNCAST_AGENTS)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"RUNCAST_AGENTS must be 'module:attr', got {spec!r}")
    registry = getattr(importlib.import_module(module_name), attr)
    if not isinstance(registry, Mapping) or not all(isinstance(a, Agent) for a in registry.values()):
        raise TypeError(f"{spec} is not a mapping of name -> Agent")
    return registry
