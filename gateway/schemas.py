"""Request and response bodies of the HTTP API (SPEC §5)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunStatusName = Literal["queued", "running", "completed", "failed", "cancelled"]


class CreateRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=128, examples=["echo"])
    input: str = Field(examples=["Hello from runcast"])
    metadata: dict[str, Any] | None = None
    external: bool = Field(
        False,
        description="the run's events come from a producer outside runcast's workers (the publish API): no worker "
        "runs it, and `agent` is only its label (it need not be registered by a worker)",
    )


class CreateRunResponse(BaseModel):
    run_id: str
    token: str
    events_url: str
    ws_url: str
    status_url: str


class RunStatus(BaseModel):
    run_id: str
    agent: str
    status: RunStatusName
    created_at: float
    updated_at: float
    last_event_id: str | None


class RunResult(BaseModel):
    content: str
    tool_calls: list[dict[str, Any]]
    tool_results: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    error: dict[str, Any] | None
    is_complete: bool


class AgentInfo(BaseModel):
    name: str
    description: str


class ErrorBody(BaseModel):
    detail: str
