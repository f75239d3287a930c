"""A mergeable latency histogram: fixed 20 µs buckets in a sparse dict, so load processes can ship it cheaply."""

from __future__ import annotations

from collections import Counter

BUCKET_US = 20


class Histogram:
    """Counts of latencies (seconds) in `BUCKET_US`-wide buckets; percentiles are reported at bucket upper bounds."""

    __slots__ = ("buckets", "count", "max_s")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.max_s = 0.0

    def add(self, seconds: float, n: int = 1) -> None:
        if seconds < 0.0:  # same host, same clock: only rounding can make it negative
            seconds = 0.0
        self.buckets[int(seconds * 1_000_000) // BUCKET_US] += n
        self.count += n
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.max_s = max(self.max_s, other.max_s)

    def percentile(self, pct: float) -> float | None:
        """The latency (seconds) at or under which `pct` percent of the samples fall; None when empty."""
        if not self.count:
            return None
        rank = max(1, round(self.count * pct / 100.0))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min((bucket + 1) * BUCKET_US / 1_000_000, self.max_s)
        return self.max_s

    def to_wire(self) -> tuple[dict[int, int], int, float]:
        return dict(self.buckets), self.count, self.max_s

    @classmethod
    def from_wire(cls, wire: tuple[dict[int, int], int, float]) -> Histogram:
        hist = cls()
        hist.buckets.update(wire[0])
        hist.count, hist.max_s = wire[1], wire[2]
        return hist
