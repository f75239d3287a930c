"""A run's durable event log in Redis: append (atomic, refuses anything after the terminal event) and read."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

from redis.asyncio import Redis, RedisCluster

from runcast.shared.ids import START_ID, entry_key
from runcast.shared.keys import events_key, live_channel, meta_key
from runcast.shared.streaming import TERMINAL_TYPES, StreamingError, StreamingEvent, StreamingEventType

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
RUN_STATUSES = ("queued", "running", *sorted(TERMINAL_STATUSES))

# Announce what an append just added, on the run's live channel (`keys.live_channel`), as one message:
#   <the id the new entries follow>\n   then for each new entry:   <id> <type> <event byte length>\n<event JSON>
# A gateway that already has the previous id takes the entries as they are; one that does not (it just subscribed, or
# reconnected, or missed a message) reads the stream after what it has instead (XRANGE): the stream stays the log and
# the source of truth, the message only saves the read. A separate step so any append script can end with it:
# `announce(channel, prev, ids, argv, first)` (types and events taken from argv[first], argv[first + 1], ...).
_ANNOUNCE_LUA = """
local function announce(channel, prev, ids, argv, first)
  if not prev or prev == '' then prev = '0-0' end
  local parts = {prev, '\\n'}
  for k = 1, #ids do
    local i = first + 2 * (k - 1)
    parts[#parts + 1] = ids[k] .. ' ' .. argv[i] .. ' ' .. #argv[i + 1] .. '\\n'
    parts[#parts + 1] = argv[i + 1]
  end
  redis.call('PUBLISH', channel, table.concat(parts))
end
"""

# KEYS: events, meta, live channel.  ARGV: maxlen, now, retention_s, new_status ('' keeps it), then (type, json)
# pairs. Returns the last entry id, or 0 when the run has already ended, or -1 when the run is unknown.
# Checking "already ended" and appending in one script is what makes a run end exactly once.
_APPEND_LUA = (
    _ANNOUNCE_LUA
    + """
local meta = redis.call('HMGET', KEYS[2], 'status', 'last_event_id')
local status = meta[1]
if not status then return -1 end
if status == 'completed' or status == 'failed' or status == 'cancelled' then return 0 end
local id
local ids = {}
for i = 5, #ARGV, 2 do
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'type', ARGV[i], 'event', ARGV[i + 1])
  ids[#ids + 1] = id
end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[2], 'status', ARGV[4], 'updated_at', ARGV[2], 'last_event_id', id)
else
  redis.call('HSET', KEYS[2], 'updated_at', ARGV[2], 'last_event_id', id)
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
announce(KEYS[3], meta[2], ids, ARGV, 5)
return id
"""
)


def append_script(sharded: bool) -> str:
    """The append script for a plain Redis (PUBLISH) or a Redis Cluster (SPUBLISH: the message stays on the shard
    that owns the run's slot, where the gateways following the run subscribe with SSUBSCRIBE; Redis >= 7)."""
    return _APPEND_LUA.replace("'PUBLISH'", "'SPUBLISH'") if sharded else _APPEND_LUA


# KEYS: meta.  ARGV: retention_s, then field/value pairs. One atomic step on one key, so it works unchanged on a
# Redis Cluster (redis-py's cluster client has no MULTI) and a crash can never leave a meta hash without its TTL.
_CREATE_LUA = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
"""


class Entry(NamedTuple):
    """One stream entry as the gateway forwards it: the event JSON is passed through untouched."""

    id: str
    type: str
    event: str

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


@dataclass(frozen=True)
class Reset:
    """The resume point is older than the oldest entry kept: the client must know it missed something."""

    requested: str
    first_available: str

    def to_dict(self) -> dict[str, str]:
        return {"reason": "trimmed", "requested": self.requested, "first_available": self.first_available}


class RunEnded(Exception):
    """An append was refused because the run's terminal event is already in the log."""


class UnknownRun(Exception):
    pass


def status_after(event: StreamingEvent) -> str:
    """The run status an event moves the run to ('' = unchanged)."""
    if event.type is StreamingEventType.START:
        return "running"
    if event.type is StreamingEventType.COMPLETE:
        return "completed"
    if event.type is StreamingEventType.ERROR:
        data = event.data
        error_type = data.get("error_type") if isinstance(data, dict) else getattr(data, "error_type", "")
        return "cancelled" if error_type == "cancelled" else "failed"
    return ""


def to_entries(raw: list[tuple[str, dict[str, str]]]) -> list[Entry]:
    return [Entry(entry_id, fields.get("type", ""), fields.get("event", "")) for entry_id, fields in raw]


class StreamLog:
    """Reads and writes runs' streams and meta hashes. The client must use `decode_responses=True`."""

    def __init__(self, redis: Redis, *, maxlen: int = 10_000, retention_s: int = 86_400) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.retention_s = retention_s
        self.sharded = isinstance(redis, RedisCluster)
        self._append = redis.register_script(append_script(self.sharded))
        self._create = redis.register_script(_CREATE_LUA)

    async def create_run(
        self, run_id: str, agent: str, input_text: str, metadata: dict[str, Any] | None = None
    ) -> None:
        now = _now()
        fields = {
            "agent": agent,
            "status": "queued",
            "created_at": now,
            "updated_at": now,
            "last_event_id": "",
            "input": input_text,
            "metadata": json.dumps(metadata or {}),
        }
        await self._create(keys=[meta_key(run_id)], args=[self.retention_s, *chain.from_iterable(fields.items())])

    async def append(self, run_id: str, event: StreamingEvent) -> str:
        return await self.append_many(run_id, [event])

    async def append_many(self, run_id: str, events: list[StreamingEvent]) -> str:
        """Append events in order in one round trip; the status follows the last status-changing event."""
        if not events:
            raise ValueError("nothing to append")
        status = ""
        args: list[Any] = [self.maxlen, _now(), self.retention_s, ""]
        for event in events:
            status = status_after(event) or status
            args += [event.type.value, event.to_json()]
        args[3] = status
        result = await self._append(keys=[events_key(run_id), meta_key(run_id), live_channel(run_id)], args=args)
        if result == 0:
            raise RunEnded(run_id)
        if result == -1:
            raise UnknownRun(run_id)
        return result.decode() if isinstance(result, bytes) else str(result)

    async def end_run(self, run_id: str, error_type: str, detail: str) -> str | None:
        """End a run from outside its worker (cancel, lost worker) with a terminal ERROR event.

        Returns the entry id, or None when the run had already ended: the check and the append are one atomic
        step, so whoever gets there first ends the run and nobody else can append after it.
        """
        event = StreamingEvent(StreamingEventType.ERROR, StreamingError(error_type, detail), run_id=run_id)
        try:
            return await self.append(run_id, event)
        except RunEnded:
            return None

    async def get_meta(self, run_id: str) -> dict[str, str] | None:
        meta = await self.redis.hgetall(meta_key(run_id))
        return meta or None

    async def set_status(self, run_id: str, status: str) -> None:
        await self.redis.hset(meta_key(run_id), mapping={"status": status, "updated_at": _now()})

    async def read_after(self, run_id: str, after_id: str = START_ID, count: int | None = None) -> list[Entry]:
        raw = await self.redis.xrange(events_key(run_id), min=f"({after_id}", max="+", count=count)
        return to_entries(raw)

    async def read_all(self, run_id: str) -> list[Entry]:
        return to_entries(await self.redis.xrange(events_key(run_id)))

    async def check_gap(self, run_id: str, after_id: str) -> Reset | None:
        """A Reset when entries after `after_id` were trimmed away, else None (SPEC §6)."""
        first = await self.redis.xrange(events_key(run_id), count=1)
        if not first:
            return None
        first_id = first[0][0]
        if entry_key(after_id) >= entry_key(first_id):
            return None
        if after_id == START_ID and not await self.was_trimmed(run_id):
            return None
        return Reset(requested=after_id, first_available=first_id)

    async def was_trimmed(self, run_id: str) -> bool:
        """Whether any entry of the run was ever trimmed away (XINFO STREAM: entries-added > length)."""
        info = await self.redis.xinfo_stream(events_key(run_id))
        added = info.get("entries-added")
        if added is None:  # Redis < 7 or a fake without it: the first id is all we know
            return False
        return int(added) > int(info["length"])

    async def tail(self, run_id: str, after_id: str, block_ms: int) -> list[Entry]:
        """Block up to `block_ms` for entries after `after_id` (one subscriber's own XREAD; see the hub)."""
        reply = await self.redis.xread({events_key(run_id): after_id}, block=block_ms)
        if not reply:
            return []
        return to_entries(_xread_entries(reply))


def _xread_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """Flatten an XREAD reply (RESP2: [[key, entries], ...]) into its entries."""
    return [entry for _key, entries in reply for entry in entries]


def _now() -> str:
    return f"{time.time():.6f}"
