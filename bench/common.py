"""What the benchmarks' command lines share: progress to stderr, a clean stop on SIGTERM, tables then one JSON line."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_and_report(
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
    json_path: str | None,
) -> int:
    """Run the benchmark, print its tables and its JSON line (also to `json_path`); 0 when every cell is ok."""
    signal.signal(signal.SIGTERM, _terminate)  # cleanup runs in the same `finally` blocks as Ctrl-C
    try:
        result = asyncio.run(run())
    except KeyboardInterrupt:
        log("interrupted: every process this benchmark started has been stopped")
        return 130
    print(render(result))
    line = json.dumps(result, separators=(",", ":"))
    print(line)
    if json_path:
        with open(json_path, "w") as handle:
            handle.write(line + "\n")
    return 0 if all(cell.get("ok") for cell in result["cells"]) else 1
