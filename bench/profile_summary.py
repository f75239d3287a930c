"""Summarise a py-spy profile of the gateway: where its CPU goes, by the parts docs/performance.md names.

    py-spy record --pid <gateway pid> --duration 10 --format raw --output gw.raw   # while a benchmark runs
    python -m bench.profile_summary gw.raw

Prints the share of samples (of the main thread) under each part, then the top functions by own time. A sample is
counted in the first part, in this order, whose marker appears anywhere in its stack.
"""

from __future__ import annotations

import sys
from collections import Counter

PARTS = [
    ("socket write to viewers (transport.write)", ("_HttptoolsBody.write", "_H11Body.write", "httptools_impl.py:5")),
    ("hub: encode frames", ("sse_batch", "sse_frame")),
    ("hub: one pass over a run's viewers", ("RunFeed._pass",)),
    ("hub: publish (cursor, history, sequencing)", ("RunFeed.publish", "RunFeed.flush", "Hub.flush")),
    ("hub: Redis input (announcements / XREAD replies)", ("LiveReader", "StreamReader._xread", "StreamReader._run")),
    ("per-viewer task, SSE response, ASGI send layers", ("SSEResponse.__call__", "sse_stream", "Hub._serve")),
    ("garbage collector", ("gc_collect",)),
]


def summarise(lines: list[str]) -> str:
    parts: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or ("<module> (runcast/cli.py" not in stack and "_run_module_as_main" not in stack):
            continue  # other threads (thread pool, py-spy's own)
        samples = int(count)
        total += samples
        own[stack.split(";")[-1]] += samples
        for name, markers in PARTS:
            if any(marker in stack for marker in markers):
                parts[name] += samples
                break
        else:
            parts["event loop and everything else"] += samples
    if not total:
        return "no samples of the main thread"
    out = [f"{total} samples of the main thread"]
    out += [f"{100 * n / total:5.1f} %  {name}" for name, n in parts.most_common()]
    out += ["", "top functions by own time:"]
    out += [f"{100 * n / total:5.1f} %  {name[:140]}" for name, n in own.most_common(15)]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as handle:
        print(summarise(handle.readlines()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
