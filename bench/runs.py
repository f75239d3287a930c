"""Many concurrent runs: real gateway + workers + redis-server; R runs created at once, V SSE viewers each.

    python -m bench.runs                                  # R = 1 (one at a time), 200, 1000; V = 1, 3; capacity
    python -m bench.runs --before main --repeat 3         # and the code of `main` side by side, medians of 3
    python -m bench.runs --runs 200 --viewers 1 --no-capacity

Every cell: load processes POST R runs at once (echo agent, `--tokens` whitespace tokens, scripted model at
`--delay-ms` per token) and follow each with V viewers over raw HTTP. `R = 1` means one run at a time, `--single`
times in a row. Every run's log is then read back from Redis and checked (start, one chunk per token in order,
metadata, complete; the deltas join to the input) and every viewer must have received exactly that log.
Capacity: with one worker process, the largest R whose median log length (the run created -> its terminal event sent
to Redis by the worker: pick-up and pace) stays within `--capacity-ratio` of the model's own time.
Progress goes to stderr; tables, then one JSON line, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import log, run_and_report
from bench.fanout import environment
from bench.fleet import BenchError, ProcessFleet
from bench.histogram import Histogram
from bench.procs import command_delta, host_busy_s, usec_delta
from bench.profile import Recorder, summarize
from bench.run_check import input_text, verify_runs
from bench.runload import runs_main
from bench.runs_report import render
from bench.stacks import KINDS, Design, RunStack, Snapshot, cleanup_design, extract_ref

HOST = "127.0.0.1"
VIEWERS_PER_PROC = 1_500


@dataclass(frozen=True)
class Cell:
    runs: int  # 1 = one run at a time, `single` times
    viewers: int
    single: int
    tokens: int
    delay_ms: int

    @property
    def model_s(self) -> float:
        """The scripted model's own time for the run: the first token at once, then one every `delay_ms`."""
        return (self.tokens - 1) * self.delay_ms / 1000

    @property
    def total_runs(self) -> int:
        return self.single if self.runs == 1 else self.runs


