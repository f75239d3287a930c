"""Prometheus metrics of the gateway's read path, served on `/metrics`.

Created once at import into the default registry: several app instances in one process (tests, the demo) share them
instead of registering duplicates.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from runcast.shared.streamlog import Entry

SUBSCRIBERS = Gauge("runcast_hub_subscribers", "Subscribers (SSE and WebSocket viewers) currently attached to the hub")
READERS = Gauge("runcast_hub_readers", "Live reader connections (one per reader group: a Redis, or a cluster shard)")
RUNS_FOLLOWED = Gauge("runcast_hub_runs_followed", "Runs whose live channel the hub's readers are subscribed to")
STREAM_READS = Counter(
    "runcast_hub_stream_reads",
    "Redis stream reads issued by the hub, by command (xrevrange: joins; xrange: gap fills and catch-ups)",
    ["command"],
)
GAP_FILLS = Counter("runcast_hub_gap_fills", "Times a followed run was read from the log to fill a gap (resubscribe)")
CATCHUPS = Counter("runcast_hub_catchups", "Times a subscriber fell behind, was detached and caught up from the log")
VIEWER_STALLS = Counter(
    "runcast_viewer_stalls",
    "SSE/WebSocket viewers closed (resumably) because their connection took nothing for RUNCAST_VIEWER_STALL_S",
)
READER_ERRORS = Counter("runcast_hub_reader_errors", "Redis errors seen by hub readers (each: back off, reconnect)")


class WeightedHistogram(Collector):
    """A histogram whose `observe` takes a weight: the hub hands one event to many viewers in one pass, and the lag of
    each of those deliveries is the same figure, so it is recorded once with the number of viewers as its weight
    (prometheus_client's Histogram can only add one observation, under a lock, at a time)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: +Inf
        self.total = 0.0
        REGISTRY.register(self)

    def observe(self, value: float, weight: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.total += value * weight

    def collect(self) -> Iterator[HistogramMetricFamily]:
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], buckets, self.total)
        yield family


class FastCounter(Collector):
    """A counter for the per-delivery hot path: a plain int, read when /metrics is collected (no lock per `inc`;
    the gateway's event loop is its only writer)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0
        REGISTRY.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


EVENTS_DELIVERED = FastCounter("runcast_hub_events_delivered", "Events handed to subscribers")
DIRECT_DELIVERIES = FastCounter(
    "runcast_hub_direct_deliveries",
    "Events the hub wrote to a viewer's connection itself (a subset of runcast_hub_events_delivered)",
)
ANNOUNCEMENTS = FastCounter("runcast_hub_announcements", "Live announcements of new entries received by hub readers")
DELIVERY_LAG = WeightedHistogram(
    "runcast_hub_delivery_lag_seconds",
    "Publish-to-delivery lag: the entry id's millisecond timestamp to the moment the hub hands the event over",
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def count_read(command: str) -> None:
    STREAM_READS.labels(command).inc()


def delivered(entries: Iterable[Entry], *, observe_lag: bool, times: int = 1, direct: bool = False) -> None:
    """Count a batch delivered to `times` subscribers; `observe_lag` is off for a join's backlog (history, not lag);
    `direct`: the hub wrote it to their connections itself."""
    count = 0
    now_ms = time.time() * 1000
    for entry in entries:
        count += 1
        if observe_lag:
            published_ms = int(entry.id.partition("-")[0])
            DELIVERY_LAG.observe(max(0.0, now_ms - published_ms) / 1000, times)
    EVENTS_DELIVERED.inc(count * times)
    if direct:
        DIRECT_DELIVERIES.inc(count * times)


def delivered_directly(keys: list[tuple[int, int]], times: int) -> None:
    """`delivered` for the run's pass: the same entries (their id keys: ms first) to `times` direct subscribers."""
    now_ms = time.time() * 1000
    for ms, _ in keys:
        DELIVERY_LAG.observe(max(0.0, now_ms - ms) / 1000, times)
    EVENTS_DELIVERED.value += len(keys) * times
    DIRECT_DELIVERIES.value += len(keys) * times
