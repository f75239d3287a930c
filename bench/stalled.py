"""Stalled viewers: what a viewer that connects and never reads costs the gateway (docs/performance.md).

    python -m bench.stalled                     # 1,000 stalled viewers of a 1 MB run; 200 of a 6 MB run with stalls
    python -m bench.stalled --before 74ceea1    # and that commit's gateway side by side (the figure before the bound)

Per cell: its own redis-server-backed gateway (a worker with the scripted model is shared), a warm-up run, then one run
of about `run KiB` (the echo agent: each chunk event carries the answer so far) watched from its start by N stalled
viewers from a separate load process (`bench/stalled_load.py`: raw sockets with a 4 KiB receive buffer that never
read) and by one viewer that reads it all. Reported: the gateway's RSS before, its peak (VmHWM) after, the growth per
stalled viewer (raw, and without the run's own copies: the hub's tail and the cached frames, kept once for all),
whether the reader got the log exactly, how many viewers the gateway closed as stalled (`runcast_viewer_stalls_total`,
cells with `--stall-s`), and a sample of stalled viewers that then read (and resume after a close): events lost or
duplicated against the log. On loopback the kernel's socket buffers take a few MB per connection before the gateway
holds anything, so only the bigger run shows the bound (and the stall limit) at work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.common import log, run_and_report
from bench.stacks import Design, cleanup_design, extract_ref
from bench.stalled_load import raise_fd_limit
from runcast.shared.keys import events_key
from tests.support.processes import GatewayProcess, WorkerProcess
from tests.support.redis_server import RedisServer
from tests.support.sse import create_run, read_sse
from tests.support.stalled import StalledViewer, memory_kib

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "RUNCAST_STREAM_MAXLEN": "100000000",
    "RUNCAST_SCRIPTED_DELAY_MS": "1",
    "RUNCAST_MAX_VIEWERS_PER_RUN": "1000000",
    "RUNCAST_MAX_VIEWERS": "1000000",
}


@dataclass(frozen=True)
class Cell:
    protocol: str  # sse | ws
    viewers: int
    run_kib: int
    stall_s: float | None  # RUNCAST_VIEWER_STALL_S for this cell (None: the default, 60 s: no closes here)


def run_text(run_kib: int) -> str:
    """The echo agent's input for a run of about `run_kib` KiB: N tokens of L characters make N chunk events of
    ~250 bytes plus the answer so far (N^2 (L+1) / 2 bytes in all)."""
    tokens = 250 if run_kib <= 2048 else 500 if run_kib <= 8192 else 800  # the input stays under 64 KiB
    size = max(1, int(2 * (run_kib * 1024 - tokens * 250) / tokens**2) - 1)
    return " ".join(f"{i:0{size}d}" for i in range(tokens))


def stored(redis_url: str, run_id: str) -> tuple[list[str], list[str], int]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        raw = client.xrange(events_key(run_id))
    finally:
        client.close()
    return [i for i, _ in raw], [f["type"] for _, f in raw], sum(len(f["event"]) for _, f in raw)


class LoadProcess:
    """`bench.stalled_load` in a child process: N stalled viewers of one run."""

    def __init__(self, gateway: GatewayProcess, run: dict[str, str], count: int, websocket: bool) -> None:
        args = [sys.executable, "-m", "bench.stalled_load", "--url", gateway.url, "--run-id", run["run_id"]]
        args += ["--token", run["token"], "--count", str(count), *(["--ws"] if websocket else [])]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    async def ask(self, line: str | None) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        answer = await asyncio.to_thread(self.proc.stdout.readline)
        if not answer:
            raise RuntimeError(f"the load process exited ({self.proc.poll()})")
        return json.loads(answer)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def start_gateway(redis_url: str, design: Design, stall_s: float | None) -> GatewayProcess:
    env = dict(ENV)
    if stall_s is not None:
        env["RUNCAST_VIEWER_STALL_S"] = str(stall_s)
    if design.pythonpath is not None:
        env["PYTHONPATH"] = str(design.pythonpath)
    gateway = GatewayProcess(redis_url, **env)
    if design.pythonpath is not None:  # not this checkout: `python -m` puts the working directory first on the path
        gateway.cwd = design.pythonpath
    return gateway.start(timeout=30)


async def stall_closes(http: httpx.AsyncClient, gateway: GatewayProcess) -> int | None:
    """The gateway's count of viewers closed as stalled (None: a gateway without the metric, i.e. before it)."""
    text = (await http.get(f"{gateway.url}/metrics")).text
    lines = [line for line in text.splitlines() if line.startswith("runcast_viewer_stalls_total")]
    return int(sum(float(line.split()[-1]) for line in lines)) if lines else None


async def read_whole_run(http: httpx.AsyncClient, gateway: GatewayProcess, run: dict[str, str], ws: bool) -> list[str]:
    if ws:
        host, port = gateway.url.removeprefix("http://").split(":")
        reader = StalledViewer(host, int(port), run["run_id"], run["token"], websocket=True, rcvbuf=1 << 20).open()
        return [event_id for event_id, _ in (await asyncio.to_thread(reader.read_all, 300)).events]
    return [r.id or "" for r in await read_sse(http, gateway.url, run["run_id"], run["token"])]


