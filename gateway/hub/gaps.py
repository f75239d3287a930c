"""Reading a followed run's log to fill a gap in its live announcements.

The hub reads a run's stream only when the announcements cannot be trusted to be complete:
- after the run's channel was (re)subscribed on a new connection (the reader reconnected, or a cluster slot moved):
  entries appended while nobody listened were announced to no one; and entries the log trimmed meanwhile would be
  skipped silently, so the fill first checks for that (`StreamLog.check_gap`) and on a gap sends the run's viewers
  through catch-up, where they get a `reset`;
- when an announcement does not follow what the run has (`RunFeed.announce` refused it);
- when a quiet run's meta says it has entries the hub never saw (`QuietRuns`, a slow safety net for lost messages
  and for appends made by a writer that does not announce).
A fill reads by XRANGE in pages after the run's `head` and hands each page to `RunFeed.announce` like a message, so
whatever a message brought meanwhile is neither lost nor doubled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from runcast.gateway import metrics
from runcast.gateway.hub.run import RunFeed
from runcast.shared.ids import entry_key
from runcast.shared.keys import meta_key
from runcast.shared.resilience import TRANSIENT_ERRORS, Backoff
from runcast.shared.streamlog import StreamLog

log = logging.getLogger("runcast.hub")


class GapFiller:
    """At most `concurrency` fills at a time (they share the hub's pool); at most one per run, re-run while asked."""

    def __init__(
        self,
        stream_log: StreamLog,
        *,
        page_size: int,
        flush: Callable[[RunFeed], None],
        followed: Callable[[RunFeed], bool],
        concurrency: int = 8,
    ) -> None:
        self.log = stream_log
        self.page_size = page_size
        self._flush = flush
        self._followed = followed
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, run: RunFeed, *, check_trim: bool = False) -> None:
        """Read `run`'s log after its head soon (a run still joining is read once its tail is in). A gap announced
        while a fill is under way only asks for another one if that fill ends short of it (`RunFeed.missing_to`)."""
        if run.filling and not check_trim:
            return
        run.fill_wanted = True
        run.fill_check = run.fill_check or check_trim
        self.resume(run)

    def resume(self, run: RunFeed) -> None:
        if run.fill_wanted and run.started and not run.filling:
            run.filling = True
            task = asyncio.create_task(self._fill(run), name=f"runcast-hub-fill-{run.run_id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _fill(self, run: RunFeed) -> None:
        backoff = Backoff(None, cap_s=2.0)
        try:
            async with self._slots:
                while run.fill_wanted and self._followed(run):
                    check, run.fill_check, run.fill_wanted = run.fill_check, False, False
                    try:
                        await self._fill_once(run, check)
                        backoff.reset()
                        if run.missing_to > run.head_key:  # announced (as a gap) after our last page was read
                            run.fill_wanted = True
                    except TRANSIENT_ERRORS as exc:  # Redis is away: the reader is reconnecting too; try again
                        run.fill_wanted, run.fill_check = True, run.fill_check or check
                        delay = backoff.next_delay()
                        log.warning("hub: reading run %s failed (%r); again in %.2fs", run.run_id, exc, delay)
                        await asyncio.sleep(delay)
        except Exception:  # a bug or an unexpected reply: the quiet-run check asks again later
            log.exception("hub: reading run %s from the log failed", run.run_id)
        finally:
            run.filling = False

    async def _fill_once(self, run: RunFeed, check_trim: bool) -> None:
        self._flush(run)  # publish what was accepted: head == cursor from here
        metrics.GAP_FILLS.inc()
        if check_trim:
            metrics.count_read("xrange")
            reset = await self.log.check_gap(run.run_id, run.head)
            if reset is not None:
                log.warning("run %s: entries after %s were trimmed before the hub read them", run.run_id, run.head)
                run.restart_after_gap(reset.first_available)
        after = run.head
        while self._followed(run) and not run.ended:
            metrics.count_read("xrange")
            page = await self.log.read_after(run.run_id, after, count=self.page_size)
            if page:
                run.announce(after, page)  # overlaps what announcements brought meanwhile: only the new part is taken
                self._flush(run)
                after = page[-1].id
            if len(page) < self.page_size or page[-1].is_terminal:
                return


class QuietRuns:
    """The slow safety net: for runs quiet for a while, one pipelined HGET of each meta's `last_event_id` tells
    whether the run expired (no meta: end its viewers) or has entries the hub never heard of (read its log)."""

    def __init__(self, stream_log: StreamLog, filler: GapFiller, batch: int = 500) -> None:
        self.log = stream_log
        self.filler = filler
        self.batch = batch

    async def check(self, runs: Iterable[RunFeed]) -> list[RunFeed]:
        """Returns the runs that expired."""
        runs = list(runs)
        expired = []
        for start in range(0, len(runs), self.batch):
            chunk = runs[start : start + self.batch]
            async with self.log.redis.pipeline(transaction=False) as pipe:
                for run in chunk:
                    pipe.hget(meta_key(run.run_id), "last_event_id")
                lasts = await pipe.execute()
            for run, last in zip(chunk, lasts, strict=True):
                if last is None:
                    expired.append(run)
                elif last and run.started and entry_key(last) > run.head_key:
                    log.warning("run %s: %s was never announced to this gateway; reading the log", run.run_id, last)
                    self.filler.request(run)
        return expired
