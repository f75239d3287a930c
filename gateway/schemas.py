"""Request and response bodies of the HTTP API (SPEC §5), and the error answers routes declare in OpenAPI.

Field descriptions end up in docs/http-api.md (`make docs` renders the app's OpenAPI there).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runcast.shared.conversations import CONVERSATION_ID_RE

RunStatusName = Literal["queued", "running", "completed", "failed", "cancelled"]


class ToolCallFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    arguments: str = Field("", description="the call's arguments as a JSON string")


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: ToolCallFunction


class HistoryMessage(BaseModel):
    """One earlier message of the conversation, in the shape of OpenAI's chat messages."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list, description="assistant messages: the calls it made")
    tool_call_id: str | None = Field(None, max_length=256, description="tool messages: the call this answers")
    name: str | None = Field(None, max_length=256, description="tool messages: the tool's name")

    @model_validator(mode="after")
    def _shape(self) -> HistoryMessage:
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("tool messages, and only they, need a tool_call_id")
        return self


class CreateRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=128, examples=["echo"], description="a name from `GET /v1/agents`")
    input: str = Field(
        examples=["Hello from runcast"], description="the user's message; at most RUNCAST_MAX_INPUT_BYTES (UTF-8)"
    )
    metadata: dict[str, Any] | None = Field(None, description="any JSON object, stored with the run")
    external: bool = Field(
        False,
        description="the run's events come from a producer outside runcast's workers (the publish API): no worker "
        "runs it, and `agent` is only its label (it need not be registered by a worker)",
    )
    messages: list[HistoryMessage] | None = Field(
        None,
        description="prior messages the agent sees before `input` (at most RUNCAST_MAX_HISTORY_MESSAGES messages and "
        "RUNCAST_MAX_HISTORY_BYTES bytes of JSON, else 413); not together with `conversation_id`",
    )
    conversation_id: str | None = Field(
        None,
        pattern=CONVERSATION_ID_RE.pattern,
        examples=["support-chat-42"],
        description="continue this conversation: the agent sees its history, and the run's input and final answer "
        "are added to it when the run completes. One active run per conversation (409 otherwise)",
    )

    @model_validator(mode="after")
    def _one_history(self) -> CreateRunRequest:
        if self.messages is not None and self.conversation_id is not None:
            raise ValueError("give either messages or conversation_id, not both")
        if self.external and self.conversation_id is not None:
            raise ValueError("an external run cannot continue a conversation (runcast's worker records its turns)")
        return self


class CreateRunResponse(BaseModel):
    run_id: str = Field(description="32 hex characters (a uuid4)")
    token: str = Field(description="reads this run only (status, events, result); valid RUNCAST_TOKEN_TTL_S")
    events_url: str = Field(description="the SSE stream of the run's events")
    ws_url: str = Field(description="the same events over WebSocket")
    status_url: str = Field(description="the run's status")


class RunStatus(BaseModel):
    run_id: str
    agent: str
    status: RunStatusName
    created_at: float = Field(description="Unix time")
    updated_at: float = Field(description="Unix time of the last event")
    last_event_id: str | None = Field(description="the stream entry id of the last event, if any")
    conversation_id: str | None = Field(None, description="the conversation this run continues, if any")


class RunResult(BaseModel):
    """The run's events folded into one value (the seed's `StreamingBuffer`)."""

    content: str = Field(description="the final text")
    tool_calls: list[dict[str, Any]]
    tool_results: list[dict[str, Any]]
    metadata: dict[str, Any] | None = Field(description="the METADATA event's data: agent, model, turns, usage")
    error: dict[str, Any] | None = Field(description="the ERROR event's data when the run failed or was cancelled")
    is_complete: bool = Field(description="true when the run ended with COMPLETE")


class AgentInfo(BaseModel):
    name: str
    description: str


class CancelResponse(BaseModel):
    run_id: str
    status: str = Field(description='"cancelled"')


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    detail: str | None = Field(None, description="why not, when not ready")


class ErrorBody(BaseModel):
    detail: str = Field(description="what was wrong, in a sentence")


ERROR_MEANINGS: dict[int, str] = {
    400: "malformed run id or resume id (or one after the run's last event)",
    401: "missing, forged or expired token",
    403: "the token is another run's",
    404: "unknown run, or expired after RUNCAST_RETENTION_S",
    503: "the event store (Redis) is unreachable: retry after `Retry-After`",
}
"""What each error status means on the routes that read one run."""


def error_responses(*entries: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers (`{"detail": ...}`): a status with its usual meaning (`ERROR_MEANINGS`), or
    `(status, what it means on this route)`."""
    described = dict(entry if isinstance(entry, tuple) else (entry, ERROR_MEANINGS[entry]) for entry in entries)
    return {status: {"model": ErrorBody, "description": described[status]} for status in sorted(described)}


READ_ERRORS = error_responses(400, 401, 403, 404, 503)
"""The error answers of every route that reads one run with its token."""


class ConflictBody(BaseModel):
    detail: str
    active_run_id: str | None = Field(None, description="the run that holds the conversation")


class ConversationOut(BaseModel):
    conversation_id: str
    messages: list[dict[str, Any]] = Field(description="the history, oldest first (role, content, ...)")
    active_run_id: str | None = Field(description="the conversation's queued or running run, if any")
    pending_message: dict[str, Any] | None = Field(
        None, description="the user message the active run answers; it joins `messages` when the run completes"
    )
