"""Appending events to runs' logs: one Lua script for one run or many at once, idempotent with appender-chosen ids.

Every append of every process (the worker's events, a gateway's cancel, the sweeper's `worker_lost`) runs
`APPEND_LUA`, so "refuse anything after the terminal event" lives in one place. One call carries any number of runs
(each run's keys share a slot; on a Redis Cluster one call carries the runs of one slot): a worker sends the
events of all its runs in one round trip per loop tick (`runcast.worker.writer`).

Entry ids. A caller that must survive a lost reply (the worker) chooses each entry's id itself (`IdClock`:
`<ms>-<seq>`, strictly increasing) and sends the same ids again when it does not know whether a call ran. The script
skips the events whose id is not after the run's last id and that are in the log with the same JSON (they are the
earlier send's), and appends the rest: resending is always safe, never a duplicate. An id that is not after the last
one and is *not* ours (another writer appended first; only the run's worker appends before its end, so this means a
foreign writer or a clock behind Redis's) is a `Conflict` that appends nothing; the caller picks later ids and sends
again. `'*'` lets Redis choose (the one-off appends of gateways: they are never resent).

Announcing. After its XADDs, a run's append publishes what it added on the run's live channel (`keys.live_channel`;
SPUBLISH on a Redis Cluster), so gateways follow runs by subscription instead of reading every stream
(`runcast.gateway.hub`). One message per run and call:
    <the id the new entries follow>\n   then for each new entry:   <id> <type> <event byte length>\n<event JSON>
A gateway that has the previous id takes the entries as they are; one that does not (it just subscribed, reconnected,
or missed a message) reads the log after what it has (XRANGE): the stream stays the log and the source of truth, the
message only saves the read. A resend announces only what it appended itself.

Cost per run and call: HMGET status and last id, the XADDs, one PUBLISH, one HSET of `last_event_id`/`updated_at`
(every viewer's connect reads them from the hash: the resume check must not cost a stream read per viewer). TTLs:
`refresh_ttl` re-arms the retention period of both keys; a worker asks for it on a status change and now and then, not
on every token (the EXPIRE pair cost about as much as the XADD). The end of a run always refreshes it, so the keys
expire `retention_s` after the terminal event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from runcast.shared.keys import events_key, live_channel, meta_key
from runcast.shared.streaming import StreamingEvent, StreamingEventType

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})

# KEYS: events, meta, live channel of each run.  ARGV: maxlen, now, retention_s, then for each run: n,
# new status ('' keeps it), ttl ('1' re-arms both keys' TTL), expect (the last id the caller saw acknowledged, '' =
# none), then n x (id, type, json); id '*' = Redis chooses. n = 0 only checks `expect`.
# One reply per run: its last entry id (appended, or already there from an earlier send); 0 = the run has ended
# (nothing appended); -1 = unknown run (no meta); {top} = an id is not after the log's last id `top` and that entry
# is not ours (nothing appended); {top, 'behind'} = the log ends at `top`, before `expect`: entries this caller saw
# acknowledged are gone (a failover to a replica that had not received them); nothing appended.
# Fast path per run: HMGET status and last id, the XADDs (the first one under pcall: it fails when its id is not after
# the log's last entry, which sends us to `landed`), one PUBLISH of what was added, one HSET of the meta.
APPEND_LUA = """
local function after(id, top)
  local ims, iseq = string.match(id, '^(%d+)-(%d+)$')
  local tms, tseq = string.match(top, '^(%d+)-(%d+)$')
  ims, tms = tonumber(ims), tonumber(tms)
  if ims ~= tms then return ims > tms end
  return tonumber(iseq) > tonumber(tseq)
end

-- How many of the batch's entries are already in the log (ours: same id, same JSON), and the log's last id.
-- -1 when an entry in the batch's id range is not ours.
local function landed(events, n, at)
  local got = redis.call('XRANGE', events, ARGV[at], ARGV[at + 3 * (n - 1)])
  local skip = 0
  while skip < n and skip < #got and got[skip + 1][1] == ARGV[at + 3 * skip]
      and got[skip + 1][2][4] == ARGV[at + 3 * skip + 2] do
    skip = skip + 1
  end
  local last = redis.call('XREVRANGE', events, '+', '-', 'COUNT', 1)
  local top = last[1] and last[1][1] or '0-0'
  if skip < #got then return -1, top end
  return skip, top
end

