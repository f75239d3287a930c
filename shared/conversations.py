"""Conversations: a history of messages runcast keeps in Redis, and which run holds the conversation right now.

Two keys per conversation, in one Cluster slot (`{conv:<id>}`, see `runcast.shared.keys`):
- `history`: a list of JSON messages (`role`, `content`, optional `tool_calls` / `tool_call_id` / `name`, and `id`
  when the message has a client-side id, e.g. an AI SDK UI message id), oldest first, at most `max_messages`.
- `active`: the id of the run that holds the conversation. Taking it is a compare-and-set (`claim`): one active run
  per conversation, even with many gateways.

Who appends: the worker, right after the run's terminal event (`record_turn`: the run's user input and its final
answer, one atomic step that also releases the conversation, and only while the run still holds it). A run that
ends otherwise (cancelled, failed, worker lost) appends nothing; whoever next claims the conversation sees from the
holder's status that it has ended (see `runcast.gateway.conversations`), so no conversation stays locked. The keys
expire `ttl_s` after the last claim or append.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from runcast.shared.keys import conversation_history_key, conversation_lock_key

CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,127}$", re.ASCII)
"""Conversation (and AI SDK chat) ids: 1-128 characters from `A-Z a-z 0-9 _ - . :`, not starting with `.` or `:`
(never `{`/`}`, which would change the Redis Cluster hash tag)."""

Message = dict[str, Any]


class BadConversationId(ValueError):
    pass


def check_conversation_id(conversation_id: str) -> str:
    if not isinstance(conversation_id, str) or not CONVERSATION_ID_RE.fullmatch(conversation_id):
        raise BadConversationId("conversation id must be 1-128 characters from A-Z a-z 0-9 _ - . : (not starting . :)")
    return conversation_id


# KEYS: active, history.  ARGV: run_id, expected holder ('' = none), expected history length, keep (-1 = all),
# ttl_s, then JSON messages to append. Returns {1, ''} when the run now holds the conversation, else {0, holder}:
# someone else claimed it, or the history changed since the caller read it (the caller reads again and decides).
_CLAIM_LUA = """
local holder = redis.call('GET', KEYS[1]) or ''
if holder ~= ARGV[2] then return {0, holder} end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[3]) then return {0, holder} end
local keep = tonumber(ARGV[4])
if keep == 0 then
  redis.call('DEL', KEYS[2])
elseif keep > 0 then
  redis.call('LTRIM', KEYS[2], 0, keep - 1)
end
for i = 6, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
return {1, ''}
"""

# KEYS: active, history.  ARGV: run_id, max_messages, ttl_s, then JSON messages. Appends and releases only while
# `run_id` holds the conversation: a run whose claim was taken over can never write into a later turn's history.
_RECORD_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 4, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
end
if #ARGV >= 4 then
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True)
class Claim:
    """The outcome of `ConversationStore.claim`: `ok`, or the conversation's holder at that moment."""

    ok: bool
    holder: str | None


class ConversationStore:
    """Reads and writes conversations. The Redis client must use `decode_responses=True`."""

    def __init__(self, redis: Redis, *, ttl_s: int, max_messages: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.max_messages = max_messages
        self._claim = redis.register_script(_CLAIM_LUA)
        self._record = redis.register_script(_RECORD_LUA)

    async def holder(self, conversation_id: str) -> str | None:
        """The run that holds the conversation (it may have ended since: see the module docstring)."""
        return await self.redis.get(conversation_lock_key(conversation_id))

    async def messages(self, conversation_id: str) -> list[Message]:
        raw = await self.redis.lrange(conversation_history_key(conversation_id), 0, -1)
        return [json.loads(item) for item in raw]

    async def claim(
        self,
        conversation_id: str,
        run_id: str,
        *,
        expected_holder: str | None,
        expected_length: int,
        keep: int | None = None,
        append: list[Message] | None = None,
    ) -> Claim:
        """Make `run_id` the holder if the holder is still `expected_holder` and the history still has
        `expected_length` messages; then keep only the first `keep` messages (None: all) and append `append`."""
        args: list[Any] = [
            run_id,
            expected_holder or "",
            expected_length,
            -1 if keep is None else keep,
            self.ttl_s,
            *(_dump(message) for message in append or []),
        ]
        ok, holder = await self._claim(
            keys=[conversation_lock_key(conversation_id), conversation_history_key(conversation_id)], args=args
        )
        return Claim(bool(int(ok)), holder or None)

    async def record_turn(self, conversation_id: str, run_id: str, messages: list[Message]) -> bool:
        """Append `messages` (the run's turn; may be empty) and release the conversation, if `run_id` holds it."""
        keys = [conversation_lock_key(conversation_id), conversation_history_key(conversation_id)]
        args = [run_id, self.max_messages, self.ttl_s, *(_dump(message) for message in messages)]
        return bool(int(await self._record(keys=keys, args=args)))

    async def release(self, conversation_id: str, run_id: str) -> bool:
        """Release the conversation without appending (the run did not complete), if `run_id` holds it."""
        return await self.record_turn(conversation_id, run_id, [])


def _dump(message: Message | list[Message]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


META_CONVERSATION_ID = "conversation_id"
"""Run meta field: the conversation the run belongs to (its worker reads the history there and records the turn)."""
META_HISTORY = "history"
"""Run meta field: the prior messages given with the run itself (JSON list), when it has no conversation."""
META_INPUT_ID = "input_id"
"""Run meta field: the client's id of the run's user message (an AI SDK UI message id), kept in the history."""


def run_meta_fields(
    conversation_id: str | None = None, history: list[Message] | None = None, input_id: str | None = None
) -> dict[str, str]:
    """The extra meta fields of a run that continues a conversation or carries its own history."""
    fields: dict[str, str] = {}
    if conversation_id is not None:
        fields[META_CONVERSATION_ID] = conversation_id
    if history:
        fields[META_HISTORY] = _dump(history)
    if input_id is not None:
        fields[META_INPUT_ID] = input_id
    return fields
