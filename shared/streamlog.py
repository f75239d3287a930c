"""A run's durable event log in Redis: append (atomic, refuses anything after the terminal event) and read."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.crc import key_slot

from runcast.shared.append import (
    ENDED,
    TERMINAL_STATUSES,
    UNKNOWN,
    Conflict,
    IdClock,
    Reply,
    RunAppend,
    append_script,
    parse_reply,
    run_calls,
    script_call,
    status_after,
)
from runcast.shared.ids import START_ID, entry_key
from runcast.shared.keys import events_key, meta_key
from runcast.shared.redis_client import is_cluster
from runcast.shared.streaming import TERMINAL_TYPES, StreamingError, StreamingEvent, StreamingEventType

__all__ = [
    "RUN_STATUSES",
    "TERMINAL_STATUSES",
    "AppendConflict",
    "Entry",
    "IdClock",
    "Reset",
    "RunAppend",
    "RunEnded",
    "StreamLog",
    "UnknownRun",
    "status_after",
    "to_entries",
]

RUN_STATUSES = ("queued", "running", *sorted(TERMINAL_STATUSES))
MAX_EVENTS_PER_CALL = 1_000
"""Most events one append call carries: a script call blocks Redis for its duration (~5 us per event)."""

# KEYS: meta.  ARGV: retention_s, then field/value pairs. One atomic step on one key, so it works unchanged on a
# Redis Cluster (redis-py's cluster client has no MULTI) and a crash can never leave a meta hash without its TTL.
# Returns 0 (and changes nothing) when the run already exists: a replayed create never resets a run that started.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
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


class AppendConflict(Exception):
    """Appender-chosen ids were not after the log's last id (`top`); nothing was appended."""

    def __init__(self, run_id: str, top: str) -> None:
        super().__init__(f"run {run_id}: ids not after the log's last entry {top}")
        self.top = top


def to_entries(raw: list[tuple[str, dict[str, str]]]) -> list[Entry]:
    return [Entry(entry_id, fields.get("type", ""), fields.get("event", "")) for entry_id, fields in raw]


class StreamLog:
    """Reads and writes runs' streams and meta hashes. The client must use `decode_responses=True`."""

    def __init__(self, redis: Redis, *, maxlen: int = 10_000, retention_s: int = 86_400) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.retention_s = retention_s
        self._cluster = is_cluster(redis)
        self._append = redis.register_script(append_script(self._cluster))  # PUBLISH, or SPUBLISH on a cluster
        self._create = redis.register_script(_CREATE_LUA)

    async def create_run(
        self,
        run_id: str,
        agent: str,
        input_text: str,
        metadata: dict[str, Any] | None = None,
        extra: dict[str, str] | None = None,
        *,
        external: bool = False,
    ) -> bool:
        """A queued run; False, changing nothing, when the run already exists (a replayed create, see
        `runcast.gateway.guards.idempotency`). `extra`: more meta fields (e.g. `conversation_id`, `history`: see
        `runcast.shared.conversations`). `external`: its events come from a producer outside runcast's workers (the
        publish API, `runcast.publisher`), which claims it; no worker runs it."""
        now = _now()
        fields = {
            "agent": agent,
            "status": "queued",
            "created_at": now,
            "updated_at": now,
            "last_event_id": "",
            "input": input_text,
            "metadata": json.dumps(metadata or {}),
            **(extra or {}),
        }
        if external:
            fields["external"] = "1"
        created = await self._create(
            keys=[meta_key(run_id)], args=[self.retention_s, *chain.from_iterable(fields.items())]
        )
        return bool(created)

    async def append(self, run_id: str, event: StreamingEvent) -> str:
        return await self.append_many(run_id, [event])

    async def append_many(self, run_id: str, events: list[StreamingEvent]) -> str:
        """Append events in order in one round trip; the status follows the last status-changing event.

        Redis chooses the ids: not safe to resend after a lost reply (`DurableStreamLog` is).
        """
        if not events:
            raise ValueError("nothing to append")
        return await self.append_one(RunAppend.build(run_id, events))

    async def append_one(self, append: RunAppend) -> str:
        """Run one run's append; its last entry id, or RunEnded / UnknownRun / AppendConflict."""
        keys, args = script_call([append], self.maxlen, _now(), self.retention_s)
        replies = await self._append(keys=keys, args=args)
        return checked(append.run_id, parse_reply(replies[0]))

    async def append_runs(self, appends: list[RunAppend]) -> list[Reply]:
        """The appends of many runs in one round trip; one reply per append, in order (see `runcast.shared.append`).

        A plain Redis takes all runs in one script call (split every MAX_EVENTS_PER_CALL events); a cluster one call
        per slot, all sent in one pipeline.
        """
        groups: dict[int, list[int]] = {}
        for i, append in enumerate(appends):
            groups.setdefault(_slot(append.run_id) if self._cluster else 0, []).append(i)
        calls: list[list[int]] = []
        for members in groups.values():
            current: list[int] = []
            size = 0
            for i in members:
                if current and size + len(appends[i].entries) > MAX_EVENTS_PER_CALL:
                    calls.append(current)
                    current, size = [], 0
                current.append(i)
                size += len(appends[i].entries)
            calls.append(current)
        now = _now()
        raw = await run_calls(
            self.redis,
            self._append,
            [script_call([appends[i] for i in call], self.maxlen, now, self.retention_s) for call in calls],
        )
        replies: list[Reply] = [ENDED] * len(appends)
        for call, reply in zip(calls, raw, strict=True):
            for i, one in zip(call, reply, strict=True):
                replies[i] = parse_reply(one)
        return replies

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


def checked(run_id: str, reply: Reply) -> str:
    """A run's reply as its last entry id, or the exception it stands for."""
    if isinstance(reply, Conflict):
        raise AppendConflict(run_id, reply.top)
    if reply == ENDED:
        raise RunEnded(run_id)
    if reply == UNKNOWN:
        raise UnknownRun(run_id)
    return str(reply)


def _slot(run_id: str) -> int:
    return key_slot(events_key(run_id).encode())


def _xread_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """Flatten an XREAD reply (RESP2: [[key, entries], ...]) into its entries."""
    return [entry for _key, entries in reply for entry in entries]


def _now() -> str:
    return f"{time.time():.6f}"
