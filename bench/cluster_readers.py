"""Figures for the cluster read path (prints, asserts nothing): `python -m bench.cluster_readers [RUNS]`.

- how many slot groups (= reader connections per gateway process) n active runs need on a cluster;
- append -> reader latency with one SlotReader per slot group on a local 3-master cluster, versus one multiplexed
  reader over all runs on a plain redis-server;
- how long `wake()` takes to end a blocked XREAD; how long the local cluster takes to start.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time

from redis.asyncio import Redis

from runcast.shared.cluster import GroupReader, group_by_slot, readers_for
from runcast.shared.ids import new_run_id
from runcast.shared.keys import events_key
from runcast.shared.redis_client import cluster_from_url, redis_from_url
from tests.support.redis_cluster import LocalCluster
from tests.support.redis_server import RedisServer

APPENDS = 400


def slot_groups() -> None:
    print("active runs -> slot groups (reader connections per gateway process on a cluster)")
    for n in (10, 100, 1_000, 10_000):
        measured = len(group_by_slot(new_run_id() for _ in range(n)))
        expected = 16384 * (1 - math.exp(-n / 16384))
        print(f"  {n:>6} runs: {measured:>5} groups (expected {expected:,.0f})")


async def follow(reader: GroupReader, run_ids: list[str], seen: dict[str, float], stop: asyncio.Event) -> None:
    last = dict.fromkeys(run_ids, "0-0")  # never "$": it skips what lands between two calls
    while not stop.is_set():
        reply = await reader.xread(dict(last), block_ms=1_000)
        now = time.perf_counter()
        for run_id, entries in reply.items():
            for entry in entries:
                seen[entry.id] = now
            last[run_id] = entries[-1].id


async def latency(client: Redis, label: str, runs: int) -> None:
    source = readers_for(client)
    run_ids = [new_run_id() for _ in range(runs)]
    groups: dict[object, list[str]] = {}
    for run_id in run_ids:
        groups.setdefault(source.group_of(run_id), []).append(run_id)
    readers = [source.open_reader(group) for group in groups]
    seen: dict[str, float] = {}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(follow(r, groups[r.group], seen, stop)) for r in readers]
    await asyncio.sleep(0.5)  # every reader connected and blocked
    sent: dict[str, float] = {}
    for i in range(APPENDS):
        run_id = run_ids[i % runs]
        before = time.perf_counter()
        entry_id = await client.xadd(events_key(run_id), {"type": "chunk", "event": "{}"})
        sent[entry_id] = before
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.5)
    lags = sorted((seen[entry_id] - t) * 1000 for entry_id, t in sent.items() if entry_id in seen)
    wake_ms = []
    for reader in readers[:20]:
        started = time.perf_counter()
        await reader.wake()
        wake_ms.append((time.perf_counter() - started) * 1000)
    stop.set()
    for reader in readers:
        await reader.wake()
    await asyncio.gather(*tasks)
    for reader in readers:
        await reader.aclose()
    await source.aclose()
    p50, p99, wake = statistics.median(lags), lags[int(len(lags) * 0.99) - 1], statistics.median(wake_ms)
    print(
        f"  {label}: {runs} runs, {len(readers)} reader connection(s); {len(lags)}/{APPENDS} delivered; "
        f"append->read p50 {p50:.2f} ms, p99 {p99:.2f} ms; wake p50 {wake:.2f} ms"
    )


async def main(runs: int) -> None:
    slot_groups()
    started = time.perf_counter()
    cluster = LocalCluster().start()
    print(f"local 3-master cluster up in {time.perf_counter() - started:.2f} s")
    plain = RedisServer().start()
    try:
        print("append -> reader latency (one XADD every 2 ms, round-robin over the runs)")
        cluster_client = cluster_from_url(cluster.url)
        await cluster_client.initialize()
        await latency(cluster_client, "cluster, one reader per slot", runs)  # type: ignore[arg-type]
        await cluster_client.aclose()
        plain_client = redis_from_url(plain.url)
        await latency(plain_client, "plain redis, one reader for all", runs)
        await plain_client.aclose()
    finally:
        cluster.cleanup()
        plain.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
