"""The fan-out hub: how a run's events get from its Redis stream to every viewer this gateway process serves.

Data flow, one gateway process:

    Redis stream  runcast:{run}:events
        │  one blocking XREAD per reader group (plain Redis: one group; a cluster: one per slot)   reader.py
        ▼
    RunFeed (per followed run): cursor, bounded in-memory tail, its subscribers                 run.py
        │  offer(entries) to each attached subscriber, never waiting                             subscriber.py
        ▼
    Subscriber (per viewer): bounded inbox; full inbox → lagging, detached
        │  Hub.subscribe() yields batches: backlog first (memory or XRANGE), then live          fanout.py
        ▼
    wire format (SSE frames / WebSocket messages), one write per batch                          ../wire/

`EventFeed` (feed.py) is the seam the routes use: `subscribe(run_id, after_id)` yields an optional `Reset`, then
batches of entries after `after_id` in order, ending with the terminal entry. `Hub` is the production feed;
`DirectFeed` (one XREAD loop per viewer) is the naive baseline the benchmark compares against.
"""

from runcast.gateway.hub.fanout import Hub
from runcast.gateway.hub.feed import DirectFeed, EventFeed

__all__ = ["DirectFeed", "EventFeed", "Hub"]
