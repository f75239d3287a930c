"""The job queue's doorbell: a queued run is picked up within milliseconds, without a busy poll.

arq's worker looks for jobs by polling its queue every `poll_delay` (0.5 s): that pause was the whole start latency
of a run, and a shorter one is a busy poll whose Redis cost grows with every worker added. So the enqueuer also
rings a doorbell: it RPUSHes the job id onto a list next to the queue, and each worker with a free slot waits on
that list with BLPOP (Redis wakes the longest-waiting worker: one wake-up per job, whatever the number of workers)
and starts the jobs it popped at once (arq's own `start_jobs`: its in-progress guard, retries and abort still
apply). The regular poll still runs every `poll_delay` and finds whatever a bell did not bring (a ring lost with a
connection, deferred or retried jobs), so a missed bell costs at most the old latency.

The list is capped (LTRIM) so bells rung while no worker runs cannot pile up without bound.
"""

from __future__ import annotations

from typing import Any

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
