"""Create runs, read their status and final result, list agents."""

from __future__ import annotations

import json
import time
import weakref
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from redis.asyncio import Redis

from runcast.gateway import conversations
from runcast.gateway.guards import idempotency
from runcast.gateway.guards.auth import cancellable_run, readable_run, require_api_key
from runcast.gateway.schemas import (
    READ_ERRORS,
    AgentInfo,
    CancelResponse,
    ConflictBody,
    CreateRunRequest,
    CreateRunResponse,
    HistoryMessage,
    RunResult,
    RunStatus,
    error_responses,
)
from runcast.gateway.state import GatewayState, get_state
from runcast.shared.conversations import META_CONVERSATION_ID, run_meta_fields
from runcast.shared.doorbell import enqueue_and_ring
from runcast.shared.ids import new_run_id
from runcast.shared.keys import AGENTS_KEY
from runcast.shared.settings import Settings
from runcast.shared.streaming import StreamingBuffer, StreamingEvent
from runcast.shared.streamlog import TERMINAL_STATUSES
from runcast.shared.tokens import issue_token

router = APIRouter(prefix="/v1", tags=["runs"])


@router.get(
    "/agents",
    summary="List the agents",
    response_description="one entry per agent, by name",
    response_model=list[AgentInfo],
    responses=error_responses(503),
)
async def list_agents(state: Annotated[GatewayState, Depends(get_state)]) -> list[AgentInfo]:
    """The agents the running workers serve (each worker registers its registry when it starts), by name."""
    agents = await state.redis.hgetall(AGENTS_KEY)
    return [AgentInfo(name=name, description=text) for name, text in sorted(agents.items())]


def check_input(settings: Settings, text: str) -> None:
    size = len(text.encode())
    if size > settings.max_input_bytes:
        raise HTTPException(413, f"input is {size} bytes; the limit is {settings.max_input_bytes}")


AGENT_SEEN_S = 5.0
"""How long an agent name found in the agents hash is trusted without asking Redis again (workers only add names)."""
_seen: weakref.WeakKeyDictionary[Redis, dict[str, float]] = weakref.WeakKeyDictionary()


async def agent_exists(state: GatewayState, name: str) -> bool:
    """Whether a worker offers `name`: one round trip less per run created when the name was seen recently."""
    seen = _seen.setdefault(state.redis, {})
    now = time.monotonic()
    if seen.get(name, 0.0) > now:
        return True
    if not await state.redis.hexists(AGENTS_KEY, name):
        return False
    seen[name] = now + AGENT_SEEN_S
    return True


async def check_agent(state: GatewayState, agent: str) -> None:
    if not await agent_exists(state, agent):
        known = sorted(await state.redis.hkeys(AGENTS_KEY))
        raise HTTPException(404, f"unknown agent {agent!r}; known agents: {', '.join(known) or 'none'}")


def check_history(settings: Settings, messages: list[HistoryMessage] | None) -> list[dict[str, Any]]:
    """The prior messages as stored: within the limits (else 413), every tool result answering an earlier call."""
    if not messages:
        return []
    if len(messages) > settings.max_history_messages:
        raise HTTPException(
            413, f"{len(messages)} prior messages; the limit is {settings.max_history_messages} (keep the newest)"
        )
    history = [{k: v for k, v in m.model_dump(exclude_none=True).items() if v != []} for m in messages]
    size = len(json.dumps(history, separators=(",", ":"), ensure_ascii=False).encode())
    if size > settings.max_history_bytes:
        raise HTTPException(413, f"prior messages are {size} bytes; the limit is {settings.max_history_bytes}")
    calls: set[str] = set()
    for n, message in enumerate(messages):
        calls.update(call.id for call in message.tool_calls)
        if message.role == "tool" and message.tool_call_id not in calls:
            raise HTTPException(
                422,
                f"messages[{n}] answers tool call {message.tool_call_id!r}, which no earlier assistant message made",
            )
    return history


