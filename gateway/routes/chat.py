"""The Vercel AI SDK's chat protocol: `useChat` with `DefaultChatTransport({api: <gateway>/v1/chat/<agent>})`.

- `POST /v1/chat/{agent}`: what the transport sends for a new message or a regenerate. runcast keeps the
  conversation (chat id = conversation id), creates a run and streams it as a UI message stream.
- `GET /v1/chat/{agent}/{chat_id}/stream`: what `resume: true` asks after a reload: the chat's active run from its
  first event, then live; 204 when the chat has no queued or running run.
- `POST /v1/chat/{agent}/{chat_id}/stop`: stop the chat's active run (runcast's cancel). Aborting the request alone
  (`stop()` in `useChat`, a closed tab, a reload) never stops the run: that is what makes resuming possible.
- `POST /v1/chat/{agent}/{chat_id}/token`: a per-chat token for a browser, issued with an API key.

Both streams are read through the gateway's hub (`state.feed`), like SSE viewers: a chat viewer costs Redis
nothing more than an SSE viewer, and each entry is encoded once for all viewers (`wire/ui_message_stream.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from pydantic import BaseModel

from runcast.gateway import conversations
from runcast.gateway.chat_messages import ChatRequest, Message, to_history, trim, user_input
from runcast.gateway.guards.auth import chat_subject, check_chat_access, require_api_key
from runcast.gateway.routes.runs import CancelResponse, check_agent, check_input, start_run
from runcast.gateway.schemas import ConflictBody, error_responses
from runcast.gateway.state import GatewayState, get_state
from runcast.gateway.wire.sse_response import SSEResponse, open_streams
from runcast.gateway.wire.ui_message_stream import HEADERS, START, encode_batch
from runcast.shared.conversations import CONVERSATION_ID_RE
from runcast.shared.ids import START_ID
from runcast.shared.tokens import issue_token

router = APIRouter(prefix="/v1/chat", tags=["chat (Vercel AI SDK)"])

AgentName = Annotated[str, Path(min_length=1, max_length=128, description="the agent that answers")]
ChatId = Annotated[str, Path(pattern=CONVERSATION_ID_RE.pattern, description="the chat id (`useChat`'s `id`)")]
TokenQuery = Annotated[str | None, Query(max_length=512, description="an API key or the chat's token")]
Authorization = Annotated[str | None, Header(description="`Bearer <API key or the chat's token>`")]

_STREAM = {
    "description": "the run as a UI message stream (SSE `data: <part>` lines, then `data: [DONE]`); headers "
    "`x-vercel-ai-ui-message-stream: v1`, `x-runcast-run-id` and `x-runcast-run-token` (the run's read token)",
    "content": {"text/event-stream": {}},
}
_ERRORS = error_responses(
    (401, "RUNCAST_API_KEYS is set and neither an API key nor the chat's token was sent"),
    (403, "the token is another chat's"),
    (404, "no worker serves this agent"),
)


class ChatToken(BaseModel):
    token: str
    expires_in: int


def ui_stream_response(request: Request, state: GatewayState, run_id: str) -> SSEResponse:
    token = issue_token(state.secret, run_id, state.settings.token_ttl_s)
    headers = {**HEADERS, "x-runcast-run-id": run_id, "x-runcast-run-token": token}
    return SSEResponse(
        ui_frames(state, run_id),
        ping_s=state.settings.sse_ping_s,
        streams=open_streams(request.app),
        retry_ms=None,
        headers=headers,
        stall_s=state.settings.viewer_stall_s,
    )


async def ui_frames(state: GatewayState, run_id: str) -> AsyncIterator[bytes]:
    """The run from its first entry, one write per batch the hub hands over; this viewer keeps only its position."""
    position = START
    async with aclosing(state.feed.subscribe(run_id, START_ID)) as batches:
        async for batch in batches:
            frame, position = encode_batch(position, batch)
            if frame:
                yield frame


async def active_chat_run(
    agent: AgentName,
    chat_id: ChatId,
    state: Annotated[GatewayState, Depends(get_state)],
    token: TokenQuery = None,
    authorization: Authorization = None,
) -> str | None:
    """For `/{agent}/{chat_id}/...`: once the caller may use the chat, its queued or running run (None: none)."""
    check_chat_access(state, agent, chat_id, token, authorization)
    return await conversations.active_run(state, chat_id)


@router.post(
    "/{agent}",
    summary="Send a chat message (useChat)",
    status_code=200,
    response_class=SSEResponse,
    responses={
        200: _STREAM,
        **_ERRORS,
        **error_responses(
            (413, "input over RUNCAST_MAX_INPUT_BYTES, or body over RUNCAST_MAX_BODY_BYTES"),
            (422, "not the body `DefaultChatTransport` sends, or its last message is not a user message"),
        ),
        409: {"model": ConflictBody, "description": "the chat has an active run (its id is in the body)"},
    },
)
async def send_messages(
    agent: AgentName,
    body: ChatRequest,
    request: Request,
    state: Annotated[GatewayState, Depends(get_state)],
    token: TokenQuery = None,
    authorization: Authorization = None,
) -> SSEResponse:
    """Answer the chat's last message (a user message) with a new run of `agent`, streamed as it happens.

    The agent sees runcast's history of the chat. When the last message's id is already in it (a regenerate, or
    an edited message), the history is cut back to before that message first. A chat runcast has no history for
    takes the earlier messages of the body as its history (newest RUNCAST_MAX_HISTORY_MESSAGES).
    """
    check_chat_access(state, agent, body.id, token, authorization)
    input_id, text = user_input(body)
    check_input(state.settings, text)
    seed = trim(to_history(body.messages[:-1]), state.settings.max_history_messages, state.settings.max_history_bytes)
    await check_agent(state, agent)

    def plan(history: list[Message]) -> tuple[int | None, list[Message]]:
        asked_again = next((n for n, m in enumerate(history) if m.get("id") == input_id), None)
        if asked_again is not None:
            return asked_again, []
        return None, [] if history else seed

    run_id = await start_run(state, agent, text, conversation_id=body.id, plan=plan, input_id=input_id)
    return ui_stream_response(request, state, run_id)


@router.get(
    "/{agent}/{chat_id}/stream",
    summary="Resume a chat's active stream (useChat resume)",
    status_code=200,
    response_class=SSEResponse,
    responses={200: _STREAM, 204: {"description": "the chat has no active run"}, **_ERRORS},
)
async def resume_stream(
    request: Request,
    state: Annotated[GatewayState, Depends(get_state)],
    run_id: Annotated[str | None, Depends(active_chat_run)],
) -> Response:
    """The chat's queued or running run, replayed from its first event and then followed live; 204 without one."""
    if run_id is None:
        return Response(status_code=204)
    return ui_stream_response(request, state, run_id)


