"""The fan-out hub: how a run's events get from Redis to every viewer this gateway process serves.

Data flow, one gateway process:

    append script (worker)  XADD to runcast:{run}:events, then PUBLISH on runcast:{run}:live   ../../shared/streamlog
        │  one subscription connection per reader group (plain Redis: one; a cluster: one per shard)   reader.py
        ▼                                                   (the stream is read only to fill gaps:   gaps.py)
    RunFeed (per followed run): cursor, bounded in-memory tail, its subscribers                 run.py
        │  one pass per batch: direct viewers get the encoded bytes written to their connection,
        │  the others an `offer` to their inbox; never waiting                                   subscriber.py
        ▼
    Subscriber (per viewer): a sink the pass writes to, or a bounded inbox; full → lagging, detached
        │  Hub.subscribe() yields what the viewer's own task sends: backlog (memory or XRANGE),
        │  catch-up, and live batches when there is no sink                                      fanout.py
        ▼
    wire format (SSE frames / WebSocket messages), one write per batch                          ../wire/

`EventFeed` (feed.py) is the seam the routes use: `subscribe(run_id, after_id, sink=None)` yields an optional
`Reset`, then batches of entries after `after_id` in order, ending with the terminal entry (the live ones written to
`sink` instead, when given). `Hub` is the production feed; `DirectFeed` (one XREAD loop per viewer) is the naive
baseline the benchmark compares against.
"""

from runcast.gateway.hub.fanout import Hub
from runcast.gateway.hub.feed import DirectFeed, EventFeed

__all__ = ["DirectFeed", "EventFeed", "Hub"]
