"""One benchmark cell: a fresh gateway, N viewers in load processes, a steady phase, a burst, the terminal event.

Phases of a cell (each with its own timeout; everything started here is stopped in `finally`):
1. start `runcast gateway` with RUNCAST_FEED; one warm-up run end to end; read the gateway's RSS;
2. connect N idle viewers (spread over the cell's runs) from ceil(N / viewers_per_proc) load processes; RSS again;
3. steady: `rate` events/s per run for `duration` s, then wait until every viewer has them all ("drained");
4. burst: K events per run back to back, drained the same way (throughput under saturation);
5. a COMPLETE on every run; every viewer must end with exactly the run's events, ids strictly increasing.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis
from redis.asyncio import Redis

from bench.fleet import BenchError, ProcessFleet
from bench.histogram import Histogram
from bench.loadgen import load_main
from bench.probe import Probe
from bench.procs import (
    command_delta,
    process_tree,
    redis_snapshot,
    start_gateway,
    tree_cpu_s,
    tree_rss_kib,
)
from bench.publisher import PhaseResult, Publisher
from runcast.shared.redis_client import redis_from_url
from runcast.shared.tokens import issue_token
from tests.support.processes import TEST_SECRET, GatewayProcess

HOST = "127.0.0.1"
FEEDS = {"hub": "hub", "naive": "direct", "base": "hub"}
"""`base`: the hub read path of another build of the gateway (`--baseline`), for before/after in one run."""


@dataclass(frozen=True)
class CellSpec:
    mode: str  # "hub" | "naive" | "base"
    kind: str  # "load" (one run, many viewers) | "idle" | "runs" (many runs, one viewer each)
    viewers: int
    runs: int
    rate: float
    duration: float
    burst_per_run: int  # 0: no burst phase
    payload_bytes: int
    viewers_per_proc: int
    min_load_procs: int
    connect_concurrency: int
    phase_timeout: float
    backlog: int
    workers: int = 1  # uvicorn worker processes of the gateway (`runcast gateway --workers N`)
    gateway_path: str | None = None  # PYTHONPATH of the gateway process (a baseline build), else this checkout

    @property
    def feed(self) -> str:
        return FEEDS[self.mode]


class LoadFleet(ProcessFleet):
    """The load processes of one cell and the request/reply traffic with them."""

    def __init__(self, spec: CellSpec, port: int, run_ids: list[str]) -> None:
        super().__init__()
        procs = min(spec.viewers, max(spec.min_load_procs, math.ceil(spec.viewers / spec.viewers_per_proc)))
        secret = TEST_SECRET.encode()
        tokens = {run_id: issue_token(secret, run_id, 3_600) for run_id in run_ids}
        viewers = [(run_ids[i % len(run_ids)], tokens[run_ids[i % len(run_ids)]]) for i in range(spec.viewers)]
        self.plan = [viewers[p::procs] for p in range(procs)]
        self.port = port
        self.concurrency = spec.connect_concurrency

    def start(self) -> None:
        self.spawn(load_main, [(HOST, self.port, share, self.concurrency) for share in self.plan])

    async def connected(self, limit_s: float) -> tuple[int, dict[str, int]]:
        replies = await self.ask(None, "connected", limit_s)
        errors: dict[str, int] = {}
        for reply in replies:
            for reason, count in reply[3].items():
                errors[reason] = errors.get(reason, 0) + count
        return sum(reply[1] for reply in replies), errors

    async def progress(self, targets: dict[str, int]) -> tuple[int, list[float]]:
        replies = await self.ask(("progress", targets), "progress", 30)
        return sum(reply[1] for reply in replies), [reply[2] for reply in replies]

    async def finish(self, expected: dict[str, tuple[int, int]], limit_s: float) -> list[dict[str, Any]]:
        replies = await self.ask(("finish", expected, limit_s), "result", limit_s + 30)
        return [reply[1] for reply in replies]


async def settle(pid: int, limit_s: float, idle_pct: float = 5.0) -> float:
    """Wait until the gateway is idle (every subscriber parked in its read) before reading its RSS; seconds taken."""
    start = time.monotonic()
    await asyncio.sleep(0.5)
    while time.monotonic() - start < limit_s:
        before = tree_cpu_s(pid)
        await asyncio.sleep(0.5)
        if 100 * (tree_cpu_s(pid) - before) / 0.5 < idle_pct:
            break
    return round(time.monotonic() - start, 2)


async def drain(fleet: LoadFleet, publisher: Publisher, limit_s: float) -> tuple[bool, int]:
    """Wait until every live viewer has every event published so far; (drained?, viewers still behind)."""
    deadline = time.monotonic() + limit_s
    while True:
        behind, _ = await fleet.progress(dict(publisher.published))
        if behind == 0:
            return True, 0
        if time.monotonic() > deadline:
            return False, behind
        await asyncio.sleep(0.05)


def phase_figures(results: list[dict[str, Any]], phase: PhaseResult, nominal_s: float, latency: bool) -> dict[str, Any]:
    """Deliveries/s = the phase's deliveries / max(nominal length, last viewer's receive of a phase event - first
    publish): a steady phase that keeps up shows exactly the offered rate; one that falls behind shows less."""
    hist, deliveries, last_recv = Histogram(), 0, phase.start
    for result in results:
        stats = result["phases"].get(phase.name)
        if stats:
            deliveries += stats["count"]
            hist.merge(Histogram.from_wire(stats["hist"]))
            last_recv = max(last_recv, stats["last_recv"])
    span = max(last_recv - phase.start, nominal_s, 1e-9)
    figures: dict[str, Any] = {
        "events_per_run": phase.events_per_run,
        "events": phase.total_events,
        "publish_s": round(phase.end - phase.start, 3),
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / span),
        "delivery_span_s": round(span, 3),
    }
    if latency:
        for name, pct in (("p50_ms", 50), ("p99_ms", 99)):
            value = hist.percentile(pct)
            figures[name] = None if value is None else round(value * 1000, 2)
        figures["max_ms"] = round(hist.max_s * 1000, 2)
    return figures


async def publisher_cost(client: Redis, admin: redis.Redis, events: int = 20) -> float:
    """Redis commands one append costs with nobody reading (EVALSHA + what the script runs): subtracted from the
    phases' commands per event to give the read path's own share."""
    calibration = Publisher(client, 1, 16)
    await calibration.create_runs()
    before = redis_snapshot(admin)
    await calibration.burst(events, phase="calibration")
    return round(sum(command_delta(before, redis_snapshot(admin)).values()) / events, 2)


async def warm_up(gateway: GatewayProcess, redis_url: str) -> None:
    """One run end to end through this gateway (imports, script cache, first connections) before measuring."""
    client = redis_from_url(redis_url)
    try:
        warm = Publisher(client, 1, 16)
        await warm.create_runs()
        await warm.steady(1000, 0.002, phase="warmup")
        await warm.complete()
        run_id = warm.run_ids[0]
        token = issue_token(TEST_SECRET.encode(), run_id, 600)
        async with httpx.AsyncClient(timeout=30) as http:
            reply = await http.get(f"{gateway.url}/v1/runs/{run_id}/events", params={"token": token})
        if reply.status_code != 200 or "event: complete" not in reply.text:
            raise BenchError(f"warm-up stream failed: HTTP {reply.status_code} {reply.text[:200]}")
    finally:
        await client.aclose()


async def run_cell(spec: CellSpec, redis_url: str, log: Any) -> dict[str, Any]:
    cell: dict[str, Any] = {"mode": spec.mode, "feed": spec.feed, "kind": spec.kind, "viewers": spec.viewers}
    cell.update(runs=spec.runs, rate=spec.rate, duration_s=spec.duration, payload_bytes=spec.payload_bytes)
    cell["workers"] = spec.workers
    gateway: GatewayProcess | None = None
    fleet: LoadFleet | None = None
    metrics_http: httpx.AsyncClient | None = None
    client = redis_from_url(redis_url, max_connections=max(8, spec.runs * 2))
    admin = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=10)
    try:
        gateway = await asyncio.to_thread(
            start_gateway, redis_url, spec.feed, spec.backlog, spec.workers, spec.gateway_path
        )
        await asyncio.wait_for(warm_up(gateway, redis_url), spec.phase_timeout)
        limit = spec.phase_timeout
        publisher_cmds = await asyncio.wait_for(publisher_cost(client, admin), limit)
        cell["publisher_cmds_per_event"] = publisher_cmds
        publisher = Publisher(client, spec.runs, spec.payload_bytes)
        await asyncio.wait_for(publisher.create_runs(), limit)
        await asyncio.sleep(0.5)
        rss_before = tree_rss_kib(gateway.pid)
        log(f"  connecting {spec.viewers} viewers ({spec.feed} feed) ...")
        fleet = LoadFleet(spec, gateway.port, publisher.run_ids)
        fleet.start()
        connect_start = time.monotonic()
        connected, errors = await fleet.connected(30 + spec.viewers / 50)
        cell["connect_s"] = round(time.monotonic() - connect_start, 2)
        cell["connected"], cell["connect_errors"] = connected, errors
        cell["settle_s"] = await settle(gateway.pid, limit_s=5 + spec.viewers / 1_000)
        rss_after = tree_rss_kib(gateway.pid)
        cell["rss_before_kib"], cell["rss_after_kib"] = rss_before, rss_after
        cell["rss_per_viewer_kib"] = round((rss_after - rss_before) / max(connected, 1), 2)
        cell["gateway_fds"] = sum(len(_listdir(f"/proc/{pid}/fd")) for pid in process_tree(gateway.pid))
        log(f"  {connected}/{spec.viewers} connected in {cell['connect_s']} s; RSS {rss_before} -> {rss_after} KiB")
        if connected == 0:
            raise BenchError(f"no viewer connected: {errors}")

        metrics_http = httpx.AsyncClient(timeout=10) if spec.workers == 1 else None
        probe = Probe(gateway.pid, admin, metrics_http, gateway.url)
        phases: list[tuple[PhaseResult, dict[str, Any], float]] = []
        before = await probe.snap(fleet)
        steady = await asyncio.wait_for(publisher.steady(spec.rate, spec.duration), limit + spec.duration)
        drained, behind = await drain(fleet, publisher, spec.phase_timeout)
        usage = probe.between(before, await probe.snap(fleet), steady.total_events)
        phases.append((steady, {**usage, "drained": drained, "viewers_behind": behind}, spec.duration))
        log(f"  steady: {steady.total_events} events published, drained={drained}")
        if spec.burst_per_run and drained:
            before = await probe.snap(fleet)
            burst = await asyncio.wait_for(publisher.burst(spec.burst_per_run), limit)
            drained, behind = await drain(fleet, publisher, spec.phase_timeout)
            usage = probe.between(before, await probe.snap(fleet), burst.total_events)
            phases.append((burst, {**usage, "drained": drained, "viewers_behind": behind}, 0.0))
            log(f"  burst: {burst.total_events} events published, drained={drained}")

        await asyncio.wait_for(publisher.complete(), limit)
        results = await fleet.finish(dict(publisher.tally), spec.phase_timeout)
        for phase, usage, nominal_s in phases:
            steady_phase = phase.name == "steady"
            figures = {**phase_figures(results, phase, nominal_s, steady_phase), **usage}
            figures["read_cmds_per_event"] = round(figures["redis_cmds_per_event"] - publisher_cmds, 2)
            deliveries = max(figures["deliveries"], 1)
            figures["gateway_us_per_delivery"] = round(1e6 * figures["gateway_cpu_s"] / deliveries, 1)
            figures["load_us_per_delivery"] = round(1e6 * figures["load_cpu_s"] / deliveries, 1)
            figures["offered_deliveries_per_s"] = round(spec.rate * connected) if steady_phase else None
            cell[phase.name] = figures
        problems: dict[str, int] = {}
        for result in results:
            for reason, count in result["problems"].items():
                problems[reason] = problems.get(reason, 0) + count
        cell["complete"] = sum(result["complete"] for result in results)
        cell["problems"] = problems
        cell["order_errors"] = sum(result["order_errors"] for result in results)
        cell["published_per_run"] = publisher.tally[publisher.run_ids[0]][0]
        cell["load_procs"] = len(results)
        cell["ok"] = cell["complete"] == spec.viewers
    except (BenchError, TimeoutError, OSError, RuntimeError, redis.RedisError) as exc:
        cell["ok"] = False
        cell["error"] = f"{type(exc).__name__}: {exc}"[:500]
        log(f"  FAILED: {cell['error']}")
    finally:
        if fleet is not None:
            await asyncio.to_thread(fleet.stop)
        if gateway is not None:
            if not cell.get("ok"):  # the gateway logs at warning level: its errors say why viewers failed
                cell["gateway_log_tail"] = gateway.log()[-1500:]
            gateway.stop(timeout=10)
        await client.aclose()
        if metrics_http is not None:
            await metrics_http.aclose()
        admin.close()
    return cell


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