async def start_run(
    state: GatewayState,
    agent: str,
    input_text: str,
    *,
    metadata: dict[str, Any] | None = None,
    conversation_id: str | None = None,
    plan: conversations.Plan | None = None,
    history: list[dict[str, Any]] | None = None,
    input_id: str | None = None,
    external: bool = False,
    run_id: str | None = None,
) -> str:
    """Claim the conversation (if any), create the run and enqueue its job; the run id (`run_id`, or a new one).
    Nothing is created when the claim fails (409), and the conversation is released again when creating the run
    fails. An `external` run is not enqueued: its own producer publishes it (`runcast.publisher`)."""
    run_id = run_id or new_run_id()
    if conversation_id is not None:
        await conversations.claim(state, conversation_id, run_id, plan)
    try:
        fields = run_meta_fields(conversation_id, history, input_id)
        created = await state.stream_log.create_run(run_id, agent, input_text, metadata, fields, external=external)
        if created and not external:
            await enqueue(state, run_id)
    except BaseException:
        if conversation_id is not None:
            await conversations.release(state, conversation_id, run_id)
        raise
    return run_id


async def enqueue(state: GatewayState, run_id: str) -> None:
    """Queue the run's job and ring the doorbell a waiting worker starts it from at once (not at its next poll), in
    one round trip. Safe to repeat: arq ignores a job id it already holds, and a worker only ever starts a run that
    is still `queued`."""
    await enqueue_and_ring(state.queue, state.settings.queue_name, "run_agent", run_id, run_id)


@router.post(
    "/runs",
    summary="Start a run",
    status_code=202,
    response_description="the run is queued; follow it with `events_url` or `ws_url` and `token`",
    response_model=CreateRunResponse,
    responses={
        **error_responses(
            (400, "a malformed `Idempotency-Key` (1-128 visible ASCII characters)"),
            (401, "RUNCAST_API_KEYS is set and no valid key was sent as `Authorization: Bearer KEY`"),
            (404, "no worker serves this agent"),
            (413, "input over RUNCAST_MAX_INPUT_BYTES, history over its limits, or body over RUNCAST_MAX_BODY_BYTES"),
            (422, "a malformed body, both `messages` and `conversation_id`, or a reused `Idempotency-Key`"),
            (429, "this API key created RUNCAST_CREATE_RATE_LIMIT runs in this window: retry after `Retry-After`"),
            503,
        ),
        409: {"model": ConflictBody, "description": "the conversation has an active run (`active_run_id`)"},
    },
    dependencies=[Depends(require_api_key)],
)
async def create_run(
    body: CreateRunRequest,
    request: Request,
    response: Response,
    state: Annotated[GatewayState, Depends(get_state)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=idempotency.HEADER,
            description="retry-safe creation: a retry with the same key (and body) answers with the same run",
        ),
    ] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> CreateRunResponse:
    """Start a run of `agent` on `input`. With `messages` the agent first sees those prior messages; with
    `conversation_id` it sees the conversation's history, and the run's input and final answer join it when the run
    completes. A conversation has one active run at a time: 409 with `active_run_id` while one is queued or running.
    With an `Idempotency-Key`, a retried create answers with the run the first attempt made
    (`Idempotent-Replayed: true`) and finishes what that attempt left undone; it never starts a second run.
    """
    settings = state.settings
    check_input(settings, body.input)
    history = check_history(settings, body.messages)
    if not body.external:  # an external producer's run: `agent` is only a label
        await check_agent(state, body.agent)
    run_id, replayed = new_run_id(), False
    if idempotency_key is not None:
        bound = await idempotency.claim(state.redis, idempotency_key, authorization, body, run_id, settings.retention_s)
        run_id, replayed = bound.run_id, bound.replayed
    meta = await state.stream_log.get_meta(run_id) if replayed else None
    if meta is None:  # a new run, or a replay of one whose first attempt died before storing it
        await start_run(
            state,
            body.agent,
            body.input,
            metadata=body.metadata,
            conversation_id=body.conversation_id,
            history=history,
            external=body.external,
            run_id=run_id,
        )
    elif meta.get("status") == "queued" and not meta.get("external"):
        await enqueue(state, run_id)  # the first attempt may have died before queueing it
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    events_url = str(request.url_for("run_events", run_id=run_id))
    return CreateRunResponse(
        run_id=run_id,
        token=issue_token(state.secret, run_id, settings.token_ttl_s),
        events_url=events_url,
        ws_url=str(request.url_for("run_ws", run_id=run_id)).replace("http", "ws", 1),
        status_url=str(request.url_for("run_status", run_id=run_id)),
    )


