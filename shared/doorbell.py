"""The job queue's doorbell: a queued run is picked up within milliseconds, without a busy poll.

arq's worker looks for jobs by polling its queue every `poll_delay` (0.5 s): that pause was the whole start latency
of a run, and a shorter one is a busy poll whose Redis cost grows with every worker added. So the enqueuer also
rings a doorbell: it RPUSHes the job id onto a list next to the queue, and each worker with a free slot waits on
that list with BLPOP (Redis wakes the longest-waiting worker: one wake-up per job, whatever the number of workers)
and starts the jobs it popped at once (arq's own `start_jobs`: its in-progress guard, retries and abort still
apply). The regular poll still runs every `poll_delay` and finds whatever a bell did not bring (a ring lost with a
connection, deferred or retried jobs), so a missed bell costs at most the old latency.

The list is capped (LTRIM) so bells rung while no worker runs cannot pile up without bound.

`enqueue_and_ring` enqueues an arq job and rings in one round trip: a script doing what arq's `enqueue_job` does (no
job or result under that id yet -> the job, serialized by arq's own `serialize_job`, under arq's job key with arq's
expiry; the id in the queue at the enqueue time) plus the bell. arq's `enqueue_job` takes three round trips (WATCH,
EXISTS, MULTI/EXEC) and the bell a fourth: that was most of the time a `POST /v1/runs` took.
"""

from __future__ import annotations

import weakref
from typing import Any

from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms

# KEYS: job key, result key, queue, doorbell.  ARGV: job id, serialized job, score (ms), expiry (ms), doorbell cap.
# 1 = enqueued and rung; 0 = a job or result with this id exists already (like arq's enqueue_job returning None).
ENQUEUE_LUA = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
return 1
"""

DOORBELL_MAX = 10_000
"""Bells kept at most; older ones are dropped (their jobs are still found by the regular poll)."""


def doorbell_key(queue_name: str) -> str:
    return f"{queue_name}:doorbell"


async def ring(queue: Any, queue_name: str, job_id: str) -> None:
    """Tell a waiting worker that `job_id` is in the queue (one round trip)."""
    key = doorbell_key(queue_name)
    async with queue.pipeline(transaction=False) as pipe:
        pipe.rpush(key, job_id)
        pipe.ltrim(key, -DOORBELL_MAX, -1)
        await pipe.execute()


_SCRIPTS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


async def enqueue_and_ring(queue: Any, queue_name: str, function: str, job_id: str, *args: Any) -> bool:
    """arq's `enqueue_job(function, *args, _job_id=job_id, _queue_name=queue_name)` and `ring`, in one round trip.

    False when a job (or a result) with this id exists already. `queue` is an `arq.connections.ArqRedis`.
    """
    script = _SCRIPTS.get(queue)
    if script is None:
        script = _SCRIPTS[queue] = queue.register_script(ENQUEUE_LUA)
    now = timestamp_ms()
    job = serialize_job(function, args, {}, None, now, serializer=queue.job_serializer)
    keys = [job_key_prefix + job_id, result_key_prefix + job_id, queue_name, doorbell_key(queue_name)]
    return bool(await script(keys=keys, args=[job_id, job, now, queue.expires_extra_ms, DOORBELL_MAX]))


async def wait_for_bells(queue: Any, queue_name: str, most: int, timeout_s: float) -> list[bytes]:
    """Job ids rung (up to `most`), waiting up to `timeout_s` for the first one; [] when none came."""
    key = doorbell_key(queue_name)
    first = await queue.blpop([key], timeout=max(timeout_s, 0.01))  # 0 would block for ever
    if first is None:
        return []
    ids = [_as_bytes(first[1])]
    if most > 1:
        more = await queue.lpop(key, most - 1)
        ids += [_as_bytes(job_id) for job_id in more or []]
    return ids


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
