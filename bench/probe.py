"""What a benchmark cell measures between two instants: CPU of the gateway (all its processes), of Redis and of the
load processes, Redis command counts and times (INFO commandstats), and the gateway's own delivery-lag histogram."""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import httpx
import redis

from bench.procs import (
    command_delta,
    follow_usec_delta,
    host_busy_s,
    read_usec_delta,
    redis_snapshot,
    tree_cpu_s,
)


class Fleet(Protocol):
    async def progress(self, targets: dict[str, int]) -> tuple[int, list[float]]: ...


LAG_BUCKET = "runcast_hub_delivery_lag_seconds_bucket"


async def hub_lag_buckets(http: httpx.AsyncClient | None, url: str) -> dict[float, float] | None:
    """The gateway's own publish -> handover lag histogram (cumulative counts by upper bound), from its /metrics;
    None for a read path without it (naive) or a gateway of several processes (each has its own registry)."""
    if http is None:
        return None
    try:
        text = (await http.get(f"{url}/metrics")).text
    except httpx.HTTPError:
        return None
    buckets = {}
    for line in text.splitlines():
        if line.startswith(LAG_BUCKET):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets or None


def lag_percentile_ms(before: dict[float, float] | None, after: dict[float, float] | None, pct: float) -> float | None:
    """The bucket upper bound (ms) at or under which `pct` % of the phase's handovers fall."""
    if not before or not after:
        return None
    bounds = sorted(after)
    total = after[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None
    for bound in bounds:
        if after[bound] - before.get(bound, 0.0) >= total * pct / 100:
            return round(bound * 1000, 2)
    return None


class Probe:
    """CPU of the gateway, Redis and load processes, Redis command counts, and the gateway's own delivery lag
    histogram, between two instants."""

    def __init__(self, gateway_pid: int, admin: redis.Redis, metrics: httpx.AsyncClient | None, url: str) -> None:
        self.gateway_pid = gateway_pid
        self.admin = admin
        self.metrics = metrics
        self.url = url

    async def snap(self, fleet: Fleet) -> dict[str, Any]:
        _, load_cpu = await fleet.progress({})
        return {
            "lag": await hub_lag_buckets(self.metrics, self.url),
            "t": time.time(),
            "gateway_cpu": tree_cpu_s(self.gateway_pid),
            "host_busy": host_busy_s(),
            "self_cpu": time.process_time(),  # this coordinator: the publisher
            "redis": redis_snapshot(self.admin),
            "load_cpu": load_cpu,
        }

    @staticmethod
    def between(before: dict[str, Any], after: dict[str, Any], events: int) -> dict[str, Any]:
        wall = max(after["t"] - before["t"], 1e-9)
        rb, ra = before["redis"], after["redis"]
        commands = command_delta(rb, ra)
        ours = sum(after[k] - before[k] for k in ("gateway_cpu", "self_cpu")) + ra.cpu_s - rb.cpu_s
        ours += sum(after["load_cpu"]) - sum(before["load_cpu"])
        read_calls, read_usec = read_usec_delta(rb, ra)
        return {
            "hub_lag_p50_ms": lag_percentile_ms(before["lag"], after["lag"], 50),
            "hub_lag_p99_ms": lag_percentile_ms(before["lag"], after["lag"], 99),
            "load_cpu_s": round(sum(after["load_cpu"]) - sum(before["load_cpu"]), 3),
            "gateway_cpu_s": round(after["gateway_cpu"] - before["gateway_cpu"], 3),
            "redis_cpu_s": round(ra.cpu_s - rb.cpu_s, 3),
            "redis_us_per_event": round(1e6 * (ra.cpu_s - rb.cpu_s) / max(events, 1), 1),
            "read_calls": read_calls,
            "read_calls_per_event": round(read_calls / max(events, 1), 3),
            "read_us_per_call": round(read_usec / read_calls, 1) if read_calls else None,
            "follow_us_per_event": round(follow_usec_delta(rb, ra) / max(events, 1), 2),
            "wall_s": round(wall, 3),
            "gateway_cpu_pct": round(100 * (after["gateway_cpu"] - before["gateway_cpu"]) / wall, 1),
            "redis_cpu_pct": round(100 * (ra.cpu_s - rb.cpu_s) / wall, 1),
            "publisher_cpu_pct": round(100 * (after["self_cpu"] - before["self_cpu"]) / wall, 1),
            "others_cpu_pct": round(max(0.0, 100 * (after["host_busy"] - before["host_busy"] - ours) / wall), 1),
            "host_busy_pct": round(100 * (after["host_busy"] - before["host_busy"]) / wall / (os.cpu_count() or 1), 1),
            "load_cpu_pct": [
                round(100 * (a - b) / wall, 1) for a, b in zip(after["load_cpu"], before["load_cpu"], strict=True)
            ],
            "redis_cmds_per_event": round(sum(commands.values()) / max(events, 1), 2),
            "redis_cmds": commands,
        }
