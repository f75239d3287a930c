"""The streaming protocol every model provider speaks: an async iterator of text and tool-call deltas.

A provider streams one model turn. It yields `TextDelta`s as text arrives, `ToolCallDelta`s (pieces of tool calls;
pieces with the same `index` belong to one call, the runner assembles them) and at most one `Usage`. A failure
raises `ModelError`; the runner turns it into an ERROR event (`model_error`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Message:
    """One message of the conversation, in the shape of OpenAI's chat messages.

    `tool_calls` (assistant messages) are OpenAI-style dicts: `{"id", "type": "function", "function": {"name",
    "arguments"}}`; `tool_call_id` and `name` identify which call a `tool` message answers.
    """

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

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


ModelDelta = TextDelta | ToolCallDelta | Usage


@dataclass(frozen=True)
class ToolSpec:
    """A tool as the model sees it: name, description and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


class ModelProvider(Protocol):
    name: str

    def stream(
        self,
        *,
        agent_name: str,
        model: str | None,
        messages: list[Message],
        tools: list[ToolSpec],
        temperature: float | None = None,
    ) -> AsyncIterator[ModelDelta]: ...


class ModelError(Exception):
    """The model failed; becomes an ERROR event with error_type `model_error`."""
