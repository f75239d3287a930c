"""Sizing the pages a viewer's backlog or catch-up is read from Redis in: by bytes, not only by entries.

A page stays in the gateway's memory until the viewer's connection has taken it (`wire/outlet.py`), so with big events
a fixed count (500) would make what a slow or stalled viewer holds depend on the run's events; a page of about
`PAGE_BYTES` keeps it bounded whatever they are. The size of the next page's entries is guessed from a sample of the
entries just before it (the run's in-memory tail for the first page, then the last page read).
"""

from __future__ import annotations

from runcast.shared.streamlog import Entry

PAGE_BYTES = 32 * 1024
"""About how many bytes of events one backlog/catch-up page read from Redis holds (fewer entries when they are big)."""

ENTRY_OVERHEAD = 64
"""Bytes counted per entry beyond its event JSON (id, type, the Entry object)."""


def page_count(sizes: list[int], page_bytes: int, page_size: int) -> int:
    """Entries per page so that entries the size of `sizes` (a sample) fill about `page_bytes`; 1 to `page_size`."""
    if not sizes:
        return page_size
    average = sum(sizes) / len(sizes) + ENTRY_OVERHEAD
    return max(1, min(page_size, int(page_bytes // average)))


def entry_sizes(entries: list[Entry], sample: int = 32) -> list[int]:
    """The event sizes of the last `sample` of `entries`."""
    return [len(entry.event) for entry in entries[-sample:]]