-- Publish the entries this call added (ids[k] holds the entry at ARGV[from_at + 3 * (k - 1)]), after `prev`.
local function announce(channel, prev, ids, from_at)
  if not prev or prev == '' then prev = '0-0' end
  local parts = {prev, '\\n'}
  for k = 1, #ids do
    local i = from_at + 3 * (k - 1)
    parts[#parts + 1] = ids[k] .. ' ' .. ARGV[i + 1] .. ' ' .. #ARGV[i + 2] .. '\\n'
    parts[#parts + 1] = ARGV[i + 2]
  end
  redis.call('PUBLISH', channel, table.concat(parts))
end

local function append(events, meta, channel, n, new_status, ttl, expect, at)
  local head = redis.call('HMGET', meta, 'status', 'last_event_id')
  local status, prev = head[1], head[2]
  if not status then return -1 end
  local explicit = n > 0 and ARGV[at] ~= '*'
  if status == 'completed' or status == 'failed' or status == 'cancelled' then
    if explicit and landed(events, n, at) == n then return ARGV[at + 3 * (n - 1)] end  -- our own end, resent
    return 0
  end
  if not prev or prev == '' then prev = '0-0' end
  if expect ~= '' and after(expect, prev) then return {prev, 'behind'} end
  if n == 0 then return prev end
  local id
  local from, first_new = 0, 0  -- the next entry to XADD; the first entry this call adds (what it announces)
  local ids = {}
  if explicit then
    id = redis.pcall('XADD', events, 'MAXLEN', '~', ARGV[1], ARGV[at], 'type', ARGV[at + 1], 'event', ARGV[at + 2])
    if type(id) == 'table' and id.err then  -- not after the log's last entry: a resend, or someone else's entry
      local skip, top = landed(events, n, at)
      if skip < 0 then return {top} end
      if skip == n then return ARGV[at + 3 * (n - 1)] end
      if not after(ARGV[at + 3 * skip], top) then
        if skip == 0 and after(ARGV[at], top) then return redis.error_reply(id.err) end  -- another failure
        return {top}
      end
      from, first_new, prev = skip, skip, top
    else
      from = 1
      ids[1] = id
    end
  end
  for i = from, n - 1 do
    local k = at + 3 * i
    id = redis.call('XADD', events, 'MAXLEN', '~', ARGV[1], ARGV[k], 'type', ARGV[k + 1], 'event', ARGV[k + 2])
    ids[#ids + 1] = id
  end
  announce(channel, prev, ids, at + 3 * first_new)
  if new_status ~= '' then
    redis.call('HSET', meta, 'status', new_status, 'updated_at', ARGV[2], 'last_event_id', id)
  else
    redis.call('HSET', meta, 'updated_at', ARGV[2], 'last_event_id', id)
  end
  if ttl == '1' then
    redis.call('EXPIRE', events, ARGV[3])
    redis.call('EXPIRE', meta, ARGV[3])
  end
  return id
end

local replies, at = {}, 4
for r = 1, #KEYS, 3 do
  local n = tonumber(ARGV[at])
  replies[#replies + 1] = append(KEYS[r], KEYS[r + 1], KEYS[r + 2], n, ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], at + 4)
  at = at + 4 + 3 * n
end
return replies
"""


def append_script(sharded: bool) -> str:
    """`APPEND_LUA` for a plain Redis (PUBLISH) or a Redis Cluster (SPUBLISH: the message stays on the shard that owns
    the run's slot, where the gateways following the run subscribe with SSUBSCRIBE; Redis >= 7)."""
    return APPEND_LUA.replace("'PUBLISH'", "'SPUBLISH'") if sharded else APPEND_LUA


ENDED = 0
UNKNOWN = -1


@dataclass(frozen=True)
class Conflict:
    """An id of the batch was not after the log's last id `top`, and that entry is not ours: nothing was appended."""

    top: str


@dataclass(frozen=True)
class Behind:
    """The log ends at `top`, before the id the caller expected (`RunAppend.expect`): acknowledged entries are gone
    (a failover promoted a replica that had not received them). Nothing was appended."""

    top: str


Reply = str | int | Conflict | Behind
"""One run's reply: its last entry id, `ENDED`, `UNKNOWN`, a `Conflict` or `Behind`."""


_STATUS_AFTER = {StreamingEventType.START: "running", StreamingEventType.COMPLETE: "completed"}
_ERROR = StreamingEventType.ERROR  # (a module constant: an Enum member lookup costs ~0.3 us on Python 3.11)


def status_after(event: StreamingEvent) -> str:
    """The run status an event moves the run to ('' = unchanged)."""
    if event.type is _ERROR:
        data = event.data
        error_type = data.get("error_type") if isinstance(data, dict) else getattr(data, "error_type", "")
        return "cancelled" if error_type == "cancelled" else "failed"
    return _STATUS_AFTER.get(event.type, "")


class IdClock:
    """Entry ids chosen by the appender: `<ms>-<seq>` from the wall clock, strictly increasing for this object.

    One clock per process serves all its runs (ids increase across runs too, which is more than needed).
    `advance_past(id)` moves it after an id seen in a log (after a `Conflict`).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._ms = 0
        self._seq = -1

    def next(self) -> str:
        now = int(self._clock() * 1000)
        if now > self._ms:
            self._ms, self._seq = now, 0
        else:
            self._seq += 1
        return f"{self._ms}-{self._seq}"

    def advance_past(self, entry_id: str) -> None:
        ms_text, _, seq_text = entry_id.partition("-")
        ms, seq = int(ms_text), int(seq_text or 0)
        if (ms, seq) > (self._ms, self._seq):
            self._ms, self._seq = ms, seq


@dataclass
class RunAppend:
    """One run's share of an append call: (id, type, json) per event, in order; '*' ids are chosen by Redis."""

    run_id: str
    entries: list[tuple[str, str, str]]
    status: str = ""
    refresh_ttl: bool = True
    expect: str = ""
    """The last id this appender saw acknowledged for the run ('' = none): a log that ends before it is `Behind`."""

    @classmethod
    def build(
        cls, run_id: str, events: Sequence[StreamingEvent], ids: IdClock | None = None, *, refresh_ttl: bool = True
    ) -> RunAppend:
        """Encode `events` for the script; with `ids`, give each its id now (so a resend carries the same ids)."""
        status = ""
        entries = []
        for event in events:
            status = status_after(event) or status
            entries.append((ids.next() if ids is not None else "*", event.type._value_, event.to_json()))
        return cls(run_id, entries, status, refresh_ttl or bool(status))

    def renumber(self, ids: IdClock) -> None:
        """New ids for every entry (after a `Conflict`: nothing of this batch is in the log)."""
        self.entries = [(ids.next(), kind, payload) for _, kind, payload in self.entries]

    @property
    def last_id(self) -> str:
        return self.entries[-1][0]


def script_call(appends: Sequence[RunAppend], maxlen: int, now: str, retention_s: int) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one `APPEND_LUA` call carrying `appends` (whose keys must share a slot on a cluster)."""
    keys: list[str] = []
    args: list[Any] = [maxlen, now, retention_s]
    for append in appends:
        keys += (events_key(append.run_id), meta_key(append.run_id), live_channel(append.run_id))
        args += (len(append.entries), append.status, "1" if append.refresh_ttl else "0", append.expect)
        for entry in append.entries:
            args += entry
    return keys, args


def parse_reply(raw: Any) -> Reply:
    if isinstance(raw, bytes):
        return raw.decode()
    if isinstance(raw, list):
        top = raw[0] if raw else ""
        top = top.decode() if isinstance(top, bytes) else str(top or "")
        return Behind(top) if len(raw) > 1 else Conflict(top)
    if isinstance(raw, int):
        return raw
    return str(raw)


async def run_calls(redis: Any, script: Any, calls: list[tuple[list[str], list[Any]]]) -> list[list[Any]]:
    """Run several script calls in one round trip (a non-transactional pipeline; a cluster one routes per node).

    Replies in call order. Not through the Script object in the pipeline: redis-py would add a SCRIPT EXISTS round
    trip to every execute; a NOSCRIPT (Redis restarted, failover) loads the script and re-runs those calls, which is
    safe because every call of this module may be re-run.
    """
    if len(calls) == 1:
        keys, args = calls[0]
        return [await script(keys=keys, args=args)]
    async with redis.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
    out: list[list[Any]] = []
    for (keys, args), reply in zip(calls, replies, strict=True):
        if isinstance(reply, NoScriptError):
            reply = await script(keys=keys, args=args)  # loads the script, then runs the call
        elif isinstance(reply, Exception):
            raise reply
        out.append(reply)
    return out
