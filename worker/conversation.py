"""The worker's side of conversations: the history a run's agent sees, and the turn a completed run adds.

The job calls `run_history` before the agent starts and `end_turn` after the run has ended (see
`runcast.shared.conversations` for the keys and who may write them). Recording happens right after the terminal
event, not atomically with it: the run's stream and the conversation live in different Cluster slots. The gateway
covers the gap: a new run of the conversation waits (briefly) for a completed holder to release it, so the next turn
always sees this one.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from runcast.shared.conversations import (
    META_CONVERSATION_ID,
    META_HISTORY,
    META_INPUT_ID,
    ConversationStore,
)
from runcast.shared.resilience import STORE_ERRORS, Backoff, retry_transient
from runcast.shared.settings import Settings, get_settings
from runcast.shared.streaming import StreamingBuffer, StreamingEvent
from runcast.shared.streamlog import TERMINAL_STATUSES
from runcast.worker.providers.base import Message

if TYPE_CHECKING:
    from runcast.worker.job import WorkerState

log = logging.getLogger("runcast.worker")


def to_message(raw: dict[str, Any]) -> Message:
    """A stored or given message as the model sees it (client-side ids are not the model's business)."""
    return Message(
        role=str(raw.get("role", "user")),
        content=str(raw.get("content") or ""),
        tool_calls=list(raw.get("tool_calls") or []),
        tool_call_id=raw.get("tool_call_id"),
        name=raw.get("name"),
    )


def conversation_store(redis: Any, settings: Settings | None = None) -> ConversationStore:
    """The worker's view of conversations, with the limits of `settings` (default: the environment's)."""
    settings = settings or get_settings()
    return ConversationStore(redis, ttl_s=settings.conversation_ttl_s, max_messages=settings.max_history_messages)


def _store(state: WorkerState) -> ConversationStore:
    return state.conversations or conversation_store(state.stream_log.redis)


async def run_history(state: WorkerState, meta: dict[str, str]) -> list[Message]:
    """The messages before this run's input: its own (`history`), else its conversation's, else none."""
    if meta.get(META_HISTORY):
        return [to_message(item) for item in json.loads(meta[META_HISTORY])]
    conversation_id = meta.get(META_CONVERSATION_ID)
    if not conversation_id:
        return []
    return [to_message(item) for item in await _store(state).messages(conversation_id)]


async def end_turn(state: WorkerState, run_id: str, meta: dict[str, str]) -> None:
    """After the run's terminal event: a completed run appends its user input and final answer to its conversation
    and releases it; a run that ended otherwise just releases it. Never raises: the run itself is over."""
    conversation_id = meta.get(META_CONVERSATION_ID)
    if not conversation_id:
        return
    store, stream_log = _store(state), state.stream_log
    backoff = Backoff(get_settings().redis_retry_s)
    try:
        final = await retry_transient(partial(stream_log.get_meta, run_id), backoff)
        status = (final or {}).get("status")
        if status not in TERMINAL_STATUSES:
            return  # not ended (cannot happen after a job); the gateway's claim sees the status and waits
        turn: list[dict[str, Any]] = []
        if status == "completed":
            entries = await retry_transient(partial(stream_log.read_all, run_id), backoff)
            answer = StreamingBuffer.from_events(StreamingEvent.from_json(e.event) for e in entries).content
            user = {"role": "user", "content": meta.get("input", "")}
            if meta.get(META_INPUT_ID):
                user["id"] = meta[META_INPUT_ID]
            turn = [user, {"role": "assistant", "content": answer, "id": run_id}]
        # Idempotent: once recorded the run no longer holds the conversation, so a retry appends nothing.
        recorded = await retry_transient(
            partial(store.record_turn, conversation_id, run_id, turn), backoff, STORE_ERRORS
        )  # waits out OOM/MISCONF too (for RUNCAST_REDIS_RETRY_S)
        if not recorded:  # taken over after RELEASE_WAIT_S (see runcast.gateway.conversations), or a retried call
            log.warning("run %s did not hold conversation %s any more when it ended", run_id, conversation_id)
    except Exception:
        log.exception("run %s: could not record its turn in conversation %s", run_id, conversation_id)
