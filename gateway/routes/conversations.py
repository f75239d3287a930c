"""Read a conversation runcast keeps: its history and its active run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from runcast.gateway import conversations
from runcast.gateway.guards.auth import require_api_key
from runcast.gateway.schemas import ConversationOut, error_responses
from runcast.gateway.state import GatewayState, get_state
from runcast.shared.conversations import CONVERSATION_ID_RE, META_INPUT_ID

router = APIRouter(prefix="/v1", tags=["runs"])


@router.get(
    "/conversations/{conversation_id}",
    summary="Read a conversation's history",
    response_model=ConversationOut,
    response_description="the history runcast keeps, and the active run if any",
    responses=error_responses((401, "RUNCAST_API_KEYS is set and no valid key was sent")),
    dependencies=[Depends(require_api_key)],
)
async def get_conversation(
    conversation_id: Annotated[str, Path(pattern=CONVERSATION_ID_RE.pattern, description="the conversation id")],
    state: Annotated[GatewayState, Depends(get_state)],
) -> ConversationOut:
    """The conversation's history (empty for an unknown or expired one), its queued or running run if any, and the
    user message that run answers (`pending_message`: it joins `messages` when the run completes). Needs an API key
    when RUNCAST_API_KEYS is set (like creating runs)."""
    messages = await conversations.store_of(state).messages(conversation_id)
    active = await conversations.active_run(state, conversation_id)
    pending = None
    meta = await state.stream_log.get_meta(active) if active else None
    if meta is not None:
        pending = {"role": "user", "content": meta.get("input", "")}
        if meta.get(META_INPUT_ID):
            pending["id"] = meta[META_INPUT_ID]
    return ConversationOut(
        conversation_id=conversation_id, messages=messages, active_run_id=active, pending_message=pending
    )