@router.post(
    "/{agent}/{chat_id}/stop",
    summary="Stop a chat's active run",
    status_code=202,
    response_description="the run is now cancelled",
    response_model=CancelResponse,
    responses={204: {"description": "the chat has no active run"}, **_ERRORS},
)
async def stop(
    state: Annotated[GatewayState, Depends(get_state)],
    run_id: Annotated[str | None, Depends(active_chat_run)],
) -> Response | CancelResponse:
    """Cancel the chat's active run: it ends with ERROR `cancelled` (an `abort` part for its viewers) at once, and
    its worker stops the agent within ~0.2 s. 204 when there is nothing to stop."""
    if run_id is None:
        return Response(status_code=204)
    await state.stream_log.end_run(run_id, "cancelled", "stopped by the chat's client")
    meta = await state.stream_log.get_meta(run_id) or {}
    return CancelResponse(run_id=run_id, status=meta.get("status", "cancelled"))


@router.post(
    "/{agent}/{chat_id}/token",
    summary="Issue a per-chat token for a browser",
    response_model=ChatToken,
    response_description="the token and its lifetime in seconds",
    responses=error_responses((401, "RUNCAST_API_KEYS is set and no valid key was sent")),
    dependencies=[Depends(require_api_key)],
)
async def chat_token(
    agent: AgentName, chat_id: ChatId, state: Annotated[GatewayState, Depends(get_state)]
) -> ChatToken:
    """A token that lets a browser use this chat (send, resume, stop) without the API key: your backend asks for
    it with its API key and hands it to the page (`headers: {Authorization: "Bearer " + token}`)."""
    ttl = state.settings.token_ttl_s
    return ChatToken(token=issue_token(state.secret, chat_subject(agent, chat_id), ttl), expires_in=ttl)
