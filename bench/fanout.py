"""Fan-out benchmark: one real gateway process, N SSE viewers from separate load processes, a real redis-server.

    python -m bench.fanout                       # hub and naive side by side: one run x N = 100, 1000, 5000 viewers,
                                                 # 10000 idle viewers, 200 runs x 1 viewer, 10/100/1000 runs x 1 viewer
    python -m bench.fanout --mode naive --viewers 1000 --idle-viewers 0
    python -m bench.fanout --mode hub --viewers 1000 --workers 1,2 --idle-viewers 0 --many-runs 0 --runs-sweep 0

`hub` runs the gateway with RUNCAST_FEED=hub (one Redis reader per run per process), `naive` with
RUNCAST_FEED=direct (one XREAD loop per viewer). Every cell gets a fresh gateway; one throwaway redis-server serves
the whole invocation (or `--redis-url`). Progress goes to stderr; the tables, then one JSON line, to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.cell import CellSpec, run_cell
from bench.common import log, run_and_report
from bench.loadgen import raise_nofile_limit
from bench.procs import start_redis
from bench.report import render

MODES = {"hub": ["hub"], "naive": ["naive"], "both": ["hub", "naive"]}


def _counts(text: str) -> list[int]:
    """Like `_ints`, but `0` (or nothing) is allowed and means no such cells."""
    if text.strip() in ("", "0"):
        return []
    return _ints(text)


def _ints(text: str) -> list[int]:
    """`100,1000,5000`; `0` alone means no loaded cells (e.g. only the idle-viewers cell)."""
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("a comma-separated list of viewer counts, e.g. 100,1000,5000 (0: none)")
    return [value for value in values if value > 0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--mode", choices=sorted(MODES), default="both", help="hub, naive (RUNCAST_FEED=direct), or both side by side")
    add("--viewers", type=_ints, default=[100, 1_000, 5_000], help="loaded cells, 0: none")
    add("--idle-viewers", type=int, default=10_000, help="an extra cell at a trickle rate; 0 skips it")
    add("--runs", type=int, default=1, help="runs published at once; viewers are spread over them")
    add("--many-runs", type=_counts, default=[200], help="cells of R runs x 1 viewer each at --many-rate; 0: none")
    add("--many-rate", type=float, default=50.0, help="events per second per run in the --many-runs cells")
    add("--runs-sweep", type=_counts, default=[10, 100, 1_000], help="cells of R runs x 1 viewer, --sweep-rate in all")
    add("--sweep-rate", type=float, default=1_000.0, help="events per second over all runs of a --runs-sweep cell")
    add("--workers", type=_ints, default=[1], help="gateway processes (`runcast gateway --workers N`), e.g. 1,2")
    add(
        "--baseline",
        default=None,
        metavar="DIR",
        help="also run every hub cell against the runcast build installed in DIR (pip install --target DIR <checkout>)"
        " as mode `base`: before/after side by side",
    )
    add("--rate", type=float, default=10.0, help="steady phase: events per second per run")
    add("--duration", type=float, default=5.0, help="steady phase: seconds of publishing")
    add("--burst-deliveries", type=int, default=200_000, help="burst size: about this many deliveries (0 skips)")
    add("--idle-rate", type=float, default=1.0, help="events per second per run in the idle-viewers cell")
    add("--payload-bytes", type=int, default=200, help="CHUNK content size (event JSON is ~130 B more)")
    add("--viewers-per-proc", type=int, default=2_500, help="viewers per load process")
    add("--min-load-procs", type=int, default=2, help="at least this many load processes (never more than viewers)")
    add("--connect-concurrency", type=int, default=200, help="handshakes in flight per load process")
    add("--phase-timeout", type=float, default=120.0, help="seconds any one phase may take before it is abandoned")
    add("--backlog", type=int, default=4_096, help="gateway listen backlog (passed to `runcast gateway`)")
    add("--redis-url", default=None, help="use this Redis (it must allow enough clients) instead of a throwaway one")
    add("--json", dest="json_path", default=None, help="also write the JSON result to this file")
    return parser


def burst_per_run(args: argparse.Namespace, viewers: int) -> int:
    """Events per run in the burst: about `--burst-deliveries` deliveries in all, 10..2000 events per run."""
    if args.burst_deliveries <= 0:
        return 0
    return max(10, min(2_000, args.burst_deliveries // viewers))


def modes(args: argparse.Namespace) -> list[str]:
    chosen = list(MODES[args.mode])
    if args.baseline and "hub" in chosen:
        chosen.insert(chosen.index("hub") + 1, "base")
    return chosen


def plan(args: argparse.Namespace) -> list[CellSpec]:
    common = {
        "payload_bytes": args.payload_bytes,
        "viewers_per_proc": args.viewers_per_proc,
        "min_load_procs": args.min_load_procs,
        "connect_concurrency": args.connect_concurrency,
        "phase_timeout": args.phase_timeout,
        "backlog": args.backlog,
    }

    def spec(mode: str, *fields: Any, workers: int = 1) -> CellSpec:
        path = args.baseline if mode == "base" else None
        return CellSpec(mode, *fields, **common, workers=workers, gateway_path=path)

    cells = []
    for viewers in args.viewers:
        for workers in args.workers:
            for mode in modes(args):  # modes alternate per N, so each sees the same machine load
                runs = min(args.runs, viewers)
                burst = burst_per_run(args, viewers)
                cells.append(spec(mode, "load", viewers, runs, args.rate, args.duration, burst, workers=workers))
    many = [(runs, args.many_rate) for runs in args.many_runs]
    many += [(runs, args.sweep_rate / runs) for runs in args.runs_sweep]
    for runs, rate in many:  # R runs x 1 viewer: what the hub costs per followed run
        for workers in args.workers:
            for mode in modes(args):
                cells.append(spec(mode, "runs", runs, runs, rate, args.duration, 0, workers=workers))
    if args.idle_viewers > 0:
        for mode in modes(args):
            runs = min(args.runs, args.idle_viewers)
            cells.append(spec(mode, "idle", args.idle_viewers, runs, args.idle_rate, args.duration, 0))
    return cells


def environment() -> dict[str, Any]:
    soft, hard = raise_nofile_limit()

    def read(path: str) -> str | None:
        try:
            with open(path) as handle:
                return handle.read().strip()
        except OSError:
            return None

    return {
        "cpus": os.cpu_count(),
        "loadavg_at_start": read("/proc/loadavg"),
        "nofile_soft": soft,
        "nofile_hard": hard,
        "somaxconn": read("/proc/sys/net/core/somaxconn"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = environment()
    log(f"fan-out benchmark: {env['cpus']} CPUs, load {env['loadavg_at_start']}, nofile {env['nofile_soft']}")
    server = None
    redis_url = args.redis_url
    if redis_url is None:
        server = start_redis(maxclients=max(1_000, env["nofile_hard"] - 100))
        redis_url = server.url
    cells: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for spec in plan(args):
            log(
                f"[{spec.mode} {spec.kind}] {spec.viewers} viewers on {spec.runs} run(s), {spec.rate:g} ev/s per run, "
                f"{spec.workers} gateway process(es)"
            )
            cells.append(await run_cell(spec, redis_url, log))
    finally:
        if server is not None:
            server.cleanup()
    settings = {key: value for key, value in vars(args).items() if key != "json_path"}
    return {
        "bench": "fanout",
        "settings": settings,
        "environment": env,
        "elapsed_s": round(time.monotonic() - started, 1),
        "cells": cells,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1 or args.rate <= 0 or args.duration <= 0 or min(args.viewers_per_proc, args.min_load_procs) < 1:
        log("--runs, --rate, --duration, --viewers-per-proc and --min-load-procs must be positive")
        return 2
    return run_and_report(lambda: run(args), render, args.json_path)


if __name__ == "__main__":
    sys.exit(main())
