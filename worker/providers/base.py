"""The streaming protocol every model provider speaks: an async iterator of text and tool-call deltas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant | tool
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """One piece of a streamed tool call; pieces with the same `index` belong to one call."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


ModelDelta = TextDelta | ToolCallDelta | Usage


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]


class ModelProvider(Protocol):
    name: str

    def stream(
        self, *, agent_name: str, model: str | None, messages: list[Message], tools: list[ToolSpec]
    ) -> AsyncIterator[ModelDelta]: ...


class ModelError(Exception):
    """The model failed; becomes an ERROR event with error_type `model_error`."""
