"""The load process of `bench.stalled`: opens `--count` stalled viewers of one run (raw sockets with a 4 KiB receive
buffer that send their request and never read; `tests/support/stalled.py`), then answers commands on stdin, one JSON
line each on stdout:

    check K   the first K viewers read what they were sent; any that did not get the terminal event (the gateway
              closed it: a stall) resumes after its last event id; each is compared with the run's log
    quit      close every viewer and exit

A separate process so that the benchmark's own process holds none of the viewers' sockets or memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.soak import compare
from tests.support.stalled import Outcome, StalledViewer, open_stalled


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def check_one(viewer: StalledViewer, log_ids: list[str], timeout_s: float) -> dict[str, Any]:
    first = viewer.read_all(timeout_s)
    got, ended, resumed = [event_id for event_id, _ in first.events], first.ended, False
    if first.ended != "terminal":
        resumed = True
        again = StalledViewer(
            viewer.host,
            viewer.port,
            viewer.run_id,
            viewer.token,
            websocket=viewer.websocket,
            last_event_id=first.last_id,
            rcvbuf=1 << 20,
        ).open()
        rest: Outcome = again.read_all(timeout_s)
        got += [event_id for event_id, _ in rest.events]
        ended = f"{first.ended} -> resumed: {rest.ended}"
    lost, duplicated, out_of_order = compare(log_ids, list(got))
    return {"lost": lost, "duplicated": duplicated, "out_of_order": out_of_order, "ended": ended, "resumed": resumed}


def check(viewers: list[StalledViewer], count: int, log_ids: list[str], timeout_s: float) -> dict[str, Any]:
    sample = viewers[:count]
    with ThreadPoolExecutor(min(16, max(1, len(sample)))) as pool:
        results = list(pool.map(lambda viewer: check_one(viewer, log_ids, timeout_s), sample))
    endings: dict[str, int] = {}
    for result in results:
        endings[result["ended"]] = endings.get(result["ended"], 0) + 1
    return {
        "checked": len(results),
        "lost": sum(r["lost"] for r in results),
        "duplicated": sum(r["duplicated"] for r in results),
        "out_of_order": sum(r["out_of_order"] for r in results),
        "resumed": sum(r["resumed"] for r in results),
        "endings": endings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--ws", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    raise_fd_limit()
    viewers = open_stalled(args.url, args.run_id, args.token, args.count, websocket=args.ws)
    print(json.dumps({"ready": len(viewers)}), flush=True)
    for line in sys.stdin:
        command, *rest = line.split(maxsplit=2)
        if command == "check":
            log_ids = json.loads(rest[1])
            print(json.dumps(check(viewers, int(rest[0]), log_ids, args.timeout)), flush=True)
        elif command == "quit":
            break
    for viewer in viewers:
        viewer.close()


if __name__ == "__main__":
    main()