async def load_meta(state: GatewayState, run_id: str) -> dict[str, str]:
    meta = await state.stream_log.get_meta(run_id)
    if meta is None:
        raise HTTPException(404, "no such run (unknown, or expired after its retention period)")
    return meta


@router.get(
    "/runs/{run_id}",
    name="run_status",
    summary="A run's status",
    response_description="the run's status",
    response_model=RunStatus,
    responses=READ_ERRORS,
)
async def run_status(
    run_id: Annotated[str, Depends(readable_run)], state: Annotated[GatewayState, Depends(get_state)]
) -> RunStatus:
    """`queued`, `running`, then `completed`, `failed` or `cancelled`, with the id of the run's last event."""
    meta = await load_meta(state, run_id)
    return RunStatus(
        run_id=run_id,
        agent=meta.get("agent", ""),
        status=meta.get("status", "queued"),  # type: ignore[arg-type]
        created_at=float(meta.get("created_at") or 0),
        updated_at=float(meta.get("updated_at") or 0),
        last_event_id=meta.get("last_event_id") or None,
        conversation_id=meta.get(META_CONVERSATION_ID) or None,
    )


@router.get(
    "/runs/{run_id}/result",
    summary="A finished run's result",
    response_description="the run has ended: its result",
    response_model=RunResult,
    responses={**READ_ERRORS, **error_responses((409, "the run has not ended yet"))},
)
async def run_result(
    run_id: Annotated[str, Depends(readable_run)], state: Annotated[GatewayState, Depends(get_state)]
) -> RunResult:
    """Every event of the run folded into one value: the final text, tool calls and results, metadata, error."""
    meta = await load_meta(state, run_id)
    if meta.get("status") not in TERMINAL_STATUSES:
        raise HTTPException(409, f"run is still {meta.get('status')}; the result exists once it ends")
    entries = await state.stream_log.read_all(run_id)
    buffer = StreamingBuffer.from_events(StreamingEvent.from_json(entry.event) for entry in entries)
    return RunResult(**buffer.to_dict())


@router.post(
    "/runs/{run_id}/cancel",
    summary="Cancel a run",
    status_code=202,
    response_description="the run is cancelled (now, or already before)",
    response_model=CancelResponse,
    responses={
        **READ_ERRORS,
        **error_responses(
            (401, "RUNCAST_API_KEYS is set and no valid key was sent (else: missing, forged or expired token)"),
            (409, "the run had already completed or failed"),
        ),
    },
)
async def cancel_run(
    run_id: Annotated[str, Depends(cancellable_run)], state: Annotated[GatewayState, Depends(get_state)]
) -> CancelResponse:
    """End the run with ERROR `cancelled` (atomic: nothing can be appended after it); its worker stops within ~1 s.

    202 when the run is now cancelled — also when it already was (cancel is idempotent); 409 when it had already
    completed or failed. A queued run never starts.
    """
    meta = await load_meta(state, run_id)
    if meta.get("status") not in TERMINAL_STATUSES:
        await state.stream_log.end_run(run_id, "cancelled", "the run was cancelled by a client")
        meta = await load_meta(state, run_id)
    status = meta.get("status", "")
    if status != "cancelled":
        raise HTTPException(409, f"run already {status}; only a queued or running run can be cancelled")
    return CancelResponse(run_id=run_id, status=status)
