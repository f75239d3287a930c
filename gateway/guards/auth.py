"""Request checks shared by routes: run ids, per-run tokens, API keys, resume ids.

The dependencies are `async def` although nothing in them awaits: FastAPI runs a plain `def` dependency in its thread
pool, a thread hop (and a GIL hand-over) per dependency per request — a viewer's connect had four. They are
microseconds of CPU, so they run on the loop (measured in docs/performance.md).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, Request

from runcast.gateway.state import GatewayState, get_state
from runcast.shared.ids import BadEntryId, BadRunId, check_run_id, parse_entry_id
from runcast.shared.tokens import TokenError, TokenInvalid, TokenWrongRun, verify_token


def bearer(authorization: str | None) -> str | None:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


async def valid_run_id(run_id: Annotated[str, Path(max_length=64, description="`run_id` from `POST /v1/runs`")]) -> str:
    try:
        return check_run_id(run_id)
    except BadRunId as exc:
        raise HTTPException(400, str(exc)) from None


async def readable_run(
    run_id: Annotated[str, Depends(valid_run_id)],
    state: Annotated[GatewayState, Depends(get_state)],
    token: Annotated[str | None, Query(max_length=512, description="the run's token")] = None,
    authorization: Annotated[str | None, Header(description="`Bearer <run token>`, instead of `?token=`")] = None,
) -> str:
    """The run id, once the caller has shown that run's token (query or bearer header)."""
    try:
        verify_with_any(state.settings.verify_secrets(), token or bearer(authorization), run_id)
    except TokenError as exc:
        raise HTTPException(exc.status_code, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    return run_id


def verify_with_any(secrets: list[bytes], token: str | None, run_id: str) -> None:
    """Tokens are signed with the first secret and checked against each (RUNCAST_SECRET, then
    RUNCAST_SECRET_PREVIOUS), so a rotated secret does not log every viewer out at once."""
    mismatch: TokenInvalid | None = None
    for secret in secrets:
        try:
            verify_token(secret, token, run_id)
            return
        except TokenInvalid as exc:  # wrong signature under this secret (or malformed): try the next one
            mismatch = exc
    raise mismatch or TokenInvalid("token signature does not match")


async def require_api_key(
    state: Annotated[GatewayState, Depends(get_state)],
    authorization: Annotated[
        str | None, Header(description="`Bearer <API key>`, required when RUNCAST_API_KEYS is set")
    ] = None,
) -> str | None:
    """When RUNCAST_API_KEYS is set, creating and cancelling runs needs one of them as a bearer token."""
    keys = state.settings.api_keys
    if not keys:
        return None
    given = bearer(authorization)
    if not is_api_key(given, keys):
        raise HTTPException(
            401, "a valid API key is required: Authorization: Bearer KEY", {"WWW-Authenticate": "Bearer"}
        )
    return given


def is_api_key(given: str | None, keys: list[str]) -> bool:
    return given is not None and any(hmac.compare_digest(given.encode(), key.encode()) for key in keys)


def chat_subject(agent: str, chat_id: str) -> str:
    """What a per-chat token names: one agent's chat (never a run id, which is 32 hex characters)."""
    return f"chat:{agent}:{chat_id}"


def check_chat_access(
    state: GatewayState, agent: str, chat_id: str, token: str | None, authorization: str | None
) -> None:
    """A chat (`/v1/chat/...`) is open when RUNCAST_API_KEYS is not set, like creating runs. Otherwise it takes an
    API key (a backend) or the chat's own token (a browser; `POST /v1/chat/{agent}/{chat_id}/token`), as a bearer
    header or `?token=`."""
    keys = state.settings.api_keys
    given = token or bearer(authorization)
    if not keys or is_api_key(given, keys):
        return
    if given is None:
        raise HTTPException(
            401,
            "this chat needs an API key or its chat token: Authorization: Bearer ...",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        verify_with_any(state.settings.verify_secrets(), given, chat_subject(agent, chat_id))
    except TokenError as exc:
        detail = "token is for another chat" if isinstance(exc, TokenWrongRun) else str(exc)
        raise HTTPException(exc.status_code, detail, headers={"WWW-Authenticate": "Bearer"}) from None


async def resume_id(
    request: Request,
    last_event_id: Annotated[str | None, Query(max_length=64, description="resume after this event id")] = None,
) -> str | None:
    """The resume point: the `Last-Event-ID` header, else `?last_event_id=`; validated strictly."""
    value = request.headers.get("last-event-id") or last_event_id
    if value is None or value == "":
        return None
    try:
        parse_entry_id(value)
    except BadEntryId as exc:
        raise HTTPException(400, f"bad Last-Event-ID: {exc}") from None
    return value


async def cancellable_run(
    run_id: Annotated[str, Depends(valid_run_id)],
    state: Annotated[GatewayState, Depends(get_state)],
    token: Annotated[str | None, Query(max_length=512, description="the run's token, when no API keys are set")] = None,
    authorization: Annotated[
        str | None, Header(description="`Bearer <API key>` when RUNCAST_API_KEYS is set, else `Bearer <run token>`")
    ] = None,
) -> str:
    """With RUNCAST_API_KEYS set, cancelling needs an API key (like creating); otherwise the run's own token."""
    if state.settings.api_keys:
        await require_api_key(state, authorization)
        return run_id
    return await readable_run(run_id, state, token, authorization)
