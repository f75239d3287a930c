"""The processes a benchmark cell runs against, and what it reads from them (/proc and Redis INFO)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.processes import GatewayProcess
from tests.support.redis_server import RedisServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IGNORED_COMMANDS = frozenset({"info", "config|resetstat", "config|get", "client|list", "ping"})
"""The harness's own probes (and health-check pings), left out of the per-event command count."""


def start_redis(maxclients: int) -> RedisServer:
    """A throwaway redis-server that accepts as many clients as the fd limit allows (naive mode: one per viewer)."""
    return RedisServer(extra=["--maxclients", str(maxclients)]).start()


def start_gateway(
    redis_url: str, feed: str, backlog: int, workers: int = 1, pythonpath: str | None = None
) -> GatewayProcess:
    """`python -m runcast.cli gateway --workers N` (uvicorn) with RUNCAST_FEED=`feed`; `pythonpath` first on the
    gateway's path runs another build of runcast (a baseline installed with `pip install --target`)."""
    extra = {"PYTHONPATH": pythonpath} if pythonpath else {}
    gateway = GatewayProcess(
        redis_url,
        **extra,
        RUNCAST_FEED=feed,
        RUNCAST_STREAM_MAXLEN="100000000",
        RUNCAST_MAX_VIEWERS_PER_RUN="1000000",  # measure fan-out, not the admission limits
        RUNCAST_MAX_VIEWERS="1000000",
    )
    gateway.args += ["--backlog", str(backlog), "--workers", str(workers)]
    if pythonpath:  # not from this checkout's directory: `python -m` puts the working directory first on the path
        gateway.cwd = Path(pythonpath)
    gateway.start(timeout=30)
    deadline = time.monotonic() + 30
    while workers > 1 and len(process_tree(gateway.pid)) < workers + 1:  # uvicorn's supervisor + its workers
        if time.monotonic() > deadline:
            raise RuntimeError(f"gateway: {workers} workers did not all start")
        time.sleep(0.05)
    return gateway


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                out += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn --workers N: the supervisor and its worker processes)."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live descendants (children that exited are not counted)."""
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_s(member)
        except (OSError, IndexError):
            continue
    return total


def tree_rss_kib(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        try:
            total += rss_kib(member)
        except (OSError, RuntimeError):
            continue
    return total


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


HUB_READ_COMMANDS = ("xread", "xrange", "xrevrange")
"""What a gateway's read path sends to read streams (hub: joins, gap fills, catch-ups; naive: every viewer's reads)."""


@dataclass(frozen=True)
class RedisSnapshot:
    calls: dict[str, int]
    cpu_s: float
    usec: dict[str, int] = field(default_factory=dict)  # time spent per command (a script's own includes its calls)


def redis_snapshot(client: redis.Redis) -> RedisSnapshot:
    """Per-command call counts and microseconds (commands run inside Lua scripts included) and the server's CPU."""
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


FOLLOW_COMMANDS = (*HUB_READ_COMMANDS, "publish", "spublish")
"""What keeping gateways informed costs Redis: their stream reads, and the append script's announcement."""


def follow_usec_delta(before: RedisSnapshot, after: RedisSnapshot) -> int:
    """Microseconds Redis spent executing stream reads and announcements (PUBLISH/SPUBLISH) between snapshots."""
    return sum(after.usec.get(c, 0) - before.usec.get(c, 0) for c in FOLLOW_COMMANDS)


def read_usec_delta(before: RedisSnapshot, after: RedisSnapshot) -> tuple[int, int]:
    """(calls, microseconds) Redis spent executing stream reads between two snapshots."""
    calls = sum(after.calls.get(c, 0) - before.calls.get(c, 0) for c in HUB_READ_COMMANDS)
    usec = sum(after.usec.get(c, 0) - before.usec.get(c, 0) for c in HUB_READ_COMMANDS)
    return calls, usec


def command_delta(before: RedisSnapshot, after: RedisSnapshot) -> dict[str, int]:
    return _delta(before.calls, after.calls)
