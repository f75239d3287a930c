"""Ending a run with its terminal ERROR when Redis may be refusing writes.

The terminal event is the one write a run must never lose: without it the run stays `running` and its viewers wait
until they give up. So it is retried with backoff for as long as the store refuses or fails it (OOM, MISCONF,
READONLY, a lost connection), with no deadline: it lands as soon as Redis takes a write again, or the run turns out to
have been ended meanwhile by someone else (a cancel, the sweeper's `worker_lost`). The append script is atomic and
refuses anything after a terminal event, so whoever writes first ends the run and the other write is a no-op: one
terminal event, never two. Only the job's cancellation (worker shutdown) stops the waiting.
"""

from __future__ import annotations

import logging

from runcast.shared.resilience import STORE_ERRORS, Backoff, describe
from runcast.shared.streamlog import StreamLog, UnknownRun

log = logging.getLogger("runcast.worker")


async def end_when_writable(stream_log: StreamLog, run_id: str, error_type: str, detail: str) -> bool:
    """Append the run's terminal ERROR `error_type`, retrying store errors until it lands. True when this call ended
    the run, False when it had already ended (or is gone)."""
    backoff = Backoff(None, cap_s=1.0)
    while True:
        try:
            return await stream_log.end_run(run_id, error_type, detail) is not None
        except UnknownRun:
            return False
        except STORE_ERRORS as exc:
            if backoff.failures == 0:
                log.warning("run %s: cannot record its end (%s) yet: %s; retrying", run_id, error_type, describe(exc))
            await backoff.wait(exc)