def _ints(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive counts, e.g. 1,200,1000")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.runs", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--runs", type=_ints, default=[1, 200, 1_000], help="runs created at once per cell (1 = one at a time)")
    add("--viewers", type=_ints, default=[1, 3], help="SSE viewers per run")
    add("--single", type=int, default=20, help="runs in a row for the one-at-a-time cell")
    add("--workers", type=int, default=2, help="`runcast worker` processes")
    add("--tokens", type=int, default=100, help="tokens per run (the echo agent says the input back)")
    add("--delay-ms", type=int, default=20, help="scripted model: ms between tokens (20 = 50 tokens/s)")
    add("--repeat", type=int, default=1, help="run every cell this many times; tables show the medians")
    add("--before", default=None, help="also run this git ref's code side by side (e.g. main, a commit)")
    add("--capacity", action=argparse.BooleanOptionalAction, default=True, help="search one worker's capacity")
    add("--capacity-ratio", type=float, default=1.05, help="log length / model time a run may take at capacity")
    add("--capacity-start", type=int, default=50, help="first R the capacity search tries (then doubles, bisects)")
    add("--capacity-max", type=int, default=3_200, help="largest R the capacity search tries")
    add("--cell-timeout", type=float, default=180.0, help="seconds a cell's runs may take to end")
    add("--env", action="append", default=[], metavar="NAME=VALUE", help="extra setting for every process")
    add("--profile", default=None, metavar="PREFIX", help="py-spy the first worker in R>=200, V=1 cells into PREFIX-*")
    add("--json", dest="json_path", default=None, help="also write the JSON result to this file")
    return parser


def _ms(hist: Histogram, pct: float) -> float | None:
    value = hist.percentile(pct)
    return None if value is None else round(value * 1000, 2)


def _ratio(hist: Histogram, pct: float, model_s: float) -> float | None:
    value = hist.percentile(pct)
    return round(value / model_s, 3) if value and model_s else None


def measure(cell: Cell, before: Snapshot, after: Snapshot, busy: float, events: int) -> dict[str, Any]:
    wall = max(after.at - before.at, 1e-9)
    cpu = {kind: after.cpu[kind] - before.cpu[kind] for kind in KINDS}
    cpu["redis"] = after.redis.cpu_s - before.redis.cpu_s  # INFO cpu: the server's own account
    commands = command_delta(before.redis, after.redis)
    usec = usec_delta(before.redis, after.redis)
    per_k = {kind: round(1000 * seconds / max(events, 1), 4) for kind, seconds in cpu.items()}
    return {
        "wall_s": round(wall, 3),
        "events": events,
        "events_per_s": round(events / wall, 1),
        "cpu_s": {kind: round(seconds, 3) for kind, seconds in cpu.items()},
        "cpu_s_per_1k_events": per_k,
        "worker_us_per_event": round(1e6 * cpu["worker"] / max(events, 1), 1),
        "redis_us_per_event": round(1e6 * cpu["redis"] / max(events, 1), 1),
        "redis_cmds_per_event": round(sum(commands.values()) / max(events, 1), 2),
        "redis_cmds": dict(list(commands.items())[:12]),
        "redis_usec": dict(list(usec.items())[:12]),
        "host_busy_pct": round(100 * busy / wall / (os.cpu_count() or 1), 1),
    }


async def run_cell(stack: RunStack, cell: Cell, limit_s: float, profile: Path | None = None) -> dict[str, Any]:
    """Create the cell's runs at once (or one at a time), follow them to the end, verify, measure.

    `profile`: record the first worker process with py-spy while the runs go, into this file (collapsed stacks).
    """
    text = input_text(cell.tokens)
    body = json.dumps({"agent": "echo", "input": text}).encode()
    sequential = cell.runs == 1
    total_viewers = cell.total_runs * cell.viewers
    procs = 1 if sequential else max(2, math.ceil(total_viewers / VIEWERS_PER_PROC))
    procs = min(procs, cell.total_runs)
    shares = [cell.total_runs // procs + (1 if p < cell.total_runs % procs else 0) for p in range(procs)]
    fleet = ProcessFleet()
    result: dict[str, Any] = {"design": stack.design.name, "runs": cell.runs, "viewers": cell.viewers, "ok": False}
    try:
        fleet.spawn(runs_main, [(HOST, stack.port, n, cell.viewers, body, 256, sequential) for n in shares])
        await fleet.ask(None, "ready", 60)
        before, busy0 = stack.snapshot(), host_busy_s()
        load0 = sum(await cpu_of(fleet))
        recorder = Recorder(stack.pids()["worker"][0], profile) if profile is not None else None
        created = await fleet.ask(("go",), "created", limit_s)
        run_ids = [run_id for reply in created for run_id in reply[1]]
        failures = {k: v for reply in created for k, v in reply[2].items()}
        done = await fleet.ask(("wait", limit_s), "done", limit_s + 30)
        after, busy1 = stack.snapshot(), host_busy_s()
        if recorder is not None:
            recorded = await asyncio.to_thread(recorder.stop)
            result["profile"] = summarize(recorded) if recorded else {"error": "py-spy not available or failed"}
        load1 = sum(reply[2] for reply in done)
        stack.check_alive()
        expected, wrong, logged = await asyncio.to_thread(verify_runs, stack, run_ids, text, cell.tokens)
        replies = [reply[1] for reply in await fleet.ask(("finish", expected), "result", 60)]
    except (BenchError, RuntimeError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
        return result
    finally:
        fleet.stop()
    events = sum(count for count, _ in expected.values())
    figures = measure(cell, before, after, busy1 - busy0, events)
    figures["cpu_s"]["load"] = round(load1 - load0, 3)
    figures["cpu_s_per_1k_events"]["load"] = round(1000 * (load1 - load0) / max(events, 1), 4)
    ttfc, length, latency = Histogram(), Histogram(), Histogram()
    for reply in replies:
        ttfc.merge(Histogram.from_wire(reply["ttfc"]))
        length.merge(Histogram.from_wire(reply["run_length"]))
        latency.merge(Histogram.from_wire(reply["latency"]))
    complete = sum(reply["complete"] for reply in replies)
    problems: dict[str, int] = {}
    for reply in replies:
        for reason, count in reply["problems"].items():
            problems[reason] = problems.get(reason, 0) + count
    result.update(figures)
    result.update(
        {
            "runs_created": len(run_ids),
            "runs_exact": len(run_ids) - len(wrong),
            "wrong_runs": dict(list(wrong.items())[:5]),
            "create_failures": failures,
            "viewers_total": total_viewers,
            "viewers_complete": complete,
            "viewer_problems": problems,
            "ttfc_p50_ms": _ms(ttfc, 50),
            "ttfc_p99_ms": _ms(ttfc, 99),
            "latency_p50_ms": _ms(latency, 50),
            "latency_p99_ms": _ms(latency, 99),
            "model_s": cell.model_s,
            "length_ratio_p50": _ratio(length, 50, cell.model_s),
            "length_ratio_p99": _ratio(length, 99, cell.model_s),
            "log_ratio_p50": _ratio(logged, 50, cell.model_s),
            "log_ratio_p99": _ratio(logged, 99, cell.model_s),
        }
    )
    result["ok"] = len(run_ids) == cell.total_runs and not wrong and complete == total_viewers and not failures
    return result


async def cpu_of(fleet: ProcessFleet) -> list[float]:
    from bench.procs import cpu_s

    return [cpu_s(pid) for pid in fleet.pids]


def median_cell(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's repeats as one row: every number the median of the repeats; ok only when all were ok."""
    if len(samples) == 1:
        return samples[0]
    merged = dict(samples[-1])
    for key, value in samples[-1].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [s[key] for s in samples if isinstance(s.get(key), int | float)]
            merged[key] = round(statistics.median(values), 4) if values else None
        elif isinstance(value, dict) and key.startswith("cpu_s"):
            merged[key] = {k: round(statistics.median(s[key][k] for s in samples if key in s), 4) for k in value}
    for key in ("runs", "viewers", "runs_created", "runs_exact", "viewers_total", "viewers_complete", "events"):
        if isinstance(merged.get(key), float):
            merged[key] = round(merged[key])
    merged["ok"] = all(s.get("ok") for s in samples)
    merged["repeats"] = len(samples)
    profiles = [s["profile"] for s in samples if "profile" in s]
    if profiles:
        merged["profile"] = profiles[0]
    return merged


async def capacity(design: Design, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    """The largest R one worker process keeps up with: median log length (run created -> terminal event sent, see
    `verify_runs`) <= capacity_ratio x the model's time. Measured at the worker, not at the viewer: on a box
    where the gateway (or the viewers) cannot keep up, the viewer-side figures are theirs, not the worker's. The
    stack lets one worker take every run (RUNCAST_WORKER_MAX_JOBS), so none waits in the queue for a slot."""
    env = {"RUNCAST_WORKER_MAX_JOBS": str(args.capacity_max), **env}
    stack = await asyncio.to_thread(RunStack(design, 1, args.delay_ms, env).start)
    trials: list[dict[str, Any]] = []

    async def holds(runs: int) -> bool:
        cell = Cell(runs, 1, args.single, args.tokens, args.delay_ms)
        result = await run_cell(stack, cell, args.cell_timeout)
        ratio = result.get("log_ratio_p50")
        passed = bool(result.get("ok")) and ratio is not None and ratio <= args.capacity_ratio
        trials.append({key: result.get(key) for key in TRIAL_KEYS} | {"passed": passed})
        log(f"  capacity {design.name}: R={runs} log length {ratio}x -> {'holds' if passed else 'too many'}")
        return passed

    try:
        low, high = 0, None
        runs = args.capacity_start
        while runs <= args.capacity_max:
            if await holds(runs):
                low, runs = runs, runs * 2
            else:
                high = runs
                break
        if high is not None:
            for _ in range(3):  # bisect to within ~1/8 of the bracket
                mid = (low + high) // 2
                if mid in (low, high) or high - low <= max(10, low // 10):
                    break
                if await holds(mid):
                    low = mid
                else:
                    high = mid
    finally:
        await asyncio.to_thread(stack.stop)
    return {"design": design.name, "capacity_runs": low, "first_failing": high, "trials": trials}


TRIAL_KEYS = ("runs", "ok", "log_ratio_p50", "length_ratio_p50", "ttfc_p50_ms", "worker_us_per_event")


def parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SystemExit(f"--env wants NAME=VALUE, got {pair!r}")
        env[name] = value
    return env


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env_info = environment()
    log(f"runs benchmark: {env_info['cpus']} CPUs, load {env_info['loadavg_at_start']}")
    extra = parse_env(args.env)
    designs = [Design("after", "this checkout")]
    if args.before:
        designs.append(await asyncio.to_thread(extract_ref, args.before))
    stacks: list[RunStack] = []
    cells: list[dict[str, Any]] = []
    capacities: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        for design in designs:
            stacks.append(await asyncio.to_thread(RunStack(design, args.workers, args.delay_ms, extra).start))
        samples: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        for repeat in range(args.repeat):
            for runs in args.runs:
                for viewers in args.viewers:
                    cell = Cell(runs, viewers, args.single, args.tokens, args.delay_ms)
                    order = stacks if repeat % 2 == 0 else stacks[::-1]  # neither design always goes first
                    for stack in order:
                        what = "one at a time" if runs == 1 else "at once"
                        log(f"[{stack.design.name} {repeat + 1}/{args.repeat}] R={runs} ({what}), V={viewers}")
                        profile = None
                        if args.profile and repeat == 0 and runs >= 200 and viewers == 1:
                            profile = Path(f"{args.profile}-{stack.design.name}-R{runs}.txt")
                        result = await run_cell(stack, cell, args.cell_timeout, profile)
                        log(f"  -> {summary(result)}")
                        samples.setdefault((stack.design.name, runs, viewers), []).append(result)
        cells = [median_cell(s) for s in samples.values()]
        for stack in stacks:
            await asyncio.to_thread(stack.stop)
        stacks = []
        if args.capacity:
            for design in designs:
                log(f"[{design.name}] capacity of one worker at {1000 / args.delay_ms:g} tokens/s")
                capacities.append(await capacity(design, args, extra))
    finally:
        for stack in stacks:
            await asyncio.to_thread(stack.stop)
        for design in designs:
            cleanup_design(design)
    settings = {key: value for key, value in vars(args).items() if key != "json_path"}
    return {
        "bench": "runs",
        "settings": settings,
        "designs": {d.name: d.label for d in designs},
        "environment": env_info,
        "elapsed_s": round(time.monotonic() - started, 1),
        "cells": cells,
        "capacity": capacities,
    }


def summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED: {result['error']}"
    return (
        f"ttfc p50 {result['ttfc_p50_ms']} ms p99 {result['ttfc_p99_ms']} ms, latency p99 {result['latency_p99_ms']}"
        f" ms, length x{result['length_ratio_p50']}, worker {result['worker_us_per_event']} us/ev, redis "
        f"{result['redis_us_per_event']} us/ev {result['redis_cmds_per_event']} cmds/ev, exact "
        f"{result['runs_exact']}/{result['runs_created']}, "
        f"viewers {result['viewers_complete']}/{result['viewers_total']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.tokens, args.single, args.workers, args.repeat, args.capacity_start) < 1 or args.delay_ms < 1:
        log("--tokens, --single, --workers, --repeat, --capacity-start and --delay-ms must be positive")
        return 2
    return run_and_report(lambda: run(args), render, args.json_path)


if __name__ == "__main__":
    sys.exit(main())
