"""Create runs, read their status and final result, list agents."""

from __future__ import annotations

import time
import weakref
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel
from redis.asyncio import Redis

from runcast.gateway.guards.auth import readable_run, require_api_key, valid_run_id
from runcast.gateway.schemas import AgentInfo, CreateRunRequest, CreateRunResponse, ErrorBody, RunResult, RunStatus
from runcast.gateway.state import GatewayState, get_state
from runcast.shared.doorbell import enqueue_and_ring
from runcast.shared.ids import new_run_id
from runcast.shared.keys import AGENTS_KEY
from runcast.shared.streaming import StreamingBuffer, StreamingEvent
from runcast.shared.streamlog import TERMINAL_STATUSES
from runcast.shared.tokens import issue_token

router = APIRouter(prefix="/v1", tags=["runs"])

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 404)}


@router.get("/agents", response_model=list[AgentInfo])
async def list_agents(state: Annotated[GatewayState, Depends(get_state)]) -> list[AgentInfo]:
    agents = await state.redis.hgetall(AGENTS_KEY)
    return [AgentInfo(name=name, description=text) for name, text in sorted(agents.items())]


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


@router.post(
    "/runs",
    status_code=202,
    response_model=CreateRunResponse,
    responses={**_ERRORS, 413: {"model": ErrorBody}},
    dependencies=[Depends(require_api_key)],
)
async def create_run(
    body: CreateRunRequest, request: Request, state: Annotated[GatewayState, Depends(get_state)]
) -> CreateRunResponse:
    settings = state.settings
    size = len(body.input.encode())
    if size > settings.max_input_bytes:
        raise HTTPException(413, f"input is {size} bytes; the limit is {settings.max_input_bytes}")
    if not await agent_exists(state, body.agent):
        known = sorted(await state.redis.hkeys(AGENTS_KEY))
        raise HTTPException(404, f"unknown agent {body.agent!r}; known agents: {', '.join(known) or 'none'}")
    run_id = new_run_id()
    await state.stream_log.create_run(run_id, body.agent, body.input, body.metadata)
    # arq's job, and the doorbell a waiting worker starts it from at once (not at its next poll), in one round trip
    await enqueue_and_ring(state.queue, settings.queue_name, "run_agent", run_id, run_id)
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


@router.get("/runs/{run_id}", name="run_status", response_model=RunStatus, responses=_ERRORS)
async def run_status(
    run_id: Annotated[str, Depends(readable_run)], state: Annotated[GatewayState, Depends(get_state)]
) -> RunStatus:
    meta = await load_meta(state, run_id)
    return RunStatus(
        run_id=run_id,
        agent=meta.get("agent", ""),
        status=meta.get("status", "queued"),  # type: ignore[arg-type]
        created_at=float(meta.get("created_at") or 0),
        updated_at=float(meta.get("updated_at") or 0),
        last_event_id=meta.get("last_event_id") or None,
    )


@router.get("/runs/{run_id}/result", response_model=RunResult, responses={**_ERRORS, 409: {"model": ErrorBody}})
async def run_result(
    run_id: Annotated[str, Depends(readable_run)], state: Annotated[GatewayState, Depends(get_state)]
) -> RunResult:
    meta = await load_meta(state, run_id)
    if meta.get("status") not in TERMINAL_STATUSES:
        raise HTTPException(409, f"run is still {meta.get('status')}; the result exists once it ends")
    entries = await state.stream_log.read_all(run_id)
    buffer = StreamingBuffer.from_events(StreamingEvent.from_json(entry.event) for entry in entries)
    return RunResult(**buffer.to_dict())


class CancelResponse(BaseModel):
    run_id: str
    status: str


def cancellable_run(
    run_id: Annotated[str, Depends(valid_run_id)],
    state: Annotated[GatewayState, Depends(get_state)],
    token: Annotated[str | None, Query(max_length=512, description="the run token, when no API keys are set")] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> str:
    """With RUNCAST_API_KEYS set, cancelling needs an API key (like creating); otherwise the run's own token."""
    if state.settings.api_keys:
        require_api_key(state, authorization)
        return run_id
    return readable_run(run_id, state, token, authorization)


@router.post(
    "/runs/{run_id}/cancel",
    status_code=202,
    response_model=CancelResponse,
    responses={**_ERRORS, 409: {"model": ErrorBody}},
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
