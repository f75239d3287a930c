"""Running one tool call: validate the arguments, run the function under its timeout, never raise."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from runcast.worker.agents import Tool


@dataclass(frozen=True)
class ToolOutcome:
    status: str  # completed | failed
    result: Any
    execution_time_ms: float

    def for_model(self) -> str:
        """The tool message the model reads: the result, or the error prefixed with `Error:`."""
        if self.status != "completed":
            return f"Error: {self.result}"
        return self.result if isinstance(self.result, str) else json.dumps(self.result, default=str)


def parse_arguments(raw: str) -> dict[str, Any]:
    """A streamed tool call's JSON arguments; `{}` when empty. Raises ValueError when not a JSON object."""
    value = json.loads(raw) if raw.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("tool arguments must be a JSON object")
    return value


async def execute_tool(tool: Tool | None, name: str, raw_arguments: str) -> ToolOutcome:
    """Run one call. Bad arguments, an exception or a timeout become a `failed` outcome for the model to read.

    Cancellation (`CancelledError`) is not caught: a cancelled run stops inside its tool.
    """
    started = time.perf_counter()

    def outcome(status: str, result: Any) -> ToolOutcome:
        return ToolOutcome(status, result, round((time.perf_counter() - started) * 1000, 3))

    if tool is None:
        return outcome("failed", f"unknown tool {name!r}")
    try:
        args = tool.args_model.model_validate(parse_arguments(raw_arguments))
    except (ValueError, ValidationError) as exc:
        return outcome("failed", f"invalid arguments for {name}: {exc}")
    try:
        async with asyncio.timeout(tool.timeout_s):
            result = await tool.fn(args)
    except TimeoutError:
        return outcome("failed", f"{name} timed out after {tool.timeout_s:g} s")
    except Exception as exc:
        return outcome("failed", f"{type(exc).__name__}: {exc}")
    return outcome("completed", result)
