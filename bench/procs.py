"""The processes a benchmark cell runs against, and what it reads from them (/proc and Redis INFO)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import redis

from tests.support.processes import GatewayProcess
from tests.support.redis_server import RedisServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IGNORED_COMMANDS = frozenset({"info", "config|resetstat", "config|get", "client|list", "ping"})
"""The harness's own probes (and health-check pings), left out of the per-event command count."""


def start_redis(maxclients: int) -> RedisServer:
    """A throwaway redis-server that accepts as many clients as the fd limit allows (naive mode: one per viewer)."""
    return RedisServer(extra=["--maxclients", str(maxclients)]).start()


def start_gateway(redis_url: str, feed: str, backlog: int) -> GatewayProcess:
    """`python -m runcast.cli gateway` (uvicorn, one process) with RUNCAST_FEED=`feed`."""
    gateway = GatewayProcess(
        redis_url,
        RUNCAST_FEED=feed,
        RUNCAST_STREAM_MAXLEN="100000000",
        RUNCAST_MAX_VIEWERS_PER_RUN="1000000",  # measure fan-out, not the admission limits
        RUNCAST_MAX_VIEWERS="1000000",
    )
    gateway.args += ["--backlog", str(backlog)]
    return gateway.start(timeout=30)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def host_busy_s() -> float:
    """Busy CPU seconds of the whole machine, all cores summed (to tell how much other processes took)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLOCK_TICKS


@dataclass(frozen=True)
class RedisSnapshot:
    calls: dict[str, int]
    cpu_s: float
    usec: dict[str, int] = field(default_factory=dict)  # time spent per command (a script's own includes its calls)


def redis_snapshot(client: redis.Redis) -> RedisSnapshot:
    """Per-command call counts (commands run inside Lua scripts included) and the server's CPU time."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}
    usec = {name.removeprefix("cmdstat_"): int(value.get("usec", 0)) for name, value in stats.items()}
    cpu = client.info("cpu")
    return RedisSnapshot(calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), usec)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per-command growth between two snapshots (the harness's probes left out), largest first."""
    delta = {
        name: value - before.get(name, 0)
        for name, value in after.items()
        if name not in IGNORED_COMMANDS and value != before.get(name, 0)
    }
    return dict(sorted(delta.items(), key=lambda item: -item[1]))


def usec_delta(before: RedisSnapshot, after: RedisSnapshot) -> dict[str, int]:
    """Microseconds Redis spent inside each command between two snapshots."""
    return _delta(before.usec, after.usec)


def command_delta(before: RedisSnapshot, after: RedisSnapshot) -> dict[str, int]:
    return _delta(before.calls, after.calls)