async def run_cell(redis_url: str, design: Design, cell: Cell, sample: int) -> dict[str, Any]:
    log(f"{design.name}: {cell.viewers} stalled {cell.protocol} viewers of a ~{cell.run_kib} KiB run ...")
    gateway = start_gateway(redis_url, design, cell.stall_s)
    load: LoadProcess | None = None
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
            warm = await create_run(http, gateway.url, "echo", "warm up")
            await read_sse(http, gateway.url, warm["run_id"], warm["token"])
            before = memory_kib(gateway.pid)["VmRSS"]
            run = await create_run(http, gateway.url, "echo", run_text(cell.run_kib))
            load = LoadProcess(gateway, run, cell.viewers, cell.protocol == "ws")
            await load.ask(None)  # ready: every viewer connected and sent its request
            read = await read_whole_run(http, gateway, run, cell.protocol == "ws")
            ids, _types, run_bytes = stored(redis_url, run["run_id"])
            await asyncio.sleep(2.0)  # let the gateway write (or queue) all it will for the stalled viewers
            peak = memory_kib(gateway.pid)["VmHWM"]
            closes = await stall_closes(http, gateway)
            if cell.stall_s is not None and closes is not None:
                await asyncio.sleep(cell.stall_s + 2.0)
                while (now := await stall_closes(http, gateway)) != closes:  # until the closes stop coming
                    closes = now
                    await asyncio.sleep(1.0)
            checked = await load.ask(f"check {min(sample, cell.viewers)} {json.dumps(ids)}")
            healthy = (await http.get(f"{gateway.url}/healthz")).status_code == 200
            alive = gateway.alive() and healthy
        shared_kib = 2 * run_bytes / 1024
        per_viewer = (peak - before) / cell.viewers
        return {
            "design": design.name,
            "protocol": cell.protocol,
            "viewers": cell.viewers,
            "run_kib": round(run_bytes / 1024),
            "stall_s": cell.stall_s,
            "rss_before_mib": round(before / 1024, 1),
            "peak_mib": round(peak / 1024, 1),
            "kib_per_viewer": round(per_viewer, 1),
            "kib_per_viewer_excl_run": round(max(0.0, per_viewer - shared_kib / cell.viewers), 1),
            "reader_exact": read == ids,
            "stall_closes": closes,
            "sample": checked,
            "gateway_alive": alive,
            "ok": read == ids and alive and checked["lost"] == checked["duplicated"] == checked["out_of_order"] == 0,
        }
    finally:
        if load is not None:
            load.stop()
        gateway.stop()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--viewers", type=int, default=1000, help="stalled viewers of the 1 MB run")
    add("--run-kib", type=int, default=1024)
    add("--big-viewers", type=int, default=200, help="stalled viewers of the big run (0: no such cell)")
    add("--big-run-kib", type=int, default=6144)
    add("--stall-s", type=float, default=5.0, help="RUNCAST_VIEWER_STALL_S in the big-run cells")
    add("--protocols", default="sse,ws")
    add("--sample", type=int, default=20, help="stalled viewers that read (and resume) at the end, per cell")
    add("--before", default=None, help="also run this git ref's gateway (e.g. the commit before the bound)")
    add("--json", default=None, help="also write the JSON line to this file")
    return parser


def cells(args: argparse.Namespace) -> list[Cell]:
    out = []
    for protocol in args.protocols.split(","):
        if args.viewers:
            out.append(Cell(protocol, args.viewers, args.run_kib, None))
        if args.big_viewers:
            out.append(Cell(protocol, args.big_viewers, args.big_run_kib, args.stall_s))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()  # the gateway inherits it
    designs = [Design("after", "this checkout", None)]
    if args.before:
        designs.append(await asyncio.to_thread(extract_ref, args.before))
    server = RedisServer(extra=["--maxclients", "10000"]).start()
    worker = WorkerProcess(server.url, **ENV).start()
    results = []
    started = time.monotonic()
    worker_alive = False
    try:
        for cell in cells(args):
            for design in designs:
                results.append(await run_cell(server.url, design, cell, args.sample))
        worker_alive = worker.alive()
    finally:
        worker.stop()
        server.cleanup()
        for design in designs:
            cleanup_design(design)
    for result in results:
        result["ok"] = result["ok"] and worker_alive
    return {"cells": results, "seconds": round(time.monotonic() - started, 1), "worker_alive": worker_alive}


def render(result: dict[str, Any]) -> str:
    head = (
        "| gateway | protocol | stalled viewers | run KiB | RSS before MiB | peak (VmHWM) MiB | KiB/viewer "
        "| excl. run | reader exact | stall closes | sample: read+resumed, lost/dup | alive |"
    )
    lines = [head, "|" + "---|" * 12]
    for c in result["cells"]:
        sample = c["sample"]
        lines.append(
            f"| {c['design']} | {c['protocol']} | {c['viewers']} | {c['run_kib']} | {c['rss_before_mib']} "
            f"| {c['peak_mib']} | {c['kib_per_viewer']} | {c['kib_per_viewer_excl_run']} "
            f"| {'yes' if c['reader_exact'] else 'NO'} "
            f"| {'n/a' if c['stall_closes'] is None else c['stall_closes']} "
            f"| {sample['checked']} ({sample['resumed']} resumed), {sample['lost']}/{sample['duplicated']} "
            f"| {'yes' if c['gateway_alive'] else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_and_report(lambda: run(args), render, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
