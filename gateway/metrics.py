"""Prometheus metrics of the gateway's read path, served on `/metrics`.

Created once at import into the default registry: several app instances in one process (tests, the demo) share them
instead of registering duplicates.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from runcast.shared.streamlog import Entry

SUBSCRIBERS = Gauge("runcast_hub_subscribers", "Subscribers (SSE and WebSocket viewers) currently attached to the hub")
READERS = Gauge("runcast_hub_readers", "Live multiplexed XREAD reader tasks (one per reader group)")
RUNS_FOLLOWED = Gauge("runcast_hub_runs_followed", "Runs whose stream the hub's readers are currently following")
EVENTS_DELIVERED = Counter("runcast_hub_events_delivered", "Events handed to subscribers")
STREAM_READS = Counter(
    "runcast_hub_stream_reads",
    "Redis stream reads issued by the hub, by command (xread: live readers; xrange/xrevrange: joins and catch-ups)",
    ["command"],
)
CATCHUPS = Counter("runcast_hub_catchups", "Times a subscriber fell behind, was detached and caught up from the log")
READER_ERRORS = Counter("runcast_hub_reader_errors", "Redis errors seen by hub readers (each: back off, reconnect)")
DELIVERY_LAG = Histogram(
    "runcast_hub_delivery_lag_seconds",
    "Publish-to-delivery lag: the entry id's millisecond timestamp to the moment the hub hands the event over",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def count_read(command: str) -> None:
    STREAM_READS.labels(command).inc()


def delivered(entries: Iterable[Entry], *, observe_lag: bool) -> None:
    """Count a delivered batch; `observe_lag` is off for a join's backlog (history, not lag)."""
    count = 0
    now_ms = time.time() * 1000
    for entry in entries:
        count += 1
        if observe_lag:
            published_ms = int(entry.id.partition("-")[0])
            DELIVERY_LAG.observe(max(0.0, now_ms - published_ms) / 1000)
    EVENTS_DELIVERED.inc(count)
