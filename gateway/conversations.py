"""Claiming a conversation for a new run: at most one active run per conversation, across all gateways.

A conversation's holder (`runcast.shared.conversations`) is the run that last claimed it. A new run may take it when
- nobody holds it, or
- the holder has ended without a turn to record (failed, cancelled, worker lost, or its keys expired), or
- the holder completed and its worker has released it after recording the turn. The worker does that right after
  the terminal event (another Cluster slot, so not in the same step); until then the claim waits, up to
  `RELEASE_WAIT_S`, so the new run always sees the completed turn. A holder that completed but is still not
  released after that (its worker died in between) is taken over: its turn is lost, the conversation is not.
While the holder is queued or running, the claim fails with `ConversationBusy` (409 with the active run's id):
runcast does not queue a second message behind a running one; the client decides (wait, stop, or resume it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import Request
from fastapi.responses import JSONResponse

from runcast.gateway.state import GatewayState
from runcast.shared.conversations import ConversationStore, Message

RELEASE_WAIT_S = 5.0
RELEASE_POLL_S = 0.02
CLAIM_ATTEMPTS = 20

Plan = Callable[[list[Message]], tuple[int | None, list[Message]]]
"""Given the conversation's history, what the new run changes first: how many messages to keep (None: all) and
which to append (e.g. seed a new conversation, or cut the turn a regenerate replaces)."""


class ConversationBusy(Exception):
    def __init__(self, conversation_id: str, run_id: str | None) -> None:
        super().__init__(conversation_id, run_id)
        self.conversation_id = conversation_id
        self.run_id = run_id


async def conversation_busy(request: Request, exc: Exception) -> JSONResponse:
    """409 with the active run's id: the client may follow it, wait for it or stop it."""
    assert isinstance(exc, ConversationBusy)
    detail = f"conversation {exc.conversation_id} has an active run ({exc.run_id}); wait for it to end, or stop it"
    return JSONResponse({"detail": detail, "active_run_id": exc.run_id}, status_code=409)


def store_of(state: GatewayState) -> ConversationStore:
    conf = state.settings
    return ConversationStore(state.redis, ttl_s=conf.conversation_ttl_s, max_messages=conf.max_history_messages)


async def active_run(state: GatewayState, conversation_id: str) -> str | None:
    """The conversation's run while it is queued or running, else None."""
    holder = await store_of(state).holder(conversation_id)
    if holder is None:
        return None
    meta = await state.stream_log.get_meta(holder)
    return holder if meta is not None and meta.get("status") in ("queued", "running") else None


async def claim(state: GatewayState, conversation_id: str, run_id: str, plan: Plan | None = None) -> None:
    """Make `run_id` the conversation's holder, applying `plan` to its history in the same atomic step."""
    store = store_of(state)
    holder: str | None = None
    for _ in range(CLAIM_ATTEMPTS):
        holder = await _replaceable_holder(state, store, conversation_id)
        history = await store.messages(conversation_id)
        keep, append = plan(history) if plan is not None else (None, [])
        result = await store.claim(
            conversation_id, run_id, expected_holder=holder, expected_length=len(history), keep=keep, append=append
        )
        if result.ok:
            return
    raise ConversationBusy(conversation_id, holder)  # lost the race every time: someone else is busy with it


async def release(state: GatewayState, conversation_id: str, run_id: str) -> None:
    """Give the conversation back (the run could not be created after all)."""
    await store_of(state).release(conversation_id, run_id)


async def _replaceable_holder(state: GatewayState, store: ConversationStore, conversation_id: str) -> str | None:
    """The current holder once a new run may replace it (None when free); raises ConversationBusy while it runs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELEASE_WAIT_S
    while True:
        holder = await store.holder(conversation_id)
        if holder is None:
            return None
        meta = await state.stream_log.get_meta(holder)
        status = meta.get("status") if meta is not None else None
        if status in ("queued", "running"):
            raise ConversationBusy(conversation_id, holder)
        if status != "completed" or loop.time() >= deadline:
            return holder
        await asyncio.sleep(RELEASE_POLL_S)  # completed: its worker is recording the turn right now
